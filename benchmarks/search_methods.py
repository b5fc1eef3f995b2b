"""Same-budget comparison of the two search methods, EoH and FunSearch, on each task.

    python benchmarks/search_methods.py [--model smollm2-135m] [--tasks ...] [--budget 64] [--seeds 0 1 2]

For every task (default setting), method and seed, one search of --budget LLM samples with
the same model, sampler settings, batch size and seed programs (FunSearch's default: the
task's template program, so neither method starts from a shipped strong heuristic). Prints
the best *generated* score after a few sample counts (the seed program's score alongside),
the valid-code rate and the samples per minute of wall time (sampling + evaluation), then
the mean over seeds per task and method. Databases go under --out: a finished run there is
reused, not re-sampled (it then shows 0 samples/min; use a fresh --out to time). The first
run also pays the model's warm-up. A task whose template has no shipped copy runs EoH
without seeds (its i1 prompt shows the template anyway). ``--json FILE`` also writes the rows
(``best`` at each of ``points``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from aad_kit.db import AlgorithmDB
from aad_kit.llm import make_sampler
from aad_kit.profiles import get_profile
from aad_kit.sandbox import Sandbox, SandboxConfig
from aad_kit.search import make_search_config, run_search_method
from aad_kit.search.funsearch import default_seed_heuristics
from aad_kit.tasks import TASK_NAMES, get_task

METHODS = ("eoh", "funsearch")


def checkpoints(budget: int, given: list[int] | None) -> list[int]:
    """Sample counts to report best-so-far at: --at, else budget/4, budget/2 and budget."""
    points = given or [max(1, budget // 4), max(1, budget // 2), budget]
    return sorted({min(max(1, int(p)), budget) for p in points})


def best_after(scores_by_index: dict[int, float], n: int) -> float:
    """Best valid generated score among samples 0 .. n-1 (NaN if none)."""
    vals = [s for i, s in scores_by_index.items() if i < n]
    return max(vals) if vals else math.nan


def _fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4g}"


def main(argv: list[str] | None = None) -> dict:
    quick = get_profile("quick")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=quick.model)
    ap.add_argument("--tasks", nargs="*", default=list(TASK_NAMES))
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--at", nargs="*", type=int, default=None, help="sample counts for best-so-far")
    ap.add_argument("--batch-size", type=int, default=quick.search_batch_size)
    ap.add_argument("--max-new-tokens", type=int, default=quick.max_new_tokens)
    ap.add_argument("--reset-period", type=int, default=None,
                    help="FunSearch samples between island resets (default: FunSearchConfig's)")
    ap.add_argument("--out", default="runs/bench-search-methods")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    sampler = make_sampler(args.model)
    print(f"model {args.model}: loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    points = checkpoints(args.budget, args.at)
    rows = []
    with Sandbox(SandboxConfig(), cache=False) as sb:  # no result cache: both pay for evaluation
        _run_all(args, sampler, sb, out, points, rows)
    _print_tables(args, points, rows)
    result = {"model": args.model, "budget": args.budget, "points": points, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _run_all(args: argparse.Namespace, sampler: object, sb: Sandbox, out: Path,
             points: list[int], rows: list[dict]) -> None:
    for name in args.tasks:
        task = get_task(name)
        seeds_programs = default_seed_heuristics(task)
        for method in args.methods:
            for seed in args.seeds:
                kw = dict(task=name, setting=task.default_setting, budget=args.budget, seed=seed,
                          batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
                if method == "eoh":
                    kw["seed_heuristics"] = tuple(s for s in seeds_programs if s != "template")
                    kw["include_seed_heuristics"] = bool(kw["seed_heuristics"])
                    kw["population_size"] = min(8, args.budget)
                elif args.reset_period:
                    kw["reset_period"] = args.reset_period
                config = make_search_config(method, **kw)
                run_id = f"bench-{name}-{method}-{args.model}-s{seed}"
                with AlgorithmDB(out / f"{name}.sqlite") as db:
                    result = run_search_method(config, sampler, db, sb, run_id=run_id, progress=False)
                    recs = db.records(run_id)
                gen = {r.sample_index: float(r.score) for r in recs
                       if r.sample_index is not None and r.sample_index >= 0 and r.ok}
                seed_best = max((float(r.score) for r in recs
                                 if r.sample_index is not None and r.sample_index < 0 and r.ok),
                                default=math.nan)
                rows.append(dict(task=name, method=method, seed=seed, seed_score=seed_best,
                                 best=[best_after(gen, n) for n in points],
                                 valid=result.valid_rate, spm=result.samples_per_minute))
                print(result.summary(), flush=True)


def _print_tables(args: argparse.Namespace, points: list[int], rows: list[dict]) -> None:
    def head(first: str) -> str:
        return f"{'task':15} {'method':9} {first:>4} {'seed prog':>9} " + " ".join(
            f"{f'best@{n}':>9}" for n in points) + f" {'valid':>6} {'samples/min':>11}"

    print("\nbest generated score after n samples (higher is better); '-' = no valid sample yet")
    print(head("seed"))
    for r in rows:
        print(f"{r['task']:15} {r['method']:9} {r['seed']:4d} {_fmt(r['seed_score']):>9} "
              + " ".join(f"{_fmt(b):>9}" for b in r["best"])
              + f" {r['valid']:6.0%} {r['spm']:11.1f}")
    if len(args.seeds) > 1:
        print("\nmean over seeds (best@n over the seeds that have a valid sample)")
        print(head("runs"))
        for name in args.tasks:
            for method in args.methods:
                sub = [r for r in rows if r["task"] == name and r["method"] == method]
                means = []
                for j in range(len(points)):
                    vals = [r["best"][j] for r in sub if not math.isnan(r["best"][j])]
                    means.append(sum(vals) / len(vals) if vals else math.nan)
                print(f"{name:15} {method:9} {len(sub):4d} {_fmt(sub[0]['seed_score']):>9} "
                      + " ".join(f"{_fmt(m):>9}" for m in means)
                      + f" {sum(r['valid'] for r in sub) / len(sub):6.0%}"
                      + f" {sum(r['spm'] for r in sub) / len(sub):11.1f}")


if __name__ == "__main__":
    main()
