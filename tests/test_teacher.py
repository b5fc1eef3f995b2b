"""Teacher databases (aad_kit.teacher): build, export after every batch, resume, extend, load."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from aad_kit import db as aad_db
from aad_kit import manifest as aad_manifest
from aad_kit import teacher
from aad_kit.db import AlgorithmDB
from aad_kit.manifest import now_iso
from aad_kit.teacher import TeacherSpec
from tests.test_dar import RichFakeSampler


class CountingSampler(RichFakeSampler):
    def __init__(self) -> None:
        self.calls = 0

    def sample(self, prompts, n=1, config=None):  # noqa: ANN001, ANN201
        self.calls += 1
        return super().sample(prompts, n, config) if config else super().sample(prompts, n)


def _spec(**kw) -> TeacherSpec:
    base = dict(name="test-teacher", task="admissible_set", setting="n12_w7", model="tiny",
                seeds=(0,), budget_per_run=16, population_size=8, batch_size=8)
    return TeacherSpec(**{**base, **kw})


@pytest.fixture
def spec(monkeypatch: pytest.MonkeyPatch) -> TeacherSpec:
    s = _spec()
    monkeypatch.setitem(teacher.TEACHERS, s.name, s)
    return s


def test_build_exports_loads_and_imports(spec: TeacherSpec, tmp_path: Path):
    m = teacher.build(spec, root=tmp_path, sampler=RichFakeSampler(), progress=False)
    out = tmp_path / spec.name
    assert (out / "algorithms.jsonl.gz").is_file() and (out / "manifest.json").is_file()
    assert m["n_samples"] == 16 and m["runs"][0]["status"] == "finished"
    assert m["evaluator_version"] and m["model"]["model_id"] == "fake/families-1"
    assert m["regenerate"] == f"aad-kit teacher build {spec.name}"
    recs = teacher.load_records(spec, tmp_path)
    assert len(recs) == m["n_records"] == 17  # 16 samples + the template seed
    assert {r["operator"] for r in recs} >= {"seed", "i1"}
    seeds = [r for r in recs if r["operator"] == "seed"]
    assert len(seeds) == 1 and "trivial" in seeds[0]["idea"]  # no published program seeded
    # importing into another database keeps lineage and duplicates pointing at the right rows
    with AlgorithmDB(tmp_path / "other.sqlite") as db:
        id_map = teacher.import_into(db, recs)
        assert len(id_map) == 17
        got = {r.sample_index: r for r in db.records(spec.run_id(0))}
        for r in recs:
            g = got[r["sample_index"]]
            assert g.code == r["code"] and g.score == r["score"]
            assert g.parent_ids == [id_map[p] for p in r["parent_ids"]]
            if r["duplicate_of"] is not None:
                assert g.duplicate_of == id_map[r["duplicate_of"]]
        assert teacher.import_into(db, recs) == {}  # already there: skipped


def test_interrupted_build_resumes_from_the_export(spec: TeacherSpec, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    """A build killed after its first batch resumes on a fresh machine (no working database):
    the shipped records are imported, only the missing samples are drawn, and the result is the
    same as an uninterrupted build."""
    real_export = teacher.export
    calls = {"n": 0}

    def dying_export(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        out = real_export(*a, **kw)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(teacher, "export", dying_export)
    earlier = "2020-01-01T00:00:00+00:00"  # the first sitting's clock, so dates can be told apart
    for module in (aad_db, aad_manifest):
        monkeypatch.setattr(module, "now_iso", lambda: earlier)
    with pytest.raises(KeyboardInterrupt):
        teacher.build(spec, root=tmp_path, sampler=RichFakeSampler(), progress=False)
    for module in (aad_db, aad_manifest):
        monkeypatch.setattr(module, "now_iso", now_iso)
    half = teacher.load_records(spec, tmp_path)
    assert sum(r["sample_index"] >= 0 for r in half) == 8
    (tmp_path / spec.name / "work.sqlite").unlink()  # as on a fresh clone
    for suffix in ("-wal", "-shm"):
        (tmp_path / spec.name / f"work.sqlite{suffix}").unlink(missing_ok=True)
    monkeypatch.setattr(teacher, "export", real_export)
    sampler = CountingSampler()
    teacher.build(spec, root=tmp_path, sampler=sampler, progress=False)
    assert sampler.calls == 1  # the second batch only
    resumed = teacher.load_records(spec, tmp_path)
    full_root = tmp_path / "full"
    teacher.build(spec, root=full_root, sampler=RichFakeSampler(), progress=False)
    full = teacher.load_records(spec, full_root)
    key = lambda r: (r["sample_index"], r["code"], r["score"], r["status"])  # noqa: E731
    assert sorted(map(key, resumed)) == sorted(map(key, full))
    # the resume on a fresh machine keeps the provenance of the first sitting: when each
    # sample was made, when the run started, and both sessions in its history
    made = {r["sample_index"]: r["created_at"] for r in resumed}
    assert {made[r["sample_index"]] for r in half} == {earlier}
    later = {t for i, t in made.items() if i >= 8}
    assert later and earlier not in later
    run = teacher.load_manifest(spec, tmp_path)["runs"][0]
    assert run["created_at"] == earlier and run["sessions"] == 2 and run["status"] == "finished"
    assert [h["created_at"] == earlier for h in run["history"]] == [True, False]


def test_extend_with_a_new_seed_keeps_the_shipped_runs(spec: TeacherSpec, tmp_path: Path):
    teacher.build(spec, root=tmp_path, sampler=RichFakeSampler(), progress=False)
    m = teacher.build(spec, seeds=[0, 1], root=tmp_path, sampler=RichFakeSampler(), progress=False)
    assert [r["run_id"] for r in m["runs"]] == [spec.run_id(0), spec.run_id(1)]
    assert [r["sessions"] for r in m["runs"]] == [1, 1]  # the finished seed 0 is not resumed
    assert m["n_samples"] == 32
    with gzip.open(tmp_path / spec.name / "algorithms.jsonl.gz", "rt") as f:
        assert len({json.loads(line)["run_id"] for line in f}) == 2


def test_errors_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(KeyError, match="unknown teacher database"):
        teacher.get_teacher("nope")
    with pytest.raises(FileNotFoundError, match="aad-kit teacher build"):
        teacher.load_records(_spec(), tmp_path)
    assert teacher.teacher_cli(["list"]) == 0
    assert "admissible_set-n15_w10-qwen2.5-coder-1.5b" in capsys.readouterr().out
    assert teacher.teacher_for("admissible_set").model == "qwen2.5-coder-1.5b"
    assert teacher.teacher_for("no_such_task") is None


def test_reference_answers_replay_in_order(spec: TeacherSpec, tmp_path: Path):
    """The teacher's reference answers: n per seed and task, in a replay file whose records
    match only their task's prompt; too few answers for the evaluation give no teacher row."""
    from aad_kit.llm import make_sampler
    from aad_kit.llm.base import GenerationConfig
    from aad_kit.prompts import i1_prompt

    path = teacher.make_reference(spec, ["admissible_set", "tsp_construct"], 3, seeds=[0, 1],
                                  root=tmp_path, sampler=RichFakeSampler(), progress=False)
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(recs) == 12 and [r["task"] for r in recs[:6]] == ["admissible_set"] * 6
    man = teacher.load_manifest(spec, tmp_path)["reference"]
    assert man["answers_per_task"] == {"admissible_set": 6, "tsp_construct": 6}
    assert man["timing"]["admissible_set"]["answers"] == 6 and man["regenerate"].startswith("aad-kit teacher")
    assert teacher.reference_spec(spec, ["admissible_set"], 7, tmp_path) is None  # would repeat
    ref = teacher.reference_spec(spec, ["admissible_set", "tsp_construct"], 6, tmp_path)
    replay = make_sampler(ref)
    asp = [c.text for c in replay.sample([i1_prompt("admissible_set")], 6, GenerationConfig())[0]]
    assert asp == [r["text"] for r in recs[:6]]  # the admissible-set answers, in order
    tsp = replay.sample([i1_prompt("tsp_construct")], 1, GenerationConfig())[0][0].text
    assert tsp == recs[6]["text"]


def test_extending_the_database_keeps_the_reference_answers(spec: TeacherSpec, tmp_path: Path):
    """``teacher build`` rewrites the manifest after every batch; the reference answers are
    another command's output, so a later build must keep their entry (and file)."""
    teacher.build(spec, root=tmp_path, sampler=RichFakeSampler(), progress=False)
    teacher.make_reference(spec, ["admissible_set"], 2, seeds=[0], max_new_tokens=256,
                           root=tmp_path, sampler=RichFakeSampler(), progress=False)
    ref = teacher.load_manifest(spec, tmp_path)["reference"]
    assert ref["regenerate"].endswith("--seeds 0 --max-new-tokens 256")
    m = teacher.build(spec, root=tmp_path, seeds=(0, 1), sampler=RichFakeSampler(), progress=False)
    assert len(m["runs"]) == 2 and m["reference"] == ref
    assert teacher.reference_path(spec, tmp_path).is_file()


def test_an_export_directory_is_a_teacher_database_by_path(spec: TeacherSpec, tmp_path: Path):
    """A user's own database (built elsewhere, copied here) is used by its path: the spec is
    read back from the manifest, records import as the shipped ones do."""
    teacher.build(spec, root=tmp_path, sampler=RichFakeSampler(), progress=False)
    d = tmp_path / spec.name
    got = teacher.get_teacher(str(d))
    assert (got.task, got.setting, got.seeds, got.path) == (spec.task, spec.setting, spec.seeds, str(d.resolve()))
    assert "path" not in teacher.load_manifest(got)["spec"]  # no machine-local path shipped
    with AlgorithmDB(tmp_path / "run.sqlite") as db:
        assert teacher.import_teacher_db(db, str(d)) == [spec.run_id(0)]
        assert len(db.records(spec.run_id(0))) == 17
    with pytest.raises(FileNotFoundError, match="not a teacher database export"):
        teacher.get_teacher(str(tmp_path))
    with pytest.raises(KeyError, match="or the path of an exported database"):
        teacher.get_teacher("no-such-db")


def test_kit_commit_ignores_the_data_a_build_rewrites(tmp_path: Path):
    """A teacher build rewrites data/teacher/... after every batch; the next session's manifest
    must still name the kit's code as clean, and a change to the code as dirty."""
    import subprocess

    def git(*a: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "db.jsonl").write_text("1\n")
    (tmp_path / "kit.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    (tmp_path / "data" / "db.jsonl").write_text("1\n2\n")
    clean = aad_manifest.git_commit(tmp_path)
    assert clean is not None and not clean.endswith("+dirty")
    (tmp_path / "kit.py").write_text("x = 2\n")
    assert aad_manifest.git_commit(tmp_path) == clean + "+dirty"


def test_shipped_scores_seed_a_runs_cache_so_held_out_rescoring_is_served_from_it(spec: TeacherSpec, tmp_path: Path):
    """``teacher scores`` ships the sandbox results of the database's programs on another
    setting; a run's cache seeded with them serves stage 4's re-scoring (same keys, same
    results as scoring afresh), a sandbox with other limits is not served, and a later build
    keeps the entry."""
    from aad_kit import profiles
    from aad_kit.preference.heldout import rescored_records
    from aad_kit.sandbox import Sandbox

    teacher.build(spec, root=tmp_path, sampler=RichFakeSampler(), progress=False)
    entry = teacher.score_settings(spec, ["n15_w10"], root=tmp_path, progress=False)
    assert entry["settings"] == ["n15_w10"] and entry["regenerate"].startswith(f"aad-kit teacher scores {spec.name}")
    n_programs = sum(entry["status_counts"]["n15_w10"].values())
    assert 0 < entry["results"] <= n_programs
    records = teacher.load_records(spec, tmp_path)
    run_cache = tmp_path / "run" / "eval_cache.sqlite"
    assert teacher.seed_eval_cache(spec, run_cache, tmp_path) == entry["results"]
    assert teacher.seed_eval_cache(spec, run_cache, tmp_path) == 0  # already there

    with Sandbox(profiles.sandbox_config("quick", use_cache=False)) as sandbox:
        fresh = rescored_records(records, "n15_w10", sandbox)  # what stage 4 computes without them
    with Sandbox(profiles.sandbox_config("quick", cache_path=str(run_cache))) as sandbox:
        seeded = sandbox.evaluate_many([(r["task"], r["code"], "n15_w10") for r in fresh])
    assert [(r.score, r.status.value) for r in seeded] == [(r["score"], r["status"]) for r in fresh]
    served = [r for r in seeded if r.status.value not in teacher.SCORES_LEFT_OUT]
    assert len(served) == entry["results"] and all(r.cached for r in served)
    other = tmp_path / "other_limits.sqlite"
    teacher.seed_eval_cache(spec, other, tmp_path)
    with Sandbox(profiles.sandbox_config("quick", cache_path=str(other), timeout_scale=3.0)) as sandbox:
        assert not sandbox.evaluate_many([("admissible_set", fresh[0]["code"], "n15_w10")])[0].cached
    m = teacher.build(spec, root=tmp_path, seeds=(0, 1), sampler=RichFakeSampler(), progress=False)
    assert m["scores"]["results"] == entry["results"]
