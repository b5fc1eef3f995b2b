"""Where a DPO step's time goes: torch profiler over one optimizer step, grouped by kind.

    python benchmarks/dpo_profile.py --model smollm2-135m --threads 1 [--unshared] [--precompute]

Builds the kit's trainer (:func:`aad_kit.training.build_dpo_trainer`) on the DAR-like pairs of
``benchmarks/dpo_step.py``, runs one warm-up step, then profiles the next optimizer step
(forward, backward and optimizer) with ``torch.profiler`` and prints self CPU time per
operator kind (matrix products, attention, the LM-head log-prob kernel's pieces, elementwise,
optimizer, everything else) next to the FLOP floor's share for the products. ``--json FILE``
also writes the figures (per kind, per ``aten::mm`` class, top operators).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.lib

KINDS = {
    "matmul (linear, LoRA, LM head tiles)": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul",
                                             "aten::linear", "aten::baddbmm"),
    "attention (sdpa)": ("aten::_scaled_dot_product", "aten::scaled_dot_product"),
    "softmax / exp / log": ("aten::exp", "aten::log", "aten::_softmax", "aten::softmax",
                            "aten::_log_softmax", "aten::logsumexp", "aten::amax", "aten::max"),
    "copies / cat / index": ("aten::copy_", "aten::cat", "aten::index", "aten::index_select",
                             "aten::masked_scatter", "aten::gather", "aten::repeat_interleave",
                             "aten::clone", "aten::contiguous", "aten::to", "aten::_to_copy",
                             "aten::masked_fill", "aten::where", "aten::scatter"),
    "elementwise (norm, act, rope, add)": ("aten::mul", "aten::add", "aten::sub", "aten::div",
                                           "aten::silu", "aten::pow", "aten::rsqrt", "aten::mean",
                                           "aten::sum", "aten::neg", "aten::sigmoid", "aten::fill_",
                                           "aten::zero_", "aten::silu_backward", "aten::mul_",
                                           "aten::add_", "aten::sub_", "aten::div_"),
    "optimizer (AdamW)": ("aten::_fused_adamw", "aten::_foreach", "Optimizer.step"),
}


def kind_of(name: str) -> str:
    for kind, prefixes in KINDS.items():
        if any(name.startswith(p) for p in prefixes):
            return kind
    return "other"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--unshared", action="store_true", help="TRL's forward (prompt sharing off)")
    ap.add_argument("--precompute", action="store_true",
                    help="precomputed reference log-probs (no reference pass in the step)")
    ap.add_argument("--max-length", type=int, default=1536)
    ap.add_argument("--completion-tokens", type=int, default=300)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")

    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import AutoTokenizer

    from aad_kit.training import DPOTrainingConfig, build_dpo_trainer
    from aad_kit.training.base_model import resolve_base_model
    from benchmarks.lib.dpo_timing import synthetic_preference_dataset

    torch.set_num_threads(a.threads)
    base = resolve_base_model(a.model)
    tok = AutoTokenizer.from_pretrained(base.source)
    ds = synthetic_preference_dataset(4, prompt_tokens=None, completion_tokens=a.completion_tokens,
                                      tokenizer=tok)
    config = DPOTrainingConfig(max_steps=2, per_device_train_batch_size=2,
                               gradient_accumulation_steps=1, max_length=a.max_length,
                               lora_r=16, lora_alpha=32, save_steps=10_000, device="cpu",
                               share_prompt_prefix=not a.unshared, torch_threads=a.threads,
                               precompute_ref_log_probs=a.precompute)
    with tempfile.TemporaryDirectory() as tmp:
        trainer, setup = build_dpo_trainer(ds, base, config, tmp, progress=False,
                                           trl_overrides={"save_strategy": "no"})
        trainer.create_optimizer_and_scheduler(num_training_steps=2)
        model = trainer.model
        batches = iter(trainer.get_train_dataloader())
        model.train()

        def step() -> None:
            batch = next(batches)
            loss = trainer.compute_loss(model, batch)
            loss.backward()
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()

        step()  # warm-up
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            step()
        wall = time.perf_counter() - t0

    events = prof.key_averages()
    by_kind: dict[str, float] = defaultdict(float)
    total = 0.0
    for ev in events:
        total += ev.self_cpu_time_total
        by_kind[kind_of(ev.key)] += ev.self_cpu_time_total
    print(f"model {base.name}, prompt sharing {'on' if setup.prompt_sharing else 'off'}, "
          f"reference {'precomputed' if setup.precompute_ref_log_probs else 'pass per step'}, "
          f"{a.threads} thread(s); profiled step {wall:.2f} s wall "
          f"(profiler overhead included), {total / 1e6:.2f} s self CPU time in operators")
    for kind, us in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:38} {us / 1e6:7.2f} s  {100 * us / total:5.1f} %")
    print("\naten::mm by operand shapes (FLOPs from the shapes):")
    lora_r = config.lora_r
    classes: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for ev in prof.key_averages(group_by_input_shape=True):
        if ev.key != "aten::mm" or not ev.input_shapes or len(ev.input_shapes) < 2:
            continue
        (m, k), (_, n) = ev.input_shapes[0][:2], ev.input_shapes[1][:2]
        dims = {m, k, n}
        kind = ("LoRA (rank-r operand)" if lora_r in dims else
                "LM head tiles" if max(dims) > 8192 else "frozen linear layers")
        c = classes[kind]
        c[0] += ev.self_cpu_time_total / 1e6
        c[1] += 2.0 * m * k * n * ev.count / 1e9
        c[2] += ev.count
    for kind, (sec, gflop, calls) in sorted(classes.items(), key=lambda kv: -kv[1][0]):
        print(f"  {kind:26} {sec:7.2f} s  {gflop:8.1f} GFLOP  {gflop / max(sec, 1e-9):6.1f} GFLOP/s"
              f"  calls {calls}")
    print(f"\ntop {a.top} operators by self CPU time")
    rows = sorted(events, key=lambda e: -e.self_cpu_time_total)[: a.top]
    for ev in rows:
        print(f"  {ev.key[:48]:48} {ev.self_cpu_time_total / 1e6:7.2f} s  calls {ev.count:6d}")
    result = {
        "model": base.name, "threads": a.threads, "prompt_sharing": bool(setup.prompt_sharing),
        "precompute_ref_log_probs": bool(setup.precompute_ref_log_probs), "step_wall_s": wall,
        "self_cpu_s": total / 1e6, "by_kind_s": {k: us / 1e6 for k, us in by_kind.items()},
        "mm_classes": {k: {"s": sec, "gflop": gflop, "gflop_per_s": gflop / max(sec, 1e-9),
                           "calls": int(calls)} for k, (sec, gflop, calls) in classes.items()},
        "top": [{"op": ev.key, "self_cpu_s": ev.self_cpu_time_total / 1e6, "calls": int(ev.count)}
                for ev in rows],
    }
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
