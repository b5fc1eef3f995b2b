"""A tiny run of ``benchmarks/ray_executor.py`` so it cannot rot (not a timed test)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ray")


def test_ray_benchmark_runs_and_the_executors_agree(tmp_path, capsys):
    from benchmarks import ray_executor

    out = tmp_path / "report.json"
    report = ray_executor.main(["--tasks", "bin_packing", "--n", "4", "--reps", "2", "--workers", "1",
                                "--runs-dir", str(tmp_path / "none"), "--json", str(out)])
    printed = capsys.readouterr().out
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(report["rows"]))
    (row,) = report["rows"]
    assert row["n"] == 4 and row["mismatches"] == 0 and len(row["ray_walls_s"]) == 2
    assert row["local_per_s"] > 0 and row["ray_per_s"] > 0 and row["startup_s"]["ray"] > 0
    assert row["ray_nodes"] and "status/score mismatches between the executors: 0" in printed
