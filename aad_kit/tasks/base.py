"""The task contract every algorithm-design task follows.

A task is what the LLM is asked to improve: one Python function (``function_name``) with a
fixed ``signature``, a ``template_program`` to start from, a plain-language ``description``
for prompts, and a deterministic scorer over named ``settings``. Settings are the related
problem variants (sizes, distributions, capacities) used to test generalisation.

Two ways to score:

- :meth:`Task.run` calls a *trusted* Python callable in this process (shipped heuristics,
  tests, notebooks explaining the metric).
- :func:`aad_kit.sandbox.evaluate` (``evaluate(task, code, setting)``) scores *untrusted source
  code* in the sandbox; this is what the search and every later stage use.

Both end in :meth:`Task.measure`, so a score never depends on which path produced it.

Tasks are pure: this package never imports the sandbox (the sandbox imports tasks, in its
workers too). :meth:`Task.evaluate` remains as a shorthand for a sandbox the caller holds.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from aad_kit.result import EvalResult


class InvalidOutput(Exception):
    """The candidate returned something illegal: wrong type/shape, NaN, an illegal move."""


@dataclass(frozen=True)
class Setting:
    """One problem variant of a task, e.g. bin packing with 5k Weibull items and capacity 100."""

    name: str
    params: Mapping[str, Any]
    description: str
    timeout_s: float = 30.0  # wall-clock budget for one candidate on this setting
    slow: bool = False  # minutes or more per candidate: excluded from quick profiles and tests


@dataclass(frozen=True)
class Measurement:
    """What :meth:`Task.measure` returns for a valid candidate."""

    metric: float  # natural unit (set size, excess %, tour length)
    score: float  # higher is better
    details: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable extras

    def __post_init__(self) -> None:
        if not (math.isfinite(self.metric) and math.isfinite(self.score)):
            raise InvalidOutput(f"non-finite result: metric={self.metric}, score={self.score}")


def data_dir() -> Path:
    """The repository's ``data/`` folder (the kit is used from a clone / editable install)."""
    import os

    override = os.environ.get("AAD_KIT_DATA")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "data"


@dataclass(frozen=True)
class Heuristic:
    """A shipped, hand-written (or published) program for a task, with its provenance."""

    name: str
    task: str
    code: str
    source: str  # where it comes from (paper / repository / textbook)
    path: Path

    def function(self, function_name: str) -> Callable[..., Any]:
        namespace: dict[str, Any] = {}
        exec(compile(self.code, str(self.path), "exec"), namespace)  # trusted, shipped code
        return namespace[function_name]


class Task(ABC):
    """Base class: subclasses fill the class attributes and the two abstract methods."""

    name: ClassVar[str]
    function_name: ClassVar[str]
    signature: ClassVar[str]  # the ``def`` line the LLM must keep
    template_program: ClassVar[str]  # a complete, valid, simple program (imports + function)
    description: ClassVar[str]  # the task as a prompt would explain it
    metric_name: ClassVar[str]  # e.g. "excess bins over L1 bound (%)"
    metric_lower_is_better: ClassVar[bool]
    settings: ClassVar[dict[str, Setting]]
    default_setting: ClassVar[str]

    # ---- to implement -------------------------------------------------------------------
    @abstractmethod
    def build_instances(self, setting: Setting) -> Any:
        """Deterministically build the problem instances of ``setting`` (cached per process)."""

    @abstractmethod
    def measure(self, fn: Callable[..., Any], instances: Any, setting: Setting) -> Measurement:
        """Score ``fn`` on ``instances``; raise :class:`InvalidOutput` on illegal output."""

    # ---- provided -----------------------------------------------------------------------
    def setting(self, setting: str | Setting | None = None) -> Setting:
        if isinstance(setting, Setting):
            return setting
        name = setting or self.default_setting
        try:
            return self.settings[name]
        except KeyError:
            raise KeyError(
                f"unknown setting {name!r} for task {self.name!r}; "
                f"choose one of: {', '.join(self.settings)}"
            ) from None

    def instances(self, setting: str | Setting | None = None) -> Any:
        s = self.setting(setting)
        if self.settings.get(s.name) is s:
            return _cached_instances(self, s.name)
        return self.build_instances(s)  # a user-made Setting: built each time, not cached

    def run(self, fn: Callable[..., Any], setting: str | Setting | None = None) -> Measurement:
        """Score a trusted callable in-process (no sandbox)."""
        s = self.setting(setting)
        return self.measure(fn, self.instances(s), s)

    def evaluate(
        self, code: str, setting: str | Setting | None = None, *, sandbox: Any = None
    ) -> EvalResult:
        """Score untrusted source code in ``sandbox`` (an :class:`aad_kit.sandbox.Sandbox`, or
        anything with its ``evaluate(task, code, setting)``). Tasks do not import the sandbox,
        so there is no default here: :func:`aad_kit.sandbox.evaluate` is the entry point that
        falls back to the shared sandbox."""
        if sandbox is None:
            raise TypeError(
                "Task.evaluate needs sandbox=...; tasks do not import the sandbox. Use "
                "aad_kit.sandbox.evaluate(task, code, setting) for the shared default sandbox"
            )
        return sandbox.evaluate(self, code, self.setting(setting).name)

    def heuristics(self) -> dict[str, Heuristic]:
        """The shipped baseline programs in ``data/heuristics/<task>/``."""
        from aad_kit.tasks.heuristics import load_heuristics

        return load_heuristics(self.name)

    def __repr__(self) -> str:
        return f"<Task {self.name}: {len(self.settings)} settings, default {self.default_setting}>"


@functools.lru_cache(maxsize=32)
def _cached_instances(task: Task, setting_name: str) -> Any:
    return task.build_instances(task.settings[setting_name])
