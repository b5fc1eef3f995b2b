"""Tiny runs of the benchmark scripts, so they cannot rot (they are not timed tests)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.llm_fixtures import llm_cache, tiny_model_dir  # noqa: F401 - pytest fixtures

ROOT = Path(__file__).resolve().parents[1]


def test_pipeline_stages_reports_a_run_directory(tmp_path):
    run = tmp_path / "r"
    (run).mkdir()
    stages = {"01_task_definition": {"wall_s": 1.5}, "02_candidate_generation": {"wall_s": 2.0}}
    (run / "manifest.json").write_text(json.dumps({"profile": "smoke", "stages": stages}))
    out_json = tmp_path / "stages.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pipeline_stages.py"), str(run),
                    "--json", str(out_json)], capture_output=True, text=True, check=True)
    (row,) = json.loads(out_json.read_text())["runs"]
    assert row["profile"] == "smoke" and row["run_dir"] == str(run)
    assert row["stages"] == {"01_task_definition": 1.5, "02_candidate_generation": 2.0}
    assert row["total_s"] == 3.5


def test_eval_per_setting_runs_on_one_task(tmp_path):
    from aad_kit.profiles import CHEAPEST_SETTING
    from aad_kit.tasks import get_task

    out_json = tmp_path / "eval.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "eval_per_setting.py"), "--reps", "1",
         "--throughput-n", "4", "--tasks", "tsp_construct", "--json", str(out_json)],
        capture_output=True, text=True, check=True, timeout=300,
    )
    result = json.loads(out_json.read_text())
    task = get_task("tsp_construct")
    assert [r["setting"] for r in result["settings"]] == [
        name for name, s in task.settings.items() if not s.slow]  # every non-slow setting
    assert "llm4ad_n50" in {r["setting"] for r in result["settings"]}
    for r in result["settings"]:
        assert r["task"] == "tsp_construct" and r["in_process_s"] > 0 and r["sandbox_s"] > 0
        assert r["ratio"] == r["sandbox_s"] / r["in_process_s"]
    (t,) = result["throughput"]
    assert t["setting"] == CHEAPEST_SETTING["tsp_construct"]
    assert t["workers_1_per_s"] > 0 and t["speedup"] == t["workers_2_per_s"] / t["workers_1_per_s"]


def test_sandbox_overhead_reports_every_path():
    """benchmarks/lib/sandbox_overhead.py (was aad_kit.sandbox.bench), tiny: every figure there."""
    from benchmarks.lib import sandbox_overhead

    result = sandbox_overhead.run(n=3, n_subprocess=1, n_throughput=4)
    assert set(result) == {"in_process_run_ms", "in_process_exec_run_ms", "sandbox_fork_ms",
                           "subprocess_run_ms", "throughput_1_workers_per_s",
                           "throughput_2_workers_per_s"}
    assert all(v > 0 for v in result.values()), result


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
    out_json = tmp_path / "search.json"
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_default_model.py"), "--model", "tiny",
         "--budget", "2", "--batch-size", "2", "--max-new-tokens", "16", "--tasks",
         "tsp_construct", "--out", str(tmp_path / "search"), "--json", str(out_json)],
        capture_output=True, text=True, timeout=600, env=_env_with_tiny_cache(tmp_path, llm_cache),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out_json.read_text())
    (row,) = result["rows"]
    assert row["task"] == "tsp_construct" and row["setting"] == "n50" and row["samples"] == 2
    assert sum(row["statuses"].values()) == 2 and 0 <= row["valid_rate"] <= 1
    assert row["samples_per_min"] > 0 and row["best_baseline"] < 0  # TSP: -length
    assert (tmp_path / "search" / "tsp_construct.sqlite").is_file()


def test_dpo_profile_attributes_the_step_on_the_tiny_model(tmp_path, llm_cache):  # noqa: F811
    out_json = tmp_path / "profile.json"
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dpo_profile.py"), "--model", "tiny",
         "--completion-tokens", "40", "--max-length", "2048", "--top", "5",
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=600, env=_env_with_tiny_cache(tmp_path, llm_cache),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out_json.read_text())
    assert result["model"] == "tiny" and result["prompt_sharing"] is True
    assert result["step_wall_s"] > 0 and result["self_cpu_s"] > 0
    assert result["by_kind_s"]["matmul (linear, LoRA, LM head tiles)"] > 0
    assert sum(result["by_kind_s"].values()) == pytest.approx(result["self_cpu_s"])
    frozen = result["mm_classes"]["frozen linear layers"]
    assert frozen["calls"] > 0 and frozen["gflop"] > 0 and frozen["gflop_per_s"] > 0
    assert len(result["top"]) == 5


def test_search_methods_compares_eoh_and_funsearch_on_the_tiny_model(tmp_path, llm_cache):  # noqa: F811
    out_json = tmp_path / "methods.json"
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_methods.py"), "--model", "tiny",
         "--budget", "2", "--batch-size", "2", "--max-new-tokens", "16", "--tasks",
         "tsp_construct", "--seeds", "0", "1", "--out", str(tmp_path / "methods"),
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=600, env=_env_with_tiny_cache(tmp_path, llm_cache),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out_json.read_text())
    assert result["points"] == [1, 2]  # budget/4 and budget/2 clipped to >= 1, then budget
    rows = result["rows"]
    assert [(r["task"], r["method"], r["seed"]) for r in rows] == [
        ("tsp_construct", m, s) for m in ("eoh", "funsearch") for s in (0, 1)]
    for r in rows:
        assert len(r["best"]) == 2 and 0 <= r["valid"] <= 1 and r["spm"] > 0
        b1, b2 = r["best"]  # best-so-far cannot get worse with more samples
        assert math.isnan(b1) or b2 >= b1


def test_dpo_timing_helpers_run_on_the_tiny_model(tiny_model_dir):  # noqa: F811
    """benchmarks/lib/dpo_timing.py (was aad_kit.training.bench) on the tiny model."""
    import warnings

    from transformers import AutoTokenizer

    from aad_kit.training import validate_preference_dataset
    from benchmarks.lib.dpo_timing import synthetic_preference_dataset, time_steps

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ds = synthetic_preference_dataset(4, prompt_tokens=60, completion_tokens=80, tokenizer=tok)
    assert validate_preference_dataset(ds) == "conversational" and len(ds) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = time_steps(str(tiny_model_dir), "ours", steps=2, n_pairs=4, max_length=1024, threads=1)
    assert len(res["step_s"]) == 2 and res["dtype"] == "float32"


def test_model_table_on_the_tiny_model(tmp_path, llm_cache):  # noqa: F811
    """The per-model table (issue 12) runs end to end on the tiny model: rows with rates in
    range, the template scored, both answer formats accepted."""
    out_json = tmp_path / "table.json"
    for fmt in ("code-first", "idea-first"):
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "model_table.py"), "--models", "tiny",
             "--tasks", "tsp_construct", "--seeds", "0", "--n", "2", "--max-new-tokens", "8",
             "--parallel", "2", "--answer-format", fmt, "--json", str(out_json),
             "--answers", str(tmp_path / f"answers-{fmt}.jsonl")],
            capture_output=True, text=True, check=True, timeout=300,
            env=_env_with_tiny_cache(tmp_path, llm_cache),
        )
        result = json.loads(out_json.read_text())
        (row,) = result["rows"]
        assert row["model"] == "tiny" and row["answers"] == 2 and 0 <= row["valid_rate"] <= 1
        assert row["source"] == "sampled now" and row["max_new_tokens"] == 8
        assert row["template_score"] < 0 and row["tokens_per_answer"] <= 8  # TSP: -length
        assert result["answer_format"] == fmt and result["machine"]["cpu_count"] >= 1
        kept = [json.loads(x) for x in (tmp_path / f"answers-{fmt}.jsonl").read_text().splitlines()]
        assert len(kept) == 2 and {a["model"] for a in kept} == {"tiny"}
        assert sum(a["status"] == "ok" for a in kept) == row["valid"]
        assert all(a["text"] is not None and a["status"] for a in kept)
        assert sum(row["top_errors"].values()) <= row["answers"] - row["valid"]


def test_model_table_names_the_exception_of_a_failure():
    from benchmarks.model_table import error_kind

    assert error_kind("TypeError: object of type 'int' has no len() Traceback ...") == "TypeError"
    assert error_kind("timed out after 10 s") == "" and error_kind("") == ""


def test_sampler_speed_on_the_tiny_model(tmp_path, llm_cache):  # noqa: F811
    """benchmarks/sampler_speed.py (issue 12) on the tiny model: engine x adapter x batch rows
    with positive rates, hf rows as the ratio baseline, and the tuned rows really sampling
    through the adapter on each engine. Without llama-cpp-python the hf half is checked and
    the llama.cpp half skipped."""
    from aad_kit.llm.llamacpp import llama_cpp_available

    out_json = tmp_path / "speed.json"
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "sampler_speed.py"), "--models", "tiny",
         "--batch", "1", "2", "--new-tokens", "4", "--reps", "1", "--threads", "1",
         "--json", str(out_json)],
        capture_output=True, text=True, timeout=600, env=_env_with_tiny_cache(tmp_path, llm_cache),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| x hf fp32 |" in out.stdout and "x llama.cpp" in out.stdout
    result = json.loads(out_json.read_text())
    rows, checks = result["rows"], result["adapter_checks"]
    engines = ["hf", "llamacpp"] if llama_cpp_available() else ["hf"]
    assert [(r["engine"], r["adapter"], r["batch"]) for r in rows] == [
        (e, a, b) for e in engines for a in ("base", "tuned") for b in (1, 2)]
    for r in rows:
        assert r["model"] == "tiny" and r["threads"] == 1 and r["new_tokens"] == 4
        assert r["prompt_tokens"] > 100 and r["wall_s"] > 0 and r["tok_s"] > 0
        assert r["x_hf_fp32"] > 0 and r["adapter_changes_output"] is True
        if r["engine"] == "hf":
            assert r["x_hf_fp32"] == pytest.approx(1.0)
    assert {c["engine"]: c["adapter_changes_output"] for c in checks} == dict.fromkeys(engines, True)
    assert result["info"]["machine"]["cpu_count"] >= 1 and result["info"]["loadavg_end"]
    if "llamacpp" not in engines:
        assert "llamacpp_skipped" in result["info"]
        pytest.skip("llama.cpp half: llama-cpp-python is the optional extra 'bench'")
    for r in rows:
        if r["engine"] == "llamacpp":
            assert r["x_llamacpp"] == pytest.approx(1.0) and r["weights"] == "F32"
