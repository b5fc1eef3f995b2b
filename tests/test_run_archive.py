"""aad-kit pack / unpack: a run moves between machines without its model state."""

from __future__ import annotations

import io
import json
import sqlite3
import tarfile
from pathlib import Path

import pytest

from aad_kit.cli import main as cli_main
from aad_kit.run_archive import PACKED_JSON, pack, unpack
from aad_kit.run_layout import RunLayout


def _fake_run(root: Path) -> tuple[RunLayout, sqlite3.Connection]:
    """A run directory with what a real one holds: a WAL-mode database with rows not yet
    checkpointed, stage records, DPO checkpoints and adapter, and an ablation branch."""
    lay = RunLayout(root)
    lay.update_manifest(profile="quick", params={}, stages={})
    for stage in ("01_task_definition", "02_candidate_generation", "03_evaluator_scoring"):
        lay.done_marker(stage).parent.mkdir(parents=True, exist_ok=True)
        lay.done_marker(stage).write_text("2026-12-02T00:00:00")
    db = sqlite3.connect(lay.database)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x INTEGER)")
    db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    db.commit()  # left open: the rows sit in the -wal file, not yet in the main file
    (lay.adapter).mkdir(parents=True)
    (lay.adapter / "adapter_model.safetensors").write_bytes(b"w" * 1000)
    ckpt = lay.dpo / "checkpoints" / "checkpoint-12"
    ckpt.mkdir(parents=True)
    (ckpt / "optimizer.pt").write_bytes(b"o" * 5000)
    (lay.dpo / "training_log.jsonl").write_text('{"step": 1}\n')
    lay.tables.mkdir()
    (lay.table("generalisation")).write_text("a,b\n1,2\n")
    lay.record("05_dpo_training", adapter=lay.adapter, training_log=lay.dpo / "training_log.jsonl")
    lay.record("04_dar_sampling", strategy="dar", n_pairs=10)
    branch = RunLayout(lay.ablation_branch("random"))
    branch.update_manifest(profile="quick", branch_of={"strategy": "random"})
    (branch.dpo / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (branch.dpo / "checkpoints" / "checkpoint-1" / "optimizer.pt").write_bytes(b"o" * 300)
    (branch.dpo / "training_log.jsonl").parent.mkdir(parents=True, exist_ok=True)
    (branch.dpo / "training_log.jsonl").write_text('{"step": 2}\n')
    (lay.ablation / "top_bottom.partial").mkdir()
    (lay.ablation / "top_bottom.partial" / "junk").write_text("half a branch")
    return lay, db


def _names(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return set(tar.getnames())


def _packed_while_open(tmp_path: Path):
    """The fake run packed while its database connection is still open (rows in the WAL)."""
    lay, db = _fake_run(tmp_path / "run")
    try:
        return lay, pack(lay.root, tmp_path / "run.tar.gz")
    finally:
        db.close()


def test_pack_leaves_out_model_state_and_says_so(tmp_path):
    _, rep = _packed_while_open(tmp_path)
    names = _names(rep.archive)
    assert {"manifest.json", "algorithms.sqlite", "dpo/training_log.jsonl", "tables/generalisation.csv",
            "stages/01_task_definition.done", "ablation/random/manifest.json",
            "ablation/random/dpo/training_log.jsonl", PACKED_JSON} <= names
    assert not [n for n in names if "checkpoints" in n or "adapter" in n or "partial" in n
                or n.endswith(("-wal", "-shm")) or n.startswith(".")]
    with tarfile.open(rep.archive) as tar:
        meta = json.load(tar.extractfile(PACKED_JSON))
    assert {(e["path"], e["bytes"]) for e in meta["left_out"]} == {
        ("dpo/checkpoints", 5000), ("dpo/adapter", 1000), ("ablation/random/dpo/checkpoints", 300)}
    assert meta["files"] == rep.files == len(names) - 1


def test_unpack_restores_a_consistent_database_and_names_what_is_missing(tmp_path):
    _, rep = _packed_while_open(tmp_path)
    out = unpack(rep.archive, tmp_path / "elsewhere" / "run")
    restored = RunLayout(out.run_dir)
    con = sqlite3.connect(restored.database)
    assert con.execute("SELECT count(*) FROM t").fetchone()[0] == 100  # the WAL's rows came along
    con.close()
    assert restored.outputs("04_dar_sampling") == {"strategy": "dar", "n_pairs": 10}
    assert restored.done_marker("03_evaluator_scoring").exists()
    assert (restored.ablation_branch("random") / "dpo" / "training_log.jsonl").read_text() == '{"step": 2}\n'
    assert out.missing_outputs == [("05_dpo_training", "adapter", "dpo/adapter")]
    assert not (tmp_path / "elsewhere" / "run.partial").exists()


def test_with_adapter_keeps_the_weights(tmp_path):
    lay, db = _fake_run(tmp_path / "run")
    db.close()
    rep = pack(lay.root, tmp_path / "run.tar.gz", with_adapter=True)
    assert "dpo/adapter/adapter_model.safetensors" in _names(rep.archive)
    out = unpack(rep.archive, tmp_path / "copy")
    assert out.missing_outputs == []
    assert (out.run_dir / "dpo" / "adapter" / "adapter_model.safetensors").read_bytes() == b"w" * 1000


def test_unpack_refuses_a_non_empty_destination_and_foreign_archives(tmp_path):
    lay, db = _fake_run(tmp_path / "run")
    db.close()
    rep = pack(lay.root, tmp_path / "run.tar.gz")
    with pytest.raises(FileExistsError):
        unpack(rep.archive, lay.root)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        for name, data in ((PACKED_JSON, b"{}"), ("../outside.txt", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="refusing member"):
        unpack(evil, tmp_path / "evil_run")
    assert not (tmp_path / "outside.txt").exists()
    plain = tmp_path / "plain.tar.gz"
    with tarfile.open(plain, "w:gz") as tar:
        tar.add(lay.manifest_path, arcname="manifest.json")
    with pytest.raises(ValueError, match="not made by aad-kit pack"):
        unpack(plain, tmp_path / "plain_run")


def test_pack_refuses_a_directory_that_is_not_a_run_and_an_archive_inside_the_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        pack(tmp_path / "empty")
    lay, db = _fake_run(tmp_path / "run")
    db.close()
    with pytest.raises(ValueError, match="inside the run"):
        pack(lay.root, lay.root / "self.tar.gz")


def test_cli_round_trip_prints_what_was_left_out(tmp_path, capsys):
    lay, db = _fake_run(tmp_path / "run")
    db.close()
    assert cli_main(["pack", str(lay.root), "-o", str(tmp_path / "a.tar.gz")]) == 0
    printed = capsys.readouterr().out
    assert "left out dpo/checkpoints" in printed and "left out dpo/adapter" in printed
    assert cli_main(["unpack", str(tmp_path / "a.tar.gz"), "--to", str(tmp_path / "b")]) == 0
    printed = capsys.readouterr().out
    assert "05_dpo_training recorded 'adapter' at dpo/adapter, which is not here" in printed
    assert cli_main(["unpack", str(tmp_path / "a.tar.gz"), "--to", str(tmp_path / "b")]) == 2
    assert "not empty" in capsys.readouterr().out
