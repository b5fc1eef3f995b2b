"""data/heuristics/README.md lists every shipped heuristic with its source."""

from __future__ import annotations

from aad_kit.tasks import TASK_NAMES, get_task
from aad_kit.tasks.base import data_dir


def test_readme_lists_every_shipped_heuristic_and_its_source():
    readme = (data_dir() / "heuristics" / "README.md").read_text()
    for name in TASK_NAMES:
        for h in get_task(name).heuristics().values():
            assert f"| `{h.name}` | {h.source} |" in readme, (name, h.name)
