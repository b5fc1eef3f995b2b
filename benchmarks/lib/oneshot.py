"""One candidate in a fresh interpreter, with the sandbox's isolation: a benchmark baseline.

The pool keeps warm worker interpreters and forks one child per candidate. Frameworks such as
LLM4AD and EoH start a fresh Python process per candidate instead. ``benchmarks/
eval_executors.py`` compares the two with *the same* guarantees; this module is the fresh
process. Started (by :func:`command`) with the workers' clean environment in a temp dir of
its own, it

1. enters a fresh network namespace (:func:`isolation.enter_network_namespace`),
2. reads one job (the pool's job message plus ``switch_uid`` / ``keep_read``) from stdin,
   imports what the task needs and builds the setting's instances,
3. writes a "ready" line (its pid-derived candidate uid, RSS, CPU used, phase timestamps on
   the monotonic clock) to the fd named on its command line, then
4. becomes the candidate process itself by calling the worker's own child code
   (``worker._child_main``: new session, fds, rlimits, uid switch, runtime guard, captured
   output, one JSON result line on stdout).

The parent enforces the timeout and classifies a death with the worker's own functions.

``--probe`` instead builds a real :class:`~aad_kit.sandbox.worker.Worker` and prints its hello
(plus ``keep_read``): what uid switch and network isolation a worker gets on this machine.

It imports only what a candidate process needs (worker, isolation, guard, policy, tasks,
numpy): :mod:`aad_kit.sandbox`'s ``__init__`` loads the pool and its cache only on use, so no
bootstrapping around it is needed.
"""

from __future__ import annotations

import json
import os
import sys
import time

from aad_kit.sandbox import isolation
from aad_kit.sandbox.worker import Worker, _child_main


def command(*args: str) -> list[str]:
    """The argv that starts a one-shot interpreter (``ready_fd``, or ``--probe``); it needs the
    repository root on its path (the sandbox workers' environment has it)."""
    main_call = "import sys\nfrom benchmarks.lib.oneshot import main\nmain(sys.argv[1:])\n"
    return [sys.executable, "-c", main_call, *args]


def _cpu_used() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _probe_main(switch_uid: bool) -> None:
    worker = Worker(switch_uid=switch_uid)
    worker.send({**worker.hello(), "keep_read": worker.keep_read})


def _oneshot_main(ready_fd: int) -> None:
    t_body = time.monotonic()
    netns = isolation.enter_network_namespace()  # first, while single-threaded
    t_netns = time.monotonic()
    job = json.loads(sys.stdin.buffer.readline())
    import random

    import numpy as np

    import aad_kit.sandbox.guard  # noqa: F401 - the candidate's namespace is built from it
    from aad_kit.tasks import get_task

    random.seed(0)  # pay the lazy initialisation before the candidate, as the worker does
    np.random.seed(0)
    t_imports = time.monotonic()
    task = get_task(job["task"])
    setting = task.setting(job["setting"])
    instances = task.build_instances(setting)
    t_instances = time.monotonic()
    uid = isolation.UID_BASE + os.getpid() if job.get("switch_uid") else None
    result_fd = os.dup(1)
    cpu = _cpu_used()
    ready = {
        "event": "ready",
        "netns": netns,
        "uid": uid,
        "rss": isolation.rss_bytes(),
        "cpu_s": cpu,
        "t_body": t_body,
        "t_netns": t_netns,
        "t_imports": t_imports,
        "t_ready": t_instances,
    }
    os.write(ready_fd, (json.dumps(ready) + "\n").encode())
    os.close(ready_fd)
    # the candidate's CPU budget starts now, as it does in a freshly forked child
    _child_main(
        job, task, setting, instances, result_fd, uid, bool(job.get("keep_read", True)),
        cpu_offset_s=cpu,
    )  # never returns


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if "--probe" in args:
        _probe_main(switch_uid="--no-switch-uid" not in args)
    else:
        _oneshot_main(int(args[0]))


if __name__ == "__main__":
    main()
