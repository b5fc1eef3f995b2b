"""Timing DPO steps: a synthetic preference set and seconds per optimizer step per variant.

Used to choose :class:`~aad_kit.training.dpo.DPOTrainingConfig`'s speed defaults and meant
as the starting point for profiling work. Each variant should run in its own process (thread
settings and allocator state are process-wide)::

    python -m benchmarks.lib.dpo_timing --model smollm2-135m --variant trl_defaults --steps 3
    python -m benchmarks.lib.dpo_timing --model tiny --variant ours

Variants (all: LoRA r=16 on all linear layers, batch 2, max_length 512 unless overridden):

* ``trl_defaults``: what a plain ``DPOConfig`` does — bf16 autocast (also on CPU), gradient
  checkpointing on, no precomputed reference;
* ``ours``: :class:`DPOTrainingConfig` defaults — float32 on CPU, no checkpointing, prompt
  sharing — with the reference pass per step (no precompute);
* single changes from ``ours`` (``unshared``, ``gc_on``, ``bf16``, ``precompute``) to
  attribute the differences.

``benchmarks/dpo_step.py`` compares the kit against a plain TRL script; this module is the
benchmarks' helper (also used by the tests) for single-variant timings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "trl_defaults": dict(dtype="bfloat16", gradient_checkpointing=True, precompute_ref_log_probs=False,
                         share_prompt_prefix=False),
    "ours": dict(precompute_ref_log_probs=False),
    "unshared": dict(share_prompt_prefix=False, precompute_ref_log_probs=False),
    "gc_on": dict(gradient_checkpointing=True, precompute_ref_log_probs=False),
    "bf16": dict(dtype="bfloat16", precompute_ref_log_probs=False),
    "precompute": dict(precompute_ref_log_probs=True),
    "unshared_precompute": dict(precompute_ref_log_probs=True, share_prompt_prefix=False),
}


def synthetic_preference_dataset(n_pairs: int = 8, prompt_tokens: int | None = 160,
                                 completion_tokens: int = 240, tokenizer: Any = None,
                                 seed: int = 0) -> Any:
    """``n_pairs`` conversational pairs (TRL preference format plus DAR-like metadata columns)
    built from the kit's own text: prompt = [system, user] where the user turn is the start of
    the EoH ``i1`` prompt for TSP, cut to about ``prompt_tokens`` tokens (templated; ``None``:
    the whole prompt, as in DAR's pairs); chosen /
    rejected = shipped heuristics in the kit's answer format, padded with code comments to
    about ``completion_tokens`` tokens. Tokens are counted with ``tokenizer`` (else ~4
    characters a token), so each model gets sequences of ~prompt+completion tokens.

    Real EoH prompts are longer (the i1 prompt alone is ~730 SmolLM2 tokens); this set fixes
    the sequence length so step times compare across configurations."""
    import random

    import datasets

    from aad_kit.prompts import as_messages, build_prompt, format_answer
    from aad_kit.tasks import get_task

    rng = random.Random(seed)
    task = get_task("tsp_construct")
    codes = [h.code for h in task.heuristics().values()] or ["def select_next_node(*a):\n    return 0\n"]

    def n_tokens(text: str) -> int:
        if tokenizer is None:
            return len(text) // 4
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    words = build_prompt("i1", task).split(" ")
    lo, hi = 1, len(words)
    if prompt_tokens is None:
        lo = hi
    while lo < hi:  # the longest word prefix whose templated prompt fits prompt_tokens
        mid = (lo + hi + 1) // 2
        msgs = as_messages(" ".join(words[:mid]))
        text = "".join(m["content"] for m in msgs)
        if n_tokens(text) + 12 <= prompt_tokens:
            lo = mid
        else:
            hi = mid - 1
    user = " ".join(words[:lo])

    def answer(i: int) -> str:
        code = codes[i % len(codes)]
        idea = f"variant {i}: greedy construction with a scored look-ahead"
        text = format_answer(idea, code)
        k = 0
        while n_tokens(text) < completion_tokens:
            k += 1
            code = code.rstrip() + f"\n# note {k}: weight {rng.random():.4f} for the distance term"
            text = format_answer(idea, code)
        return text

    rows = []
    for i in range(n_pairs):
        rows.append({
            "prompt": as_messages(user),
            "chosen": [{"role": "assistant", "content": answer(2 * i)}],
            "rejected": [{"role": "assistant", "content": answer(2 * i + 1)}],
            "chosen_id": 2 * i, "rejected_id": 2 * i + 1, "strategy": "synthetic",
        })
    return datasets.Dataset.from_list(rows)


def step_timer() -> Any:
    """A ``TrainerCallback`` recording wall and CPU seconds of every optimizer step and the
    logged losses (``.wall``, ``.cpu``, ``.losses``)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []
            self.losses: list[float] = []
            self._t = self._c = 0.0

        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            self.wall.append(time.perf_counter() - self._t)
            self.cpu.append(time.process_time() - self._c)

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    return StepTimer()


def time_steps(base_model: str, variant: str = "ours", steps: int = 3, n_pairs: int = 8,
               max_length: int = 512, batch_size: int = 2, lora_r: int = 16,
               threads: int | None = None, progress: bool = False,
               prompt_tokens: int | None = 160, completion_tokens: int = 240,
               **config_overrides: Any) -> dict[str, Any]:
    """Train ``steps`` optimizer steps with ``variant`` and return the per-step wall times."""
    import torch
    from transformers import AutoTokenizer

    from aad_kit.llm.device import default_num_threads
    from aad_kit.training import DPOTrainingConfig, build_dpo_trainer
    from aad_kit.training.base_model import resolve_base_model

    base = resolve_base_model(base_model, progress=progress)
    tok = AutoTokenizer.from_pretrained(base.source)
    ds = synthetic_preference_dataset(n_pairs, prompt_tokens=prompt_tokens,
                                      completion_tokens=completion_tokens, tokenizer=tok)
    seq_tokens = [len(tok.apply_chat_template(r["prompt"] + r["chosen"], tokenize=True,
                                              return_dict=True)["input_ids"]) for r in ds]
    config = DPOTrainingConfig(
        max_steps=steps, max_length=max_length, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1, lora_r=lora_r, lora_alpha=2 * lora_r, save_steps=10_000,
        warmup_ratio=0.0, torch_threads=threads, **{**VARIANTS[variant], **config_overrides},
    )
    n_threads = threads or default_num_threads()

    cb = step_timer()
    torch.set_num_threads(n_threads)
    with tempfile.TemporaryDirectory(prefix="aad-dpo-bench-") as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        trainer, setup = build_dpo_trainer(ds, base, config, tmp, progress=progress,
                                           callbacks=[cb], trl_overrides={"save_strategy": "no"})
        t_setup, c_setup = time.perf_counter() - t0, time.process_time() - c0
        t1 = time.perf_counter()
        trainer.train()
        t_train = time.perf_counter() - t1
    later = cb.wall[1:] or cb.wall
    later_cpu = cb.cpu[1:] or cb.cpu
    return {
        "model": base.name, "variant": variant, "steps": steps, "pairs": n_pairs,
        "batch_size": batch_size, "max_length": max_length, "lora_r": lora_r,
        "seq_tokens_mean": round(sum(seq_tokens) / len(seq_tokens), 1),
        "threads": n_threads, "device": setup.device, "dtype": setup.dtype,
        "gradient_checkpointing": setup.gradient_checkpointing,
        "precompute_ref_log_probs": config.precompute_ref_log_probs,
        "setup_s": round(t_setup, 2), "setup_cpu_s": round(c_setup, 2),
        "train_s": round(t_train, 2),
        "step_s": [round(t, 2) for t in cb.wall],
        "step_cpu_s": [round(t, 2) for t in cb.cpu],
        "s_per_step_after_first": round(sum(later) / len(later), 2),
        "cpu_s_per_step_after_first": round(sum(later_cpu) / len(later_cpu), 2),
        "prompt_sharing": setup.prompt_sharing,
        "prefix_stats": (trainer.prefix_stats.to_dict()
                         if getattr(trainer, "prefix_stats", None) else None),
        "loadavg_1min": _loadavg(),
        "losses": cb.losses,
    }


def _loadavg() -> float | None:
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="seconds per DPO optimizer step")
    p.add_argument("--model", default="tiny")
    p.add_argument("--variant", default="ours", choices=sorted(VARIANTS))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--prompt-tokens", type=int, default=160, help="0: the whole i1 prompt (DAR's)")
    p.add_argument("--completion-tokens", type=int, default=240)
    args = p.parse_args(argv)
    res = time_steps(args.model, args.variant, steps=args.steps, n_pairs=args.pairs,
                     max_length=args.max_length, batch_size=args.batch_size,
                     lora_r=args.lora_r, threads=args.threads,
                     prompt_tokens=args.prompt_tokens or None,
                     completion_tokens=args.completion_tokens)
    json.dump(res, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
