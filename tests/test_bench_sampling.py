"""benchmarks/sampling_engines.py runs end to end on the tiny model, so the script cannot rot.

Not a timed test: it checks the structure of the rows and that rates are positive. The
llama.cpp half needs the optional extra ``bench`` (llama-cpp-python) and is skipped without it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.llm_fixtures import (  # noqa: F401 - pytest fixtures
    llm_cache,
    tiny_model_dir,
    use_llm_cache,
    write_llama_gguf,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "sampling_engines.py"
ARGS = ["--model", "tiny", "--reps", "1", "--threads", "1", "--batch", "1", "2",
        "--new-tokens", "4"]


def _bench() -> ModuleType:
    """Import the script as a module (registered first: its dataclasses look themselves up)."""
    name = "aad_bench_sampling_engines"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _check_rows(rows: list[dict[str, Any]], engines: set[str]) -> None:
    assert {r["engine"] for r in rows} == engines
    assert sorted({r["batch"] for r in rows}) == [1, 2]
    assert len(rows) == 2 * len(engines)
    for r in rows:
        assert r["threads"] == 1 and r["new_tokens"] == 4 and r["prompt_tokens"] > 100
        assert r["prefill_s"] > 0 and r["total_s"] > r["prefill_s"]
        assert r["decode_tok_s"] > 0 and r["total_tok_s"] > 0 and r["speedup_vs_hf"] > 0
    for r in rows:
        if r["engine"] == "hf":
            assert r["speedup_vs_hf"] == pytest.approx(1.0)


def test_hf_rows_and_table(use_llm_cache: Path, tmp_path: Path,  # noqa: F811
                           capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "bench.json"
    result = _bench().main([*ARGS, "--no-llama", "--profile", "--profile-steps", "2",
                            "--json", str(out_json)])
    _check_rows(result["rows"], {"hf"})
    assert result["info"]["llama_skipped"] == "--no-llama"
    text = capsys.readouterr().out
    assert "decode tok/s" in text and "x hf" in text
    assert sum(line.startswith("hf ") for line in text.splitlines()) == 2
    prof = result["profiles"]
    assert [p["batch"] for p in prof] == [1, 2]
    assert all(p["step_ms"] > 0 and p["matmul_ms"] > 0 and p["aten_ops_per_step"] > 10
               and p["probes"]["width64_step_ms"] > 0 and p["probes"]["layers_matmul_ms"] > 0
               for p in prof)
    assert out_json.is_file() and '"rows"' in out_json.read_text()


def test_llama_cpp_rows_on_a_tiny_gguf(use_llm_cache: Path, tiny_model_dir: Path,  # noqa: F811
                                       tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is the optional extra 'bench'")
    gguf = write_llama_gguf(tiny_model_dir, tmp_path / "tiny.gguf")
    result = _bench().main([*ARGS, "--gguf", str(gguf), "--work-dir", str(tmp_path)])
    assert result["info"]["gguf"]["tensor_types"] == {"F32": 20}  # fp32 already: no F32 row
    _check_rows(result["rows"], {"hf", "llama.cpp F32"})
    for r in result["rows"]:
        if r["engine"] != "hf":  # same weights, same precision, same prompt ids: same tokens
            assert r["greedy_tokens_agreeing_with_hf"] == 4
