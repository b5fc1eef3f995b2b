"""Sandbox configuration and the default import allow-list."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# Modules a candidate may import (top-level names; their submodules come with them, except
# the blocked entry points listed in :mod:`aad_kit.sandbox.policy`). All are pure computation:
# none opens files, sockets or processes through its public API.
#
# This is the one source of truth: the prompts' answer format (:data:`aad_kit.prompts.
# ANSWER_FORMAT`) lists exactly these modules, in this order (most useful first).
#
# ``time`` is included on purpose: LLM-written heuristics often keep a time budget
# (``time.perf_counter()``), and rejecting them all would waste samples. Sleeping only burns the
# candidate's own wall-clock budget. The price is that a time-dependent heuristic is not
# deterministic; the sandbox makes no promise for those.
#
# ``scipy`` is left out on purpose, although models often reach for it: it would be a new heavy
# dependency of the kit, and its large API (file readers/writers in ``scipy.io``, compiled
# extensions, ``scipy.LowLevelCallable``) is a much larger surface for the sandbox to guard.
# The prompt names the allowed modules, so a model that follows it does not import scipy.
ALLOWED_IMPORTS_ORDERED: tuple[str, ...] = (
    "numpy",
    "math",
    "cmath",
    "random",
    "itertools",
    "functools",
    "heapq",
    "collections",
    "statistics",
    "operator",
    "bisect",
    "typing",
    "dataclasses",
    "copy",
    "fractions",
    "decimal",
    "numbers",
    "array",
    "re",
    "string",
    "enum",
    "abc",
    "time",
)
DEFAULT_ALLOWED_IMPORTS: frozenset[str] = frozenset(ALLOWED_IMPORTS_ORDERED)

EXECUTORS: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and policy of a :class:`~aad_kit.sandbox.Sandbox`.

    ``enforce_policy=False`` turns off *both* Python-level layers (the static AST check of
    imports/names and the runtime guard: restricted builtins, import guard, module proxies) so
    that tests can show the process-level layers (rlimits, unprivileged uid, network namespace,
    clean environment, process-group/uid clean-up) hold on their own. Syntax errors and a
    missing function are still reported: they are not policy.
    """

    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    timeout_s: float | None = None  # None: the setting's own ``timeout_s`` x ``timeout_scale``
    timeout_scale: float = 1.0  # multiplies each setting's own limit (a profile's knob)
    memory_mb: int = 1024  # address space the candidate may add on top of the worker's
    max_output_bytes: int = 64 * 1024  # captured stdout+stderr kept per candidate
    allowed_imports: frozenset[str] = DEFAULT_ALLOWED_IMPORTS
    enforce_policy: bool = True
    cache_path: str | None = None  # sqlite file backing the result cache (None: memory only)
    use_cache: bool = True
    grace_s: float = 5.0  # extra wall time the parent grants a worker before replacing it
    setup_timeout_s: float = 600.0  # worker start-up + building a setting's instances
    max_processes: int = 32  # RLIMIT_NPROC for the candidate's unprivileged uid
    # As root, run each candidate under an unprivileged uid of its own (see isolation.py).
    # Off only to test the other layers without it; ignored when not root.
    switch_uid: bool = True
    # Where the workers run: "local" (processes of this machine) or "ray" (one Ray actor per
    # worker, each owning the same worker process, so a Ray cluster of CPU machines evaluates).
    executor: str = "local"
    # executor="ray": the cluster to join ("auto", "ray://host:10001"); None: $RAY_ADDRESS, or
    # a Ray instance of this machine started for the sandbox.
    ray_address: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}")
        if not self.timeout_scale > 0:
            raise ValueError("timeout_scale must be > 0")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.memory_mb < 16:
            raise ValueError("memory_mb must be at least 16")
        object.__setattr__(self, "allowed_imports", frozenset(self.allowed_imports))
