"""The one sandbox for untrusted generated code.

Layers, outermost first (each is tested on its own by ``tests/test_sandbox_*.py``):

1. :mod:`~aad_kit.sandbox.policy`: a static check in the parent (syntax, the task's function,
   import allow-list, blocked builtins/dunders/frame attributes/numpy file I/O). Rejected code
   never reaches a process.
2. :mod:`~aad_kit.sandbox.guard`: the candidate executes with restricted builtins, an import
   guard and read-only module proxies, which catch what static analysis cannot see.
3. :mod:`~aad_kit.sandbox.worker`: persistent worker interpreters (fresh ``python -m``, clean
   environment, own temp dir, own network namespace) fork one child per candidate, with rlimits
   (address space, CPU, file size 0, processes, files), an unprivileged uid of its own when the
   worker is root, a wall-clock timeout and clean-up of every process it leaves behind.
4. :mod:`~aad_kit.sandbox.pool`: the parent guards each worker with timeout + grace, replaces
   a worker that dies or hangs, caches results (:mod:`~aad_kit.sandbox.cache`), and spreads a
   batch over all workers.

This is defence in depth on one Linux host, not a virtual machine: see the module docs of
:mod:`~aad_kit.sandbox.isolation` for exactly what each layer does and does not stop.
Known gaps: same kernel (no seccomp, no mount namespace, no cgroup); a candidate that gets past
the Python layers can read world-readable files (every file, where the worker has to keep
CAP_DAC_READ_SEARCH, see ``sandbox_info()["privileges"]``), see other processes' command
lines in /proc, create empty files in world-writable directories and reach filesystem Unix
sockets; the memory cap is per process; and since the candidate shares a process with
``task.measure``, such a candidate can forge its own score (the OS layers protect the host,
not the score).

Importing this package is cheap: its names are loaded from their modules on first use, so a
process that needs only the worker side (``python -m aad_kit.sandbox.worker``, a benchmark's
process-per-candidate executor) imports the worker, guard, policy and tasks, not the pool and
its cache. :func:`evaluate` is the one entry point that scores untrusted code for a task
(:mod:`aad_kit.tasks` does not import the sandbox).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from aad_kit.sandbox.cache import ResultCache, cache_key
    from aad_kit.sandbox.config import DEFAULT_ALLOWED_IMPORTS, SandboxConfig
    from aad_kit.sandbox.policy import PolicyViolation, check_code
    from aad_kit.sandbox.pool import (
        Sandbox,
        default_sandbox,
        evaluate,
        evaluate_many,
        sandbox_info,
    )

_HOME = {  # public name -> the module that defines it
    "ResultCache": "cache",
    "cache_key": "cache",
    "DEFAULT_ALLOWED_IMPORTS": "config",
    "SandboxConfig": "config",
    "PolicyViolation": "policy",
    "check_code": "policy",
    "Sandbox": "pool",
    "default_sandbox": "pool",
    "evaluate": "pool",
    "evaluate_many": "pool",
    "sandbox_info": "pool",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


__all__ = [
    "DEFAULT_ALLOWED_IMPORTS",
    "PolicyViolation",
    "ResultCache",
    "Sandbox",
    "SandboxConfig",
    "cache_key",
    "check_code",
    "default_sandbox",
    "evaluate",
    "evaluate_many",
    "sandbox_info",
]
