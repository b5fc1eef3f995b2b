"""Evaluation cost per task and setting, in-process vs through the sandbox pool.

    python benchmarks/eval_per_setting.py [--reps 3] [--throughput-n 64] [--tasks ...]

For every non-slow setting: the median wall time of the task's template program evaluated
in-process (trusted ``task.run``) and through the sandbox (one at a time, cache off), and their
ratio. Then the pool's throughput (evaluations/second) on each task's cheapest setting with 1
and 2 workers. Each candidate is made unique (a dummy constant) so nothing is served from a
cache. Medians over ``--reps``; ratios are measured side by side in the same run.
``--json FILE`` also writes both tables (``settings`` and ``throughput`` rows).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from aad_kit.profiles import CHEAPEST_SETTING
from aad_kit.sandbox import Sandbox, SandboxConfig
from aad_kit.tasks import TASK_NAMES, get_task


def variant(code: str, i: int) -> str:
    return f"{code.rstrip()}\n\n_BENCH_VARIANT = {i}\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--throughput-n", type=int, default=64)
    ap.add_argument("--tasks", nargs="*", default=list(TASK_NAMES))
    ap.add_argument("--json", type=Path, help="also write the tables here")
    args = ap.parse_args(argv)
    result: dict = {"reps": args.reps, "throughput_n": args.throughput_n, "settings": [],
                    "throughput": []}

    print(f"{'task':15} {'setting':22} {'in-process s':>12} {'sandbox s':>10} {'ratio':>6}")
    counter = 0
    with Sandbox(SandboxConfig(workers=1, use_cache=False)) as sb:
        for name in args.tasks:
            task = get_task(name)
            fn = get_task(name).heuristics()  # noqa: F841 - loads data once, outside timing
            template_fn = {}
            exec(task.template_program, template_fn)
            for setting, s in task.settings.items():
                if s.slow:
                    continue
                task.instances(setting)
                local, boxed = [], []
                for _ in range(args.reps):
                    t0 = time.perf_counter()
                    task.run(template_fn[task.function_name], setting)
                    local.append(time.perf_counter() - t0)
                    counter += 1
                    t0 = time.perf_counter()
                    r = sb.evaluate(task, variant(task.template_program, counter), setting)
                    boxed.append(time.perf_counter() - t0)
                    assert r.ok, r.message
                lo, bo = statistics.median(local), statistics.median(boxed)
                print(f"{name:15} {setting:22} {lo:12.4f} {bo:10.4f} {bo / lo:6.2f}", flush=True)
                result["settings"].append({"task": name, "setting": setting, "in_process_s": lo,
                                           "sandbox_s": bo, "ratio": bo / lo})

    print(f"\nthroughput, {args.throughput_n} template variants per task on its cheapest setting")
    print(f"{'task':15} {'setting':16} {'1 worker /s':>12} {'2 workers /s':>13} {'speed-up':>9}")
    for name in args.tasks:
        task, setting = get_task(name), CHEAPEST_SETTING[name]
        rates = []
        for workers in (1, 2):
            with Sandbox(SandboxConfig(workers=workers, use_cache=False)) as sb:
                sb.evaluate(task, variant(task.template_program, -1), setting)  # warm the workers
                jobs = [(task, variant(task.template_program, counter + i), setting)
                        for i in range(args.throughput_n)]
                counter += args.throughput_n
                t0 = time.perf_counter()
                results = sb.evaluate_many(jobs)
                rates.append(len(jobs) / (time.perf_counter() - t0))
                assert all(r.ok for r in results)
        print(f"{name:15} {setting:16} {rates[0]:12.1f} {rates[1]:13.1f} {rates[1] / rates[0]:9.2f}")
        result["throughput"].append({"task": name, "setting": setting, "workers_1_per_s": rates[0],
                                     "workers_2_per_s": rates[1], "speedup": rates[1] / rates[0]})
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
