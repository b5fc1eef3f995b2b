"""Loads the shipped baseline programs from ``data/heuristics/<task>/*.py``.

Each file is a complete program defining the task's function. Its first comment lines
(``# name: ...``, ``# source: ...``) record what it is and where it comes from.
"""

from __future__ import annotations

from aad_kit.tasks.base import Heuristic, data_dir


def _header_field(code: str, key: str) -> str | None:
    for line in code.splitlines():
        if not line.startswith("#"):
            break
        head, _, value = line[1:].partition(":")
        if head.strip().lower() == key:
            return value.strip()
    return None


def load_heuristics(task_name: str) -> dict[str, Heuristic]:
    folder = data_dir() / "heuristics" / task_name
    if not folder.is_dir():
        raise FileNotFoundError(f"no shipped heuristics for task {task_name!r} in {folder}")
    found: dict[str, Heuristic] = {}
    for path in sorted(folder.glob("*.py")):
        code = path.read_text(encoding="utf-8")
        source = _header_field(code, "source")
        if not source:
            raise ValueError(f"{path} lacks a '# source: ...' header line")
        name = _header_field(code, "name") or path.stem
        found[name] = Heuristic(name=name, task=task_name, code=code, source=source, path=path)
    return found
