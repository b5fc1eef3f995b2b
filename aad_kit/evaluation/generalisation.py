"""The generalisation study: does the tuned model write better algorithms than its base model,
on the setting it was trained on, on held-out settings of the same task, and on other tasks?

This module is the study's facade (notebooks use ``from aad_kit.evaluation import
generalisation as gen``): every name it always had is importable from here. The code lives in
one module per job:

* :mod:`aad_kit.evaluation.grid`: :class:`GeneralisationConfig`, the grid's cells and roles,
  the profile defaults (:func:`default_grid`, :func:`parse_settings`);
* :mod:`aad_kit.evaluation.model_specs`: which models (:func:`resolve_models`,
  :func:`with_adapter`) and what pins a model's answers down (:func:`spec_fingerprint`);
* :mod:`aad_kit.evaluation.storage`: the files in the run directory and the long table;
* :mod:`aad_kit.evaluation.runner`: :func:`run_generalisation` (design, resume);
* :mod:`aad_kit.evaluation.metrics`: :func:`summarize`, :func:`compare_models`;
* :mod:`aad_kit.evaluation.search_comparison`: the optional same-budget search
  (:func:`run_search_comparison`, :func:`search_curves`, :func:`search_summary`, and
  :func:`reference_curves` for the teacher's own shipped search runs).
"""

from __future__ import annotations

from aad_kit.evaluation.grid import (
    ROLES,
    EvalCell,
    GeneralisationConfig,
    as_list,
    default_grid,
    parse_settings,
)
from aad_kit.evaluation.metrics import compare_models, summarize
from aad_kit.evaluation.model_specs import (
    is_adapter_dir,
    resolve_models,
    spec_fingerprint,
    with_adapter,
)
from aad_kit.evaluation.runner import ConfigMismatch, GeneralisationResult, run_generalisation
from aad_kit.evaluation.search_comparison import (
    reference_curves,
    run_search_comparison,
    search_curves,
    search_summary,
)
from aad_kit.evaluation.storage import (
    ANSWERS_JSONL,
    COMPARISON_CSV,
    CONFIG_JSON,
    CURVES_CSV,
    SAMPLE_COLUMNS,
    SAMPLES_CSV,
    SEARCH_DB,
    SUMMARY_CSV,
    empty_samples,
    load_answers,
    load_samples,
    restrict,
)

__all__ = [
    "ANSWERS_JSONL",
    "COMPARISON_CSV",
    "CONFIG_JSON",
    "CURVES_CSV",
    "ConfigMismatch",
    "EvalCell",
    "GeneralisationConfig",
    "GeneralisationResult",
    "ROLES",
    "SAMPLES_CSV",
    "SAMPLE_COLUMNS",
    "SEARCH_DB",
    "SUMMARY_CSV",
    "as_list",
    "compare_models",
    "default_grid",
    "empty_samples",
    "is_adapter_dir",
    "load_answers",
    "load_samples",
    "parse_settings",
    "reference_curves",
    "resolve_models",
    "restrict",
    "run_generalisation",
    "run_search_comparison",
    "search_curves",
    "search_summary",
    "spec_fingerprint",
    "summarize",
    "with_adapter",
]
