"""Tables the notebooks show: settings, and shipped baselines scored on them."""

from __future__ import annotations

import time
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


def baseline_table(task_settings: dict[str, list[str]]) -> pd.DataFrame:
    """Score every shipped heuristic in-process on the given settings (trusted code)."""
    rows = []
    for task_name, settings in task_settings.items():
        task = get_task(task_name)
        for h in task.heuristics().values():
            fn = h.function(task.function_name)
            for setting in settings:
                task.instances(setting)  # build instances outside the timed region
                t0 = time.perf_counter()
                m = task.run(fn, setting)
                rows.append({
                    "task": task.name, "setting": setting, "heuristic": h.name,
                    "metric": m.metric, "score": m.score,
                    "runtime_s": time.perf_counter() - t0, "source": h.source,
                })
    return pd.DataFrame(rows)
