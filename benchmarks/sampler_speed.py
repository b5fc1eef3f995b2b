"""End-to-end speed of the kit's two CPU sampling paths, base and LoRA-tuned (issue 12).

    flock /tmp/aad-bench.lock .venv/bin/python benchmarks/sampler_speed.py \\
        [--models smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b] [--batch 1 8] \\
        [--new-tokens 128] [--reps 2] [--threads N] [--engines hf llamacpp] [--json out.json]

The claim checked: the default CPU engine (llama.cpp, :func:`aad_kit.llm.factory.default_engine`)
is the fastest one measured for the base *and* the tuned model. Per registered model:

* a random, non-trivial PEFT LoRA adapter is built once for the installed fp32 checkpoint
  (``r = --adapter-rank``, ``lora_alpha = 2r``, q/k/v/o/gate/up/down projections,
  ``init_lora_weights=False``, seeded; what stage 5 writes, with random weights), in a
  temporary directory;
* for engine in (hf, llamacpp), adapter in (base, tuned), one sampler is loaded (and freed
  before the next) and timed at each ``--batch``: one prompt (``i1_prompt(--task)``),
  ``n = batch`` samples at temperature 0.8, top_p 0.95, every row exactly ``--new-tokens``
  long, so the engines do the same work:

  - hf: :class:`aad_kit.llm.hf.HFSampler` (fp32, the tuned adapter merged as the stages load
    it), ``batch_size = batch``, EOS suppressed with ``min_new_tokens``
    (``sampling_engines.HFEngine._fixed_length``);
  - llamacpp: :class:`aad_kit.llm.llamacpp.LlamaCppSampler` on the model's GGUF (the tuned
    adapter applied at run time through its GGUF LoRA export), ``stop_at_fence=False``,
    ``ignore_eos=True``; built with ``parallel = max(--batch)``, so a call of ``n = batch``
    rows decodes exactly ``batch`` rows at once. Its prompt-prefix cache is emptied before
    every timed call: each call prefills its prompt once (shared by its rows), as a stage
    call with a new prompt does; hf prefills every row.

Each (sampler, batch) gets one untimed 2-token warm-up call, then ``--reps`` timed calls;
the wall time is the median. tokens/s = ``batch * new_tokens`` / wall (the whole call:
prompt formatting, tokenising, prefill, decoding, detokenising). "x hf fp32" and
"x llama.cpp" are rate ratios against the same model, adapter and batch on that engine
(> 1: faster). ``adapter_changes_output``: per (model, engine), whether the tuned sampler's
greedy first 8 tokens (as text) differ from the base's, i.e. the tuned rows really sample
through the adapter. llama.cpp rows are skipped with a note when llama-cpp-python is not
importable.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sampling_engines import HFEngine, loadavg  # noqa: E402 - the fixed-length hf helper

from aad_kit.llm.base import GenerationConfig  # noqa: E402
from aad_kit.llm.hf import _quiet_loading, default_num_threads  # noqa: E402
from aad_kit.prompts import i1_prompt  # noqa: E402

DEFAULT_MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
ENGINES = ("hf", "llamacpp")
ADAPTERS = ("base", "tuned")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TEMPERATURE, TOP_P = 0.8, 0.95
CHECK_TOKENS = 8  # greedy tokens compared between base and tuned


def machine() -> dict[str, Any]:
    from aad_kit.teacher import _machine

    return _machine()


def build_adapter(name: str, rank: int, out_dir: Path, seed: int = 0) -> Path:
    """A random LoRA adapter (non-zero B: it changes outputs) for ``name``'s fp32 checkpoint."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from aad_kit.models import model_path

    base = AutoModelForCausalLM.from_pretrained(model_path(name, progress=False),
                                                dtype=torch.float32)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # peft vs transformers 5
        torch.manual_seed(seed)
        peft_model = get_peft_model(base, LoraConfig(
            r=rank, lora_alpha=2 * rank, target_modules=list(LORA_TARGETS),
            init_lora_weights=False, task_type="CAUSAL_LM",
        ))
    out = out_dir / f"{name}-lora-r{rank}"
    with _quiet_loading(True):  # no "Writing model shards" bar
        peft_model.save_pretrained(out)
    del base, peft_model
    gc.collect()
    return out


class Timed:
    """One loaded sampler of one engine, called as the stages call it, at a fixed length."""

    def __init__(self, engine: str, name: str, adapter: Path | None, batches: Sequence[int],
                 threads: int) -> None:
        self.engine = engine
        t0 = time.perf_counter()
        if engine == "hf":
            from aad_kit.llm.hf import HFSampler

            self.sampler: Any = HFSampler(name, adapter_path=adapter, batch_size=max(batches),
                                          dtype="float32", num_threads=threads)
            self._hf = HFEngine(self.sampler)
            self.weights = "float32"
        else:
            from aad_kit.gguf_io import read_metadata
            from aad_kit.llm.llamacpp import LlamaCppSampler

            self.sampler = LlamaCppSampler(name, adapter_path=adapter, parallel=max(batches),
                                           stop_at_fence=False, ignore_eos=True,
                                           num_threads=threads)
            types = read_metadata(self.sampler.gguf_path)["tensor_types"]
            self.weights = "+".join(sorted(types, key=lambda t: -types[t]))
        self.load_s = time.perf_counter() - t0

    def call(self, prompt: str, batch: int, new_tokens: int, temperature: float = TEMPERATURE,
             seed: int = 0) -> tuple[float, list[Any]]:
        """Wall seconds of ``sample([prompt], n=batch)`` and its completions."""
        config = GenerationConfig(temperature=temperature, top_p=TOP_P,
                                  max_new_tokens=new_tokens, seed=seed)
        if self.engine == "hf":
            self.sampler.batch_size = batch  # the n = batch rows are one micro-batch
            with self._hf._fixed_length(new_tokens):
                t0 = time.perf_counter()
                out = self.sampler.sample([prompt], n=batch, config=config)
                wall = time.perf_counter() - t0
        else:
            self.sampler._cache_tokens = []  # no prompt KV left over from the previous call
            t0 = time.perf_counter()
            out = self.sampler.sample([prompt], n=batch, config=config)
            wall = time.perf_counter() - t0
        comps = out[0]
        got = [c.completion_tokens for c in comps]
        if len(comps) != batch or any(g != new_tokens for g in got):
            raise RuntimeError(f"{self.engine} generated {got} tokens, expected {new_tokens} "
                               f"for each of {batch} rows")
        return wall, comps

    def close(self) -> None:
        if hasattr(self.sampler, "close"):
            self.sampler.close()
        self.sampler = self._hf = None
        gc.collect()


def llama_skip_reason() -> str | None:
    from aad_kit.llm.llamacpp import llama_cpp_available

    return None if llama_cpp_available() else "llama_cpp not importable (pip install -e '.[bench]')"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                    help="registered model names (default %(default)s)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--task", default="admissible_set", help="i1 prompt of this task")
    ap.add_argument("--threads", type=int, default=default_num_threads(),
                    help="for both engines (default: the cores this process may use, %(default)s)")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--adapter-rank", type=int, default=16)
    ap.add_argument("--json", default=None, help="also write all results to this file")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if (args.new_tokens < 2 or args.reps < 1 or min(args.batch) < 1
            or args.threads < 1 or args.adapter_rank < 1):
        ap.error("need --new-tokens >= 2, --reps >= 1, --batch >= 1, --threads >= 1, "
                 "--adapter-rank >= 1")
    args.engines = [e for e in ENGINES if e in args.engines]  # hf first: the ratios' baseline
    return args


def bench_model(name: str, args: argparse.Namespace, engines: Sequence[str], prompt: str
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="aad-kit-sampler-speed-") as tmp:
        adapter_dir = build_adapter(name, args.adapter_rank, Path(tmp))
        for engine in engines:
            greedy: dict[str, str] = {}
            for adapter in ADAPTERS:
                timed = Timed(engine, name, adapter_dir if adapter == "tuned" else None,
                              args.batch, args.threads)
                try:
                    _, comps = timed.call(prompt, 1, CHECK_TOKENS, temperature=0.0)
                    greedy[adapter] = comps[0].text
                    for batch in args.batch:
                        timed.call(prompt, batch, 2)  # warm-up
                        walls, prompt_tokens = [], None
                        for rep in range(args.reps):
                            wall, comps = timed.call(prompt, batch, args.new_tokens, seed=rep)
                            walls.append(wall)
                            prompt_tokens = comps[0].prompt_tokens
                        wall = float(statistics.median(walls))
                        row = {
                            "model": name, "engine": engine, "weights": timed.weights,
                            "adapter": adapter, "batch": batch, "threads": args.threads,
                            "prompt_tokens": prompt_tokens, "new_tokens": args.new_tokens,
                            "reps": args.reps, "wall_s": wall, "walls_s": walls,
                            "tok_s": batch * args.new_tokens / wall,
                            "load_s": timed.load_s,
                        }
                        rows.append(row)
                        print(f"# {name} {engine} {adapter} batch {batch}: {wall:.3f} s, "
                              f"{row['tok_s']:.1f} tok/s", flush=True)
                finally:
                    timed.close()
                    del timed
                    gc.collect()
            changed = greedy["base"] != greedy["tuned"]
            checks.append({"model": name, "engine": engine, "adapter_changes_output": changed,
                           "greedy_base": greedy["base"], "greedy_tuned": greedy["tuned"]})
            for r in rows:
                if r["engine"] == engine:
                    r["adapter_changes_output"] = changed
    return rows, checks


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``x_hf_fp32`` / ``x_llamacpp``: this row's rate over that engine's, same model, adapter
    and batch (None when that engine was not run)."""
    by_key = {(r["model"], r["engine"], r["adapter"], r["batch"]): r for r in rows}
    for r in rows:
        for engine, col in (("hf", "x_hf_fp32"), ("llamacpp", "x_llamacpp")):
            ref = by_key.get((r["model"], engine, r["adapter"], r["batch"]))
            r[col] = ref["wall_s"] / r["wall_s"] if ref else None


HEADERS = ("model", "engine", "weights", "adapter", "batch", "prompt tok", "wall s", "tok/s",
           "x hf fp32", "x llama.cpp", "adapter changes output")


def _cell(v: Any, fmt: str = "{}") -> str:
    return "-" if v is None else fmt.format(v)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for r in rows:
        cells = (r["model"], r["engine"], r["weights"], r["adapter"], r["batch"],
                 r["prompt_tokens"], _cell(r["wall_s"], "{:.3f}"), _cell(r["tok_s"], "{:.1f}"),
                 _cell(r["x_hf_fp32"], "{:.2f}"), _cell(r["x_llamacpp"], "{:.2f}"),
                 _cell(r.get("adapter_changes_output")))
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    info: dict[str, Any] = {
        "machine": machine(), "loadavg_start": loadavg(), "python": platform.python_version(),
        "argv": list(argv) if argv is not None else sys.argv[1:], "task": args.task,
        "threads": args.threads, "new_tokens": args.new_tokens, "reps": args.reps,
        "temperature": TEMPERATURE, "top_p": TOP_P, "adapter_rank": args.adapter_rank,
    }
    engines = list(args.engines)
    if "llamacpp" in engines:
        skip = llama_skip_reason()
        if skip:
            engines.remove("llamacpp")
            info["llamacpp_skipped"] = skip
            print(f"# llama.cpp skipped: {skip}", flush=True)
        else:
            import llama_cpp

            info["llama_cpp_python"] = llama_cpp.__version__
    import torch
    import transformers

    info.update(torch=torch.__version__, transformers=transformers.__version__)
    m = info["machine"]
    print(f"# {m.get('cpu', platform.processor())} ({' '.join(m.get('simd', []))}), "
          f"{args.threads} threads, load {info['loadavg_start']}; i1 {args.task}, "
          f"{args.new_tokens} new tokens/row, T={TEMPERATURE} top_p={TOP_P}, "
          f"median of {args.reps}", flush=True)
    prompt = i1_prompt(args.task)
    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for name in args.models:
        r, c = bench_model(name, args, engines, prompt)
        rows += r
        checks += c
    add_ratios(rows)
    info["loadavg_end"] = loadavg()
    print()
    print(markdown(rows))
    print(f"\n# load at start {info['loadavg_start']}, at end {info['loadavg_end']}")
    result = {"info": info, "rows": rows, "adapter_checks": checks}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
