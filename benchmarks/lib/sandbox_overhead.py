"""Overhead of the sandbox on a trivial candidate: ``python -m benchmarks.lib.sandbox_overhead``
(from the repository root).

Compares, per evaluation of a one-line candidate on a one-number task:

- in-process: ``task.run(fn)`` on an already-compiled function, and compile + exec + run;
- the sandbox (fork of a warm worker, rlimits, uid switch, JSON over pipes), one at a time;
- ``subprocess.run([sys.executable, "-c", ...])`` per candidate (fresh interpreter + numpy);

and the sandbox's throughput (evaluations/second) with 1 and 2 workers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]  # the repository root: TrivialTask's import path
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from aad_kit.tasks.base import InvalidOutput, Measurement, Setting, Task  # noqa: E402

TRIVIAL = "import numpy as np\n\ndef f(x):\n    return x + 1.0\n"


class TrivialTask(Task):
    name = "sandbox_bench"
    function_name = "f"
    signature = "def f(x: float) -> float:"
    template_program = TRIVIAL
    description = "f(1.0); the score is the value."
    metric_name = "f(1)"
    metric_lower_is_better = False
    settings = {"one": Setting("one", {"x": 1.0}, "a single number", timeout_s=10.0)}
    default_setting = "one"

    def build_instances(self, setting: Setting) -> Any:
        return setting.params["x"]

    def measure(self, fn: Callable[..., Any], instances: Any, setting: Setting) -> Measurement:
        y = fn(instances)
        if not isinstance(y, float):
            raise InvalidOutput("expected a float")
        return Measurement(metric=y, score=y)


REF = (f"{__name__}:TrivialTask" if __name__ != "__main__"
       else "benchmarks.lib.sandbox_overhead:TrivialTask")


def _variant(i: int) -> str:
    return f"{TRIVIAL}\n_v = {i}\n"


def _median_ms(fn: Callable[[int], Any], n: int) -> float:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def run(n: int = 200, n_subprocess: int = 20, n_throughput: int = 400) -> dict[str, float]:
    from aad_kit.sandbox import Sandbox, SandboxConfig
    from aad_kit.tasks import get_task

    task = get_task(REF)
    out: dict[str, float] = {}
    ns: dict[str, Any] = {}
    exec(compile(TRIVIAL, "<bench>", "exec"), ns)
    fn = ns["f"]
    out["in_process_run_ms"] = _median_ms(lambda i: task.run(fn), n)

    def exec_and_run(i: int) -> None:
        g: dict[str, Any] = {}
        exec(compile(_variant(i), "<bench>", "exec"), g)
        task.run(g["f"])

    out["in_process_exec_run_ms"] = _median_ms(exec_and_run, n)

    with Sandbox(SandboxConfig(workers=1), cache=False) as sb:
        sb.evaluate(REF, _variant(-1))  # start the worker, build instances
        out["sandbox_fork_ms"] = _median_ms(lambda i: sb.evaluate(REF, _variant(i)), n)

    script = (
        "import numpy, sys\n"
        "from aad_kit.tasks import get_task\n"
        f"t = get_task({REF!r})\n"
        "g = {}\nexec(sys.stdin.read(), g)\nprint(t.run(g['f']).score)\n"
    )
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONPATH=path)
    out["subprocess_run_ms"] = _median_ms(
        lambda i: subprocess.run(
            [sys.executable, "-c", script], input=_variant(i), text=True, capture_output=True,
            env=env, check=True,
        ),
        n_subprocess,
    )

    for workers in (1, 2):
        with Sandbox(SandboxConfig(workers=workers), cache=False) as sb:
            sb.evaluate_many([(REF, _variant(-1 - k), None) for k in range(2 * workers)])
            jobs = [(REF, _variant(10_000 * workers + i), None) for i in range(n_throughput)]
            t0 = time.perf_counter()
            results = sb.evaluate_many(jobs)
            wall = time.perf_counter() - t0
            assert all(r.ok for r in results), results[0]
            out[f"throughput_{workers}_workers_per_s"] = n_throughput / wall
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200)
    parser.add_argument("--n-subprocess", type=int, default=20)
    parser.add_argument("--n-throughput", type=int, default=400)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = run(n=args.n, n_subprocess=args.n_subprocess, n_throughput=args.n_throughput)
    for key, value in result.items():
        print(f"{key:34s} {value:10.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
