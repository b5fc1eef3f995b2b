"""Evaluation of tuned models: the generalisation study and its statistics.

* :mod:`~aad_kit.evaluation.generalisation`: base vs tuned on the training setting, held-out
  settings and other tasks (:func:`run_generalisation`, :func:`summarize`,
  :func:`compare_models`, the optional same-budget search :func:`run_search_comparison`): the
  facade over ``grid``, ``model_specs``, ``storage``, ``runner``, ``metrics`` and
  ``search_comparison``.
* :mod:`~aad_kit.evaluation.stats`: seeded percentile-bootstrap intervals.
* :mod:`~aad_kit.evaluation.plots`: the study's figures (imported on use: matplotlib).
"""

from __future__ import annotations

from aad_kit.evaluation import stats
from aad_kit.evaluation.generalisation import (
    ROLES,
    SAMPLE_COLUMNS,
    ConfigMismatch,
    EvalCell,
    GeneralisationConfig,
    GeneralisationResult,
    compare_models,
    default_grid,
    load_answers,
    load_samples,
    parse_settings,
    resolve_models,
    run_generalisation,
    run_search_comparison,
    search_curves,
    summarize,
    with_adapter,
)
from aad_kit.evaluation.stats import BootstrapCI, bootstrap_ci, bootstrap_diff, wilson_interval

__all__ = [
    "ROLES",
    "SAMPLE_COLUMNS",
    "BootstrapCI",
    "ConfigMismatch",
    "EvalCell",
    "GeneralisationConfig",
    "GeneralisationResult",
    "bootstrap_ci",
    "bootstrap_diff",
    "compare_models",
    "default_grid",
    "load_answers",
    "load_samples",
    "parse_settings",
    "resolve_models",
    "run_generalisation",
    "run_search_comparison",
    "search_curves",
    "stats",
    "summarize",
    "wilson_interval",
    "with_adapter",
]
