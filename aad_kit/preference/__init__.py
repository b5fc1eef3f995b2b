"""Preference data: DAR sampling (and baselines) of (prompt, chosen, rejected) pairs from the
algorithm database, diversity measures, the TRL-ready dataset, and pictures.

>>> from aad_kit.preference import PairConfig, build_preference_dataset   # doctest: +SKIP
>>> ds, pairs = build_preference_dataset("runs/x/algorithms.sqlite", "dar", PairConfig(seed=0),
...                                      run_dir="runs/x")

The pipeline's entry points: :func:`build_preference_dataset` (database -> Dataset on disk),
:func:`sample_pairs` (records -> :class:`PairSet`), :func:`to_dataset`,
:func:`save_preference_data` and :func:`compare_strategies`.
"""

from __future__ import annotations

from aad_kit.preference.core import (
    Candidate,
    Pair,
    PairConfig,
    PairSet,
    Pool,
    PreferenceDataError,
    assign_subsets,
    build_pool,
)
from aad_kit.preference.dar import dar_diverse_pairs
from aad_kit.preference.dataset import (
    METADATA_COLUMNS,
    build_preference_dataset,
    has_chat_template,
    load_records,
    load_run_records,
    log_rows,
    model_uses_chat_template,
    pair_rows,
    resolve_run,
    save_preference_data,
    to_dataset,
)
from aad_kit.preference.paper_dar import paper_dar_pairs, subset_probabilities, tied_share
from aad_kit.preference.strategies import (
    STRATEGIES,
    STRATEGY_NAMES,
    compare_strategies,
    register_strategy,
    sample_pairs,
    summarize,
)

__all__ = [
    "METADATA_COLUMNS",
    "STRATEGIES",
    "STRATEGY_NAMES",
    "Candidate",
    "Pair",
    "PairConfig",
    "PairSet",
    "Pool",
    "PreferenceDataError",
    "assign_subsets",
    "build_pool",
    "build_preference_dataset",
    "compare_strategies",
    "dar_diverse_pairs",
    "paper_dar_pairs",
    "subset_probabilities",
    "tied_share",
    "has_chat_template",
    "load_records",
    "load_run_records",
    "log_rows",
    "model_uses_chat_template",
    "pair_rows",
    "register_strategy",
    "resolve_run",
    "sample_pairs",
    "save_preference_data",
    "summarize",
    "to_dataset",
]
