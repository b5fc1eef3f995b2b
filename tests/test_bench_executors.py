"""A tiny run of ``benchmarks/eval_executors.py`` so it cannot rot (not a timed test).

It also checks what the benchmark's fairness rests on: the process-per-candidate executor
gives exactly the pool's statuses and scores, on real candidates and on the hostile catalogue.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from aad_kit.tasks import TASK_NAMES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "eval_executors", ROOT / "benchmarks" / "eval_executors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_task_cheap_setting(bench, tmp_path, capsys):
    out = tmp_path / "report.json"
    bench.main(["--n", "4", "--reps", "1", "--workers", "1", "2", "--max-run-s", "0.5",
                "--breakdown-k", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["mismatches"] == 0, printed
    rows = [row for result in report["results"] for row in result["rows"]]
    assert [(r["task"], r["workers"]) for r in rows] == [(t, w) for t in TASK_NAMES for w in (1, 2)]
    for r in rows:
        assert r["n"] == 4 and r["pool_per_s"] > 0 and r["oneshot_per_s"] > 0 and r["ratio"] > 0
    for result in report["results"]:
        assert sum(result["statuses"].values()) == 4
        assert result["isolation"]["pool"]["netns"] == result["isolation"]["one-shot"]["netns"]
        assert result["isolation"]["pool"]["privileges"].split(",")[1:] == (
            result["isolation"]["one-shot"]["privileges"].split(",")[1:]
        )  # the same capabilities (the uid differs: it is per process)
        phases = result["breakdown"]["oneshot_ms"]
        if result["breakdown"]["candidates_in_a_process"]:
            assert phases["start_to_module"] > 0 and phases["total"] > phases["candidate_run"]
    assert set(report["interpreter_ms"]) >= {"python_bare", "numpy", "oneshot_imports"}
    for head in ("throughput", "pool /s", "one-shot /s", "ratio", "mismatch", "statuses"):
        assert head in printed
    assert "status mismatches between the executors: 0" in printed


def test_without_a_run_directory_uses_shipped_programs_and_variants(bench, tmp_path):
    candidates, notes = bench.build_candidates(
        "tsp_construct", "n20", 7, tmp_path / "missing", max_run_s=None
    )
    assert notes["runs_dir"] is None and set(notes["origins"]) <= {"shipped", "template"}
    real = notes["distinct_real_programs"]  # the template is a shipped heuristic: counted once
    assert real >= 3 and notes["real"] == real and notes["variants"] == 7 - real
    assert all(c.origin.startswith("variant of ") for c in candidates[real:])
    result = bench.compare("tsp_construct", "n20", candidates, workers=[1], reps=1)
    assert result["mismatches"] == [] and result["statuses"] == {"ok": 7}


def test_hostile_catalogue_gives_the_same_statuses(bench):
    rows = bench.hostile_check(timeout_s=1.0, policies=(True,))
    assert rows and all(r["same"] for r in rows), [r for r in rows if not r["same"]]
    assert all(r["pool"] == r["expected"] for r in rows), rows
