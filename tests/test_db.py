"""The algorithm database: schema, runs, idempotency, dedup lookups, lineage, exports."""

from __future__ import annotations

import json
import sqlite3
import threading

import matplotlib
import pytest

from aad_kit.code import code_hash
from aad_kit.db import SCHEMA_VERSION, AlgorithmDB, RunConfigMismatch
from aad_kit.manifest import base_manifest
from aad_kit.result import Status

matplotlib.use("Agg")

CODE_A = "def priority(el, n, w):\n    return 1.0\n"
CODE_B = "def priority(el, n, w):\n    return 2.0\n"


def add(db, run_id="r1", i=0, **kw):
    fields = dict(task="admissible_set", setting="n12_w7", operator="i1", status="ok", code=CODE_A,
                  score=1.0, metric=1.0, idea=f"idea {i}", prompt=f"prompt {i}", raw_response=f"raw {i}")
    fields.update(kw)
    return db.add_algorithm(run_id=run_id, sample_index=i, **fields)


@pytest.fixture
def db(tmp_path):
    with AlgorithmDB(tmp_path / "algos.sqlite") as d:
        yield d


def test_schema_wal_and_version(tmp_path, db):
    assert db.schema_version == SCHEMA_VERSION
    conn = sqlite3.connect(db.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cols = {r[1] for r in conn.execute("PRAGMA table_info(algorithms)")}
    assert {"id", "run_id", "task", "setting", "operator", "parent_ids", "generation", "sample_index",
            "model_id", "prompt", "raw_response", "code", "code_hash", "idea", "score", "metric",
            "status", "error", "eval_time_s", "created_at"} <= cols
    run_cols = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    assert {"run_id", "task", "setting", "config", "manifest", "status", "created_at", "updated_at"} <= run_cols
    conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="schema version 999"):
        AlgorithmDB(db.path)


def test_runs_start_resume_and_mismatch(db):
    config = {"task": "admissible_set", "setting": "n12_w7", "budget": 10, "seed": 1}
    manifest = base_manifest(model={"model_id": "m", "sha256": "ab" * 32})
    assert db.start_or_resume_run("r1", config, manifest) is False
    info = db.get_run("r1")
    assert info.task == "admissible_set" and info.setting == "n12_w7" and info.status == "running"
    assert info.config == config and info.manifest["model"]["sha256"] == "ab" * 32
    assert info.manifest["evaluator_version"]
    # same config (key order does not matter): a resume, the manifest is appended
    assert db.start_or_resume_run("r1", dict(reversed(list(config.items()))), {"session": 2}) is True
    assert db.get_run("r1").resumes == [{"session": 2}]
    with pytest.raises(RunConfigMismatch, match=r"budget: 10 -> 20"):
        db.start_or_resume_run("r1", {**config, "budget": 20}, manifest)
    db.mark_finished("r1")
    assert db.get_run("r1").status == "finished"
    with pytest.raises(KeyError):
        db.mark_finished("nope")
    assert db.get_run("nope") is None and [r.run_id for r in db.runs()] == ["r1"]


def test_add_get_and_idempotency(db):
    a = add(db, i=0, parent_ids=[], generation=0, model_id="m", eval_time_s=0.5, notes=["n1"],
            status=Status.OK, finish_reason="stop", completion_tokens=12)
    again = add(db, i=0, code=CODE_B, score=99.0)  # the same sample: nothing changes
    assert again == a and db.count("r1") == 1
    rec = db.get(a)
    assert rec.code == CODE_A and rec.score == 1.0 and rec.status == "ok" and rec.ok
    assert rec.code_hash == code_hash(CODE_A) and rec.notes == ["n1"] and rec.parent_ids == []
    assert rec.model_id == "m" and rec.completion_tokens == 12 and rec.created_at
    b = add(db, i=1, code=CODE_B, parent_ids=[a], generation=1, operator="m1")
    assert b != a and db.get(b).parent_ids == [a]
    # same sample_index in another run is another sample
    c = add(db, run_id="r2", i=0)
    assert c not in (a, b) and db.count() == 3
    # ad-hoc rows without sample_index are never merged
    d1 = db.add_algorithm(run_id=None, task="admissible_set", setting=None, operator="manual", status="ok", code=CODE_A)
    d2 = db.add_algorithm(run_id=None, task="admissible_set", setting=None, operator="manual", status="ok", code=CODE_A)
    assert d1 != d2
    with pytest.raises(KeyError):
        db.get(12345)
    assert db.by_sample_index("r1", 1).id == b and db.by_sample_index("r1", 7) is None


def test_invalid_and_nonfinite_values(db):
    a = add(db, i=0, status="syntax_error", code=None, score=None, metric=None, error="SyntaxError")
    rec = db.get(a)
    assert rec.code is None and rec.code_hash is None and not rec.ok and rec.error == "SyntaxError"
    b = add(db, i=1, score=float("nan"), metric=float("inf"))
    assert db.get(b).score is None and db.get(b).metric is None


def test_by_hash_prefers_the_original(db):
    a = add(db, i=0)
    dup = add(db, i=1, duplicate_of=a)
    assert dup != a
    assert db.by_hash("r1", code_hash(CODE_A)).id == a
    # normalised hash: comments / formatting do not matter
    assert db.by_hash("r1", code_hash("def priority(el, n, w):  # hi\n    return 1.0")).id == a
    assert db.by_hash("r1", code_hash(CODE_B)) is None
    assert db.by_hash("other", code_hash(CODE_A)) is None
    assert db.get(dup).is_duplicate


def test_records_best_counts(db):
    add(db, i=-1, operator="seed", score=0.5, code="def priority(el, n, w):\n    return 0.5\n")
    add(db, i=0, score=1.0)
    add(db, i=1, score=3.0, code=CODE_B, operator="e1")
    add(db, i=2, score=3.0, code="def priority(el, n, w):\n    return 3.0\n", operator="m1")
    add(db, i=3, status="timeout", score=None, code="def priority(el, n, w):\n    while True: pass\n")
    assert [r.sample_index for r in db.records("r1")] == [-1, 0, 1, 2, 3]
    assert [r.sample_index for r in db.records("r1", samples_only=True)] == [0, 1, 2, 3]
    assert [r.sample_index for r in db.records("r1", status="timeout")] == [3]
    best = db.best("r1", k=2)
    assert [r.sample_index for r in best] == [1, 2]  # ties: the older first
    assert db.counts("r1") == {"ok": 4, "timeout": 1}
    assert db.counts("r1", by="operator") == {"e1": 1, "i1": 2, "m1": 1, "seed": 1}
    assert db.sample_indices("r1") == [-1, 0, 1, 2, 3]
    assert len(db) == 5 and len(list(db)) == 5
    with pytest.raises(ValueError):
        db.counts("r1", by="drop table")


def test_lineage(db):
    a = add(db, i=0, generation=0)
    b = add(db, i=1, generation=0, code=CODE_B)
    c = add(db, i=2, generation=1, operator="e1", parent_ids=[a, b], score=2.0)
    d = add(db, i=3, generation=2, operator="m1", parent_ids=[c], score=3.0)
    e = add(db, i=4, generation=3, operator="e2", parent_ids=[d, a], score=4.0)
    nodes = db.lineage(e)
    assert [n.id for n in nodes] == [a, b, c, d, e]
    by_id = {n.id: n for n in nodes}
    assert by_id[e].depth == 0 and by_id[d].depth == 1 and by_id[a].depth == 1 and by_id[b].depth == 3
    assert by_id[c].parent_ids == [a, b] and by_id[c].operator == "e1" and by_id[c].score == 2.0
    assert [n.id for n in db.lineage(a)] == [a]

    from aad_kit.search.lineage_plot import lineage_layout, plot_lineage

    pos = lineage_layout(nodes)
    assert pos[a][1] == 0 and pos[e][1] == -3 and pos[a][0] != pos[b][0]
    fig = plot_lineage(db, e)
    assert fig.axes and "Lineage of algorithm" in fig.axes[0].get_title()
    fig2 = plot_lineage(db, run_id="r1", show_ideas=True)  # the best of the run: e
    assert f"#{e}" in fig2.axes[0].get_title()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_dataframe_and_jsonl(tmp_path, db):
    a = add(db, i=0)
    add(db, i=1, code=CODE_B, parent_ids=[a], score=None, status="runtime_error", error="boom")
    add(db, run_id="r2", i=0)
    df = db.to_dataframe("r1")
    assert len(df) == 2 and list(df["sample_index"]) == [0, 1]
    assert df.loc[1, "parent_ids"] == [a] and df.loc[1, "status"] == "runtime_error"
    assert df["score"].isna().tolist() == [False, True]
    assert len(db.to_dataframe()) == 3
    n = db.export_jsonl(tmp_path / "out" / "r1.jsonl", run_id="r1")
    rows = [json.loads(line) for line in (tmp_path / "out" / "r1.jsonl").read_text().splitlines()]
    assert n == 2 and len(rows) == 2 and rows[1]["error"] == "boom" and rows[1]["parent_ids"] == [a]
    assert rows[0]["code"] == CODE_A and rows[0]["raw_response"] == "raw 0"
    assert db.export_jsonl(tmp_path / "all.jsonl") == 3


def test_shared_by_connections_and_threads(tmp_path):
    path = tmp_path / "shared.sqlite"
    with AlgorithmDB(path) as one, AlgorithmDB(path) as two:
        add(one, run_id="A", i=0)
        assert two.count("A") == 1
        errors: list[BaseException] = []

        def writer(db, run):
            try:
                for i in range(30):
                    add(db, run_id=run, i=i)
                    add(db, run_id=run, i=i)  # idempotent re-add under concurrency
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(d, f"T{k}")) for k, d in enumerate((one, two, one))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert one.count("T0") == 30 and two.count("T1") == 30 and one.count("T2") == 30


def test_memory_db():
    with AlgorithmDB(":memory:") as db:
        add(db, i=0)
        assert db.count() == 1
