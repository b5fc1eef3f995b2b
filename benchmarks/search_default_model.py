"""A short EoH search with a real model on each task: samples/minute, valid rate, best score.

    python benchmarks/search_default_model.py [--model smollm2-135m] [--budget 16] [--tasks ...]

Reports, per task (default setting): LLM samples per minute of wall time (sampling +
evaluation), the valid-code rate of the generated samples, and the best generated score next
to the best shipped baseline (seed heuristics are in the population but not counted as
generated). Writes the databases under --out so the answers can be inspected; ``--json FILE``
also writes the table (one row per task).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from aad_kit.db import AlgorithmDB
from aad_kit.llm import make_sampler
from aad_kit.profiles import get_profile
from aad_kit.sandbox import Sandbox, SandboxConfig
from aad_kit.search import SearchConfig, run_search
from aad_kit.tasks import TASK_NAMES, get_task


def main(argv: list[str] | None = None) -> dict:
    quick = get_profile("quick")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=quick.model)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=quick.search_batch_size)
    ap.add_argument("--max-new-tokens", type=int, default=quick.max_new_tokens)
    ap.add_argument("--tasks", nargs="*", default=list(TASK_NAMES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-search")
    ap.add_argument("--json", type=Path, help="also write the table here")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    sampler = make_sampler(args.model)
    print(f"model {args.model}: loaded in {time.perf_counter() - t0:.1f} s; {sampler.info().get('dtype')}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.tasks:
        task = get_task(name)
        config = SearchConfig(task=name, setting=task.default_setting, budget=args.budget,
                              batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                              seed=args.seed)
        with Sandbox(SandboxConfig()) as sb, AlgorithmDB(out / f"{name}.sqlite") as db:
            result = run_search(config, sampler, db, sb, run_id=f"bench-{name}-{args.model}-s{args.seed}",
                                progress=False)
            df = db.to_dataframe(result.run_id)
        gen = df[df["sample_index"] >= 0]
        seeds = df[(df["operator"] == "seed") & (df["status"] == "ok")]
        valid = gen[gen["status"] == "ok"]
        rows.append((name, task.default_setting, len(gen), result.samples_per_minute,
                     len(valid) / max(1, len(gen)), valid["score"].max() if len(valid) else float("nan"),
                     seeds["score"].max(), gen["status"].value_counts().to_dict()))
        print(result.summary(), flush=True)
    print(f"\n{'task':15} {'setting':16} {'samples':>7} {'samples/min':>11} {'valid':>6} "
          f"{'best generated':>14} {'best baseline':>13}  statuses")
    for r in rows:
        print(f"{r[0]:15} {r[1]:16} {r[2]:7d} {r[3]:11.1f} {r[4]:6.0%} {r[5]:14.4f} {r[6]:13.4f}  {r[7]}")
    keys = ("task", "setting", "samples", "samples_per_min", "valid_rate", "best_generated",
            "best_baseline", "statuses")
    result = {"model": args.model, "budget": args.budget,
              "rows": [dict(zip(keys, (*r[:3], float(r[3]), float(r[4]), float(r[5]), float(r[6]),
                                       {str(k): int(v) for k, v in r[7].items()}), strict=True))
                       for r in rows]}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
