"""Tables the notebooks show (baseline scores come from :mod:`aad_kit.scoring`)."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from aad_kit.tasks import get_task


def settings_table(tasks: Iterable[str]) -> pd.DataFrame:
    rows = []
    for name in tasks:
        task = get_task(name)
        for s in task.settings.values():
            rows.append({
                "task": task.name,
                "setting": s.name,
                "default": s.name == task.default_setting,
                "slow": s.slow,
                "timeout_s": s.timeout_s,
                "params": dict(s.params),
                "description": s.description,
            })
    return pd.DataFrame(rows)
