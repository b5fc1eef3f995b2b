"""Tiny runs of the benchmark scripts, so they cannot rot (they are not timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.llm_fixtures import llm_cache  # noqa: F401 - pytest fixture

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


def _env_with_tiny_cache(tmp_path: Path, cache: Path) -> dict:
    import os

    return {**os.environ, "AAD_KIT_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}


def test_dpo_step_compares_plain_trl_and_ours_on_the_tiny_model(tmp_path, llm_cache):  # noqa: F811
    rows_file = tmp_path / "rows.json"
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dpo_step.py"), "--model", "tiny", "--steps", "2",
         "--threads", "1", "--n-pairs", "2", "--completion-tokens", "40", "--max-length", "2048",
         "--variants", "plain_trl,ours_unshared,ours", "--json", str(rows_file)],
        capture_output=True, text=True, timeout=600, env=_env_with_tiny_cache(tmp_path, llm_cache),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "x unique floor" in out.stdout and "plain_trl / ours:" in out.stdout
    result = json.loads(rows_file.read_text())
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"plain_trl", "ours_unshared", "ours"}
    for r in rows.values():
        assert r["s_per_step"] > 0 and r["peak_rss_gib"] > 0 and r["x_floor_unique"] > 0
        assert abs(r["first_loss"] - 0.6931) < 1e-3  # LoRA B = 0: policy == reference
    assert result["floors"]["unique"] < result["floors"]["padded"]  # one shared prompt
    assert result["gflops"] > 0


def test_search_benchmark_runs_on_the_tiny_model(tmp_path, llm_cache):  # noqa: F811
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_default_model.py"), "--model", "tiny",
         "--budget", "2", "--batch-size", "2", "--max-new-tokens", "16", "--tasks",
         "tsp_construct", "--out", str(tmp_path / "search")],
        capture_output=True, text=True, timeout=600, env=_env_with_tiny_cache(tmp_path, llm_cache),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "samples/min" in out.stdout and "\ntsp_construct" in out.stdout


def test_dpo_profile_attributes_the_step_on_the_tiny_model(tmp_path, llm_cache):  # noqa: F811
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dpo_profile.py"), "--model", "tiny",
         "--completion-tokens", "40", "--max-length", "2048", "--top", "5"],
        capture_output=True, text=True, timeout=600, env=_env_with_tiny_cache(tmp_path, llm_cache),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "prompt sharing on" in out.stdout and "frozen linear layers" in out.stdout
    assert "matmul" in out.stdout and "GFLOP/s" in out.stdout


def test_search_methods_compares_eoh_and_funsearch_on_the_tiny_model(tmp_path, llm_cache):  # noqa: F811
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_methods.py"), "--model", "tiny",
         "--budget", "2", "--batch-size", "2", "--max-new-tokens", "16", "--tasks",
         "tsp_construct", "--seeds", "0", "1", "--out", str(tmp_path / "methods")],
        capture_output=True, text=True, timeout=600, env=_env_with_tiny_cache(tmp_path, llm_cache),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "samples/min" in out.stdout and "best@2" in out.stdout and "mean over seeds" in out.stdout
    for method in ("eoh", "funsearch"):
        for seed in (0, 1):
            assert any(ln.split()[:3] == ["tsp_construct", method, str(seed)] for ln in lines), out.stdout
