"""Tiny runs of the benchmark scripts, so they cannot rot (they are not timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pipeline_stages_reports_a_run_directory(tmp_path):
    run = tmp_path / "r"
    (run).mkdir()
    stages = {"01_task_definition": {"wall_s": 1.5}, "02_candidate_generation": {"wall_s": 2.0}}
    (run / "manifest.json").write_text(json.dumps({"profile": "smoke", "stages": stages}))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pipeline_stages.py"), str(run)],
                         capture_output=True, text=True, check=True).stdout
    assert "01_task_definition" in out and "1.5s" in out and "3.5s" in out  # total


def test_eval_per_setting_runs_on_one_task():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "eval_per_setting.py"), "--reps", "1",
         "--throughput-n", "4", "--tasks", "tsp_construct"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout
    assert "llm4ad_n50" in out and "speed-up" in out
