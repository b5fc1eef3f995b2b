"""The algorithm-design tasks: one module each, one registry here.

Tasks are imported on first use, so a process that evaluates bin packing never pays for
building TSP instances. Besides the registered names, ``get_task`` accepts
``"package.module:ClassName"`` so users (and tests) can plug in a task of their own; the
sandbox resolves task names the same way in its worker processes.
"""

from __future__ import annotations

import functools
import importlib

from aad_kit.tasks.base import Heuristic, InvalidOutput, Measurement, Setting, Task

REGISTRY: dict[str, str] = {
    "admissible_set": "aad_kit.tasks.admissible_set:AdmissibleSetTask",
    "bin_packing": "aad_kit.tasks.bin_packing:BinPackingTask",
    "tsp_construct": "aad_kit.tasks.tsp:TSPConstructTask",
    "cvrp_construct": "aad_kit.tasks.cvrp:CVRPConstructTask",
}
TASK_NAMES: tuple[str, ...] = tuple(REGISTRY)


@functools.cache
def _load(spec: str) -> Task:
    module_name, _, class_name = spec.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    task = cls()
    if not isinstance(task, Task):
        raise TypeError(f"{spec} is not a aad_kit.tasks.Task subclass")
    return task


def get_task(name: str | Task) -> Task:
    """The task called ``name`` (registered name or ``module:Class``); clear error otherwise."""
    if isinstance(name, Task):
        return name
    if name in REGISTRY:
        return _load(REGISTRY[name])
    if ":" in name:
        return _load(name)
    raise KeyError(f"unknown task {name!r}; choose one of: {', '.join(REGISTRY)}")


def task_ref(task: str | Task) -> str:
    """The string that names ``task`` in another process (registered name or module:Class)."""
    if isinstance(task, str):
        return task
    if task.name in REGISTRY:
        return task.name
    return f"{type(task).__module__}:{type(task).__qualname__}"


__all__ = [
    "REGISTRY",
    "TASK_NAMES",
    "get_task",
    "task_ref",
    "Task",
    "Setting",
    "Measurement",
    "InvalidOutput",
    "Heuristic",
]
