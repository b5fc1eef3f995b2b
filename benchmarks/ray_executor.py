"""Evaluation throughput: the sandbox's Ray executor against its local pool, on this machine.

What it answers (issue 16): what a candidate costs when its worker is a Ray actor instead of a
process of the parent, so that the wall time of a cluster run can be estimated. Both executors
get the same distinct candidates (real programs first, then variants: the ones
``benchmarks/eval_executors.py`` builds) with the result cache off, the same limits and the
same worker count; the order alternates between repetitions; every repetition's statuses and
scores must agree across executors. Start-up (a fresh local Ray instance, the actors, their
first worker) is timed apart from the steady state.

    .venv/bin/python benchmarks/ray_executor.py --tasks bin_packing tsp_construct --n 100 --reps 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aad_kit.profiles import CHEAPEST_SETTING  # noqa: E402
from aad_kit.sandbox import Sandbox, SandboxConfig  # noqa: E402
from aad_kit.teacher import _machine  # noqa: E402 - the CPU a timing was taken on
from benchmarks.eval_executors import DEFAULT_RUNS_DIR, _key, _warm_jobs, build_candidates  # noqa: E402

EXECUTORS = ("local", "ray")


def measure(task: str, setting: str, jobs: Sequence[tuple[str, str, str]], workers: int,
            reps: int) -> dict[str, Any]:
    """Throughput of both executors on ``jobs`` (``reps`` alternating runs) and their start-up."""
    import ray

    sandboxes: dict[str, Sandbox] = {}
    startup: dict[str, float] = {}
    try:
        for name in EXECUTORS:
            t0 = time.perf_counter()
            sb = Sandbox(SandboxConfig(workers=workers, use_cache=False, executor=name), cache=False)
            sb.evaluate_many(_warm_jobs(task, setting, 2 * workers))  # every worker started
            startup[name] = time.perf_counter() - t0
            sandboxes[name] = sb
        walls: dict[str, list[float]] = {e: [] for e in EXECUTORS}
        mismatches = 0
        reference = None
        for rep in range(reps):
            got = {}
            for name in (EXECUTORS if rep % 2 == 0 else EXECUTORS[::-1]):
                t0 = time.perf_counter()
                got[name] = [_key(r) for r in sandboxes[name].evaluate_many(jobs)]
                walls[name].append(time.perf_counter() - t0)
            reference = reference or got["local"]
            mismatches += sum(a != b or a != r for a, b, r in zip(got["local"], got["ray"], reference,
                                                                   strict=True))
        nodes = sorted({w["node"] for w in sandboxes["ray"].stats()["workers"]})
    finally:
        for sb in sandboxes.values():
            sb.close()
        if ray.is_initialized():  # the next row starts its own, as a user's first call would
            ray.shutdown()
    local_s, ray_s = statistics.median(walls["local"]), statistics.median(walls["ray"])
    n = len(jobs)
    return {
        "task": task, "setting": setting, "workers": workers, "n": n, "reps": reps,
        "local_per_s": n / local_s, "ray_per_s": n / ray_s, "ray_over_local": local_s / ray_s,
        # extra wall time a candidate holds a worker for under Ray (the round trip, serialising)
        "overhead_ms_per_candidate": 1000 * (ray_s - local_s) * workers / n,
        "local_walls_s": walls["local"], "ray_walls_s": walls["ray"],
        "startup_s": startup, "mismatches": mismatches, "ray_nodes": nodes,
    }


def run(tasks: Sequence[str], n: int, reps: int, workers: Sequence[int], runs_dir: Path | None,
        max_run_s: float | None) -> dict[str, Any]:
    rows = []
    for task in tasks:
        setting = CHEAPEST_SETTING[task]
        candidates, notes = build_candidates(task, setting, n, runs_dir, max_run_s=max_run_s,
                                             workers=max(workers))
        jobs = [(task, c.code, setting) for c in candidates]
        for w in workers:
            row = measure(task, setting, jobs, w, reps)
            row["candidates"] = {"real": notes["real"], "variants": notes["variants"]}
            rows.append(row)
            print(f"{task:15s} {setting:10s} w={w} n={row['n']:4d}  local {row['local_per_s']:7.1f}/s"
                  f"  ray {row['ray_per_s']:7.1f}/s  ray/local {row['ray_over_local']:.2f}"
                  f"  overhead {row['overhead_ms_per_candidate']:6.1f} ms/candidate"
                  f"  start-up local {row['startup_s']['local']:.1f} s, ray {row['startup_s']['ray']:.1f} s"
                  f"  mismatches {row['mismatches']}", flush=True)
    return {"machine": _machine(), "rows": rows, "mismatches": sum(r["mismatches"] for r in rows)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["bin_packing", "tsp_construct"])
    parser.add_argument("--n", type=int, default=100, help="distinct candidates per task")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR,
                        help="a run whose database gives real programs (missing: shipped ones)")
    parser.add_argument("--max-run-s", type=float, default=1.0,
                        help="leave out programs slower than this (they would only time themselves)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    m = _machine()
    print(f"CPU: {m.get('cpu')}, {m['cpu_count']} cores, load {m['loadavg'][0]:.2f}", flush=True)
    report = run(args.tasks, args.n, args.reps, args.workers,
                 args.runs_dir if args.runs_dir and args.runs_dir.exists() else None, args.max_run_s)
    print(f"status/score mismatches between the executors: {report['mismatches']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
