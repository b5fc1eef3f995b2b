"""A tiny task for the sandbox tests: instant to evaluate, easy to reason about.

The candidate writes ``f(x: float) -> float``; the metric is the mean of ``f`` over the
setting's numbers and the score equals the metric. ``f`` must return a finite real number
(``bool`` and non-numbers are invalid output). Referenced as
``"tests.sandbox_fixture_task:FixtureTask"`` so sandbox workers can import it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from aad_kit.tasks.base import InvalidOutput, Measurement, Setting, Task

REF = "tests.sandbox_fixture_task:FixtureTask"

TEMPLATE = '''import numpy as np


def f(x: float) -> float:
    """Twice x."""
    return float(np.sum([x, x]))
'''


class FixtureTask(Task):
    name = "sandbox_fixture"
    function_name = "f"
    signature = "def f(x: float) -> float:"
    template_program = TEMPLATE
    description = "Return a number for each x; the score is the mean of the returned numbers."
    metric_name = "mean f(x)"
    metric_lower_is_better = False
    settings = {
        "small": Setting("small", {"xs": (1.0, 2.0, 3.0, 4.0)}, "four numbers", timeout_s=5.0),
        "other": Setting("other", {"xs": (10.0, 20.0)}, "two other numbers", timeout_s=5.0),
    }
    default_setting = "small"

    def build_instances(self, setting: Setting) -> Any:
        return list(setting.params["xs"])

    def measure(self, fn: Callable[..., Any], instances: Any, setting: Setting) -> Measurement:
        values = []
        for x in instances:
            y = fn(x)
            if isinstance(y, bool) or not isinstance(y, (int, float)):
                raise InvalidOutput(f"f({x}) returned {type(y).__name__}, expected a float")
            y = float(y)
            if not math.isfinite(y):
                raise InvalidOutput(f"f({x}) returned a non-finite value {y}")
            values.append(y)
        mean = sum(values) / len(values)
        return Measurement(metric=mean, score=mean, details={"n": len(values)})
