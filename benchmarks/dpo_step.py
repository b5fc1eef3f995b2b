"""Seconds per DPO step: a plain TRL script vs the kit's training stage, against the FLOP floor.

    python benchmarks/dpo_step.py --model smollm2-135m --steps 4 --threads 2

Every variant trains the same model on the same preference pairs with the same settings
(LoRA r=16 on all linear layers, batch 2, beta 0.1, fp32 unless the variant says otherwise),
each in its own process (thread pools and allocator state are per process), one after the
other, so the ratios are measured side by side in one run:

* ``plain_trl``: a plain TRL script (``DPOConfig`` + ``DPOTrainer`` + ``peft_config``, written
  the way TRL's docs show) with the same settings as ours: fp32, checkpointing off;
* ``plain_trl_defaults``: the same script with TRL's own defaults for precision and memory
  (bf16 autocast, activation checkpointing on), what a user gets without choosing;
* ``ours_unshared``: :func:`aad_kit.training.train_dpo` with prompt sharing off: our
  bookkeeping (logs, manifest, checkpoints) on top of the same TRL step; should match
  ``plain_trl``;
* ``ours``: ``train_dpo`` with its defaults (prompt sharing on), the quick profile's path;
* ``ours_precompute``: plus precomputed reference log-probs (the full profile's setting); its
  up-front pass is reported separately.

Per variant: median seconds per optimizer step (the first step, which warms allocators, is
left out), CPU-seconds per step, sequence tokens per second (prompt + completion of every row),
peak resident memory of the process, and the step's FLOP floor (see
:mod:`benchmarks.lib.flops`) at the fp32 GEMM speed measured here at the start of the run.
The pairs are DAR-like: the whole EoH ``i1`` prompt (one prompt for all pairs, as DAR
produces for one task) and shipped heuristics as completions; ``--pairs DIR`` uses a saved
preference dataset instead (e.g. ``runs/<run>/preference/pairs_dar``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.lib (this script and its --child processes)

VARIANTS = ("plain_trl", "plain_trl_defaults", "ours_unshared", "ours", "ours_precompute")
LORA_R = 16


# ---------------------------------------------------------------------------- children


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _timer_callback() -> Any:
    # measurement only (wall/CPU per step); the training itself stays plain TRL
    from benchmarks.lib.dpo_timing import step_timer

    return step_timer()


def plain_trl_child(a: argparse.Namespace) -> dict[str, Any]:
    """The plain TRL script: only what TRL's documentation shows (aad_kit only times it)."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(a.threads)
    defaults = a.child == "plain_trl_defaults"
    t0 = time.perf_counter()
    dataset = datasets.load_from_disk(a.data)
    tokenizer = AutoTokenizer.from_pretrained(a.model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    precision = {} if defaults else {"bf16": False, "activation_checkpointing": False}
    args = DPOConfig(
        output_dir=a.out, max_steps=a.steps, per_device_train_batch_size=a.batch_size,
        gradient_accumulation_steps=1, max_length=a.max_length, learning_rate=5e-5, beta=0.1,
        warmup_steps=0, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
        seed=0, disable_tqdm=True, **precision,
    )
    timer = _timer_callback()
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=LoraConfig(r=LORA_R, lora_alpha=2 * LORA_R, lora_dropout=0.0,
                               target_modules="all-linear", task_type="CAUSAL_LM"),
        callbacks=[timer],
    )
    setup_s = time.perf_counter() - t0
    trainer.train()
    return {"wall": timer.wall, "cpu": timer.cpu, "losses": timer.losses, "setup_s": setup_s,
            "bf16": bool(args.bf16), "checkpointing": bool(args.activation_checkpointing)}


def ours_child(a: argparse.Namespace) -> dict[str, Any]:
    """The kit's training stage, as the DPO notebook calls it."""
    import datasets

    from aad_kit.training import DPOTrainingConfig, train_dpo

    t0 = time.perf_counter()
    dataset = datasets.load_from_disk(a.data)
    config = DPOTrainingConfig(
        max_steps=a.steps, per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=1,
        max_length=a.max_length, learning_rate=5e-5, beta=0.1, warmup_ratio=0.0,
        lora_r=LORA_R, lora_alpha=2 * LORA_R, save_steps=10_000, torch_threads=a.threads,
        device="cpu", share_prompt_prefix=a.child != "ours_unshared",
        precompute_ref_log_probs=a.child == "ours_precompute",
    )
    timer = _timer_callback()
    res = train_dpo(dataset, a.model_dir, config, a.out, resume=False, progress=False,
                    callbacks=[timer])
    manifest = res.manifest()
    losses = [float(r["loss"]) for r in res.log().to_dict("records")]
    return {"wall": timer.wall, "cpu": timer.cpu, "losses": losses,
            "setup_s": manifest["timing"]["setup_s"], "bf16": False, "checkpointing": False,
            "prompt_sharing": manifest["effective"]["prompt_sharing"],
            "total_s": time.perf_counter() - t0}


def child_main(a: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["TQDM_DISABLE"] = "1"
    import warnings

    warnings.filterwarnings("ignore")
    out = plain_trl_child(a) if a.child.startswith("plain_trl") else ours_child(a)
    out["peak_rss_gib"] = _peak_rss_gib()
    print("RESULT " + json.dumps(out))


# ---------------------------------------------------------------------------- parent


def build_pairs(model_dir: str, n_pairs: int, completion_tokens: int, out: Path,
                pairs_dir: str | None) -> list[tuple[int, int, int, str]]:
    """Save the preference set to ``out``; return each pair's (prompt, chosen, rejected) token
    counts under the model's chat template and its prompt text (pairs sharing it share work)."""
    import datasets
    from transformers import AutoTokenizer

    from benchmarks.lib.dpo_timing import synthetic_preference_dataset

    tok = AutoTokenizer.from_pretrained(model_dir)
    if pairs_dir:
        ds = datasets.load_from_disk(pairs_dir).select_columns(["prompt", "chosen", "rejected"])
        ds = ds.select(range(min(n_pairs, len(ds))))
    else:
        ds = synthetic_preference_dataset(n_pairs, prompt_tokens=None,
                                          completion_tokens=completion_tokens, tokenizer=tok)
        ds = ds.select_columns(["prompt", "chosen", "rejected"])
    ds.save_to_disk(str(out))

    def n(messages: list[dict], gen: bool = False) -> int:
        return len(tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=True,
                                           return_dict=True)["input_ids"])

    lens = []
    for row in ds:
        p = n(row["prompt"], gen=True)
        lens.append((p, n(row["prompt"] + row["chosen"]) - p, n(row["prompt"] + row["rejected"]) - p,
                     json.dumps(row["prompt"])))
    return lens


def floors(shape: Any, lens: list[tuple[int, int, int, str]], batch: int, max_length: int,
           gflops: float) -> dict[str, float]:
    """Mean floor seconds per step over the dataset's consecutive batches, with and without
    a reference forward (``shape``: the model's :class:`~benchmarks.lib.flops.ModelShape`)."""
    from benchmarks.lib.flops import floor_report

    acc: dict[str, list[float]] = {}
    for start in range(0, len(lens) - batch + 1, batch):
        rows = lens[start:start + batch]
        prompts = [min(p, max_length) for p, _, _, _ in rows] * 2
        comps = [max(0, min(p + c, max_length) - p) for p, c, _, _ in rows]
        comps += [max(0, min(p + r, max_length) - p) for p, _, r, _ in rows]
        keys = [k for _, _, _, k in rows] * 2
        groups = [keys.index(k) for k in keys]
        for ref in (True, False):
            rep = floor_report(shape, prompts, comps, gflops, reference=ref, prompt_groups=groups)
            for kind in ("padded", "unique"):
                acc.setdefault(f"{kind}{'' if ref else '_noref'}", []).append(rep[kind]["floor_s"])
    return {k: statistics.mean(v) for k, v in acc.items()}


def run_child(variant: str, a: argparse.Namespace, data: Path, model_dir: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"aad-dpo-{variant}-") as out:
        cmd = [sys.executable, __file__, "--child", variant, "--data", str(data), "--model-dir",
               model_dir, "--out", out, "--steps", str(a.steps), "--threads", str(a.threads),
               "--batch-size", str(a.batch_size), "--max-length", str(a.max_length)]
        env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "HF_HUB_OFFLINE": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    res["process_s"] = wall
    return res


def summarize(variant: str, res: dict[str, Any], seq_tokens: float, floor: dict[str, float]) -> dict[str, Any]:
    later_wall = res["wall"][1:] or res["wall"]
    later_cpu = res["cpu"][1:] or res["cpu"]
    step = statistics.median(later_wall)
    unique = floor["unique_noref" if variant == "ours_precompute" else "unique"]
    padded = floor["padded_noref" if variant == "ours_precompute" else "padded"]
    return {
        "variant": variant, "s_per_step": step, "cpu_s_per_step": statistics.median(later_cpu),
        "tokens_per_s": seq_tokens / step, "peak_rss_gib": res["peak_rss_gib"],
        "setup_s": res["setup_s"], "floor_padded_s": padded, "floor_unique_s": unique,
        "x_floor_unique": step / unique, "x_floor_padded": step / padded,
        "first_loss": res["losses"][0] if res["losses"] else None,
        "steps_timed": len(later_wall), "step_s": res["wall"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="registered name or model directory")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per variant (first is warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=1536)
    ap.add_argument("--n-pairs", type=int, default=8)
    ap.add_argument("--completion-tokens", type=int, default=300)
    ap.add_argument("--pairs", default=None, help="a saved preference dataset to use instead")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    # child mode (internal)
    ap.add_argument("--child", default=None, choices=VARIANTS)
    ap.add_argument("--data", default=None)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.child:
        child_main(a)
        return 0

    from aad_kit.training.base_model import resolve_base_model
    from benchmarks.lib.flops import ModelShape, measure_gemm_gflops

    variants = [v for v in a.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    base = resolve_base_model(a.model, progress=True)
    model_dir = str(base.path or base.source)
    from transformers import AutoConfig

    shape = ModelShape.from_config(AutoConfig.from_pretrained(model_dir), lora_r=LORA_R)
    gflops = measure_gemm_gflops(shape, threads=a.threads)
    with tempfile.TemporaryDirectory(prefix="aad-dpo-bench-") as tmp:
        data = Path(tmp) / "pairs"
        lens = build_pairs(model_dir, a.n_pairs, a.completion_tokens, data, a.pairs)
        seq_tokens = statistics.mean(2 * p + c + r for p, c, r, _ in lens) * a.batch_size
        floor = floors(shape, lens, a.batch_size, a.max_length, gflops)
        p_mean = statistics.mean(p for p, _, _, _ in lens)
        c_mean = statistics.mean((c + r) / 2 for _, c, r, _ in lens)
        print(f"model {base.name}; {len(lens)} pairs, prompt {p_mean:.0f} tokens, completions "
              f"{c_mean:.0f} tokens (mean); batch {a.batch_size}, max_length {a.max_length}, "
              f"{a.threads} thread(s); fp32 GEMM {gflops:.1f} GFLOP/s; load "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        rows = []
        for v in variants:
            res = run_child(v, a, data, model_dir)
            rows.append(summarize(v, res, seq_tokens, floor))
            r = rows[-1]
            print(f"  {v}: {r['s_per_step']:.2f} s/step (steps {[round(x, 1) for x in r['step_s']]})",
                  file=sys.stderr, flush=True)
    head = (f"{'variant':20} {'s/step':>7} {'CPU-s':>7} {'tok/s':>7} {'peak GiB':>9} "
            f"{'x unique floor':>15} {'x padded floor':>15} {'first loss':>10}")
    print(head)
    for r in rows:
        print(f"{r['variant']:20} {r['s_per_step']:7.2f} {r['cpu_s_per_step']:7.2f} "
              f"{r['tokens_per_s']:7.1f} {r['peak_rss_gib']:9.2f} {r['x_floor_unique']:15.2f} "
              f"{r['x_floor_padded']:15.2f} {r['first_loss'] if r['first_loss'] is not None else float('nan'):10.4f}")
    print(f"floors per step: unique {floor['unique']:.2f} s ({floor['unique_noref']:.2f} s without "
          f"the reference pass), padded {floor['padded']:.2f} s")
    by = {r["variant"]: r for r in rows}
    for x, y in (("ours_unshared", "plain_trl"), ("ours", "plain_trl"), ("ours", "plain_trl_defaults"),
                 ("ours_precompute", "plain_trl")):
        if x in by and y in by:
            print(f"{y} / {x}: {by[y]['s_per_step'] / by[x]['s_per_step']:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps({"gflops": gflops, "floors": floor, "rows": rows},
                                           indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
