"""Candidate generation: EoH-style and FunSearch-style search, answer parsing and lineage plots.

>>> from aad_kit.search import SearchConfig, run_search          # doctest: +SKIP
>>> result = run_search(SearchConfig("admissible_set", "n12_w7", budget=64), sampler, "runs/x/algorithms.sqlite", run_id="x")

``search_method`` picks the algorithm: ``"eoh"`` (the default, :func:`run_search`) or
``"funsearch"`` (islands, :func:`run_funsearch`); :func:`make_search_config` and
:func:`run_search_method` take it by name.
"""

from __future__ import annotations

from typing import Any

from aad_kit.search.eoh import (
    EVOLUTION_OPERATORS,
    PlannedSample,
    SearchConfig,
    SearchResult,
    batches,
    derive_seed,
    plan_sample,
    population,
    run_search,
)
from aad_kit.search.funsearch import FunSearchConfig, run_funsearch
from aad_kit.search.lineage_plot import lineage_layout, plot_lineage
from aad_kit.search.parsing import ParsedAnswer, extract_idea, parse_answer

SEARCH_METHODS: dict[str, type] = {"eoh": SearchConfig, "funsearch": FunSearchConfig}
DEFAULT_SEARCH_METHOD = "eoh"


def make_search_config(
    search_method: str = DEFAULT_SEARCH_METHOD, **kwargs: Any
) -> SearchConfig | FunSearchConfig:
    """The config of ``search_method`` (``"eoh"`` or ``"funsearch"``) from ``kwargs``.

    The fields both share (task, setting, budget, seed, temperature, top_p, max_new_tokens,
    batch_size, include_seed_heuristics, seed_heuristics) mean the same in both; only the
    default seeds differ (EoH: every shipped heuristic, FunSearch: the template program).
    """
    if search_method not in SEARCH_METHODS:
        raise ValueError(f"unknown search_method {search_method!r}; choose one of: {', '.join(SEARCH_METHODS)}")
    return SEARCH_METHODS[search_method](**kwargs)  # type: ignore[no-any-return]


def search_method_of(config: SearchConfig | FunSearchConfig) -> str:
    return "funsearch" if isinstance(config, FunSearchConfig) else "eoh"


def run_search_method(
    config: SearchConfig | FunSearchConfig,
    sampler: Any,
    db: Any,
    sandbox: Any = None,
    run_id: str | None = None,
    progress: bool = True,
    on_batch: Any = None,
) -> SearchResult:
    """:func:`run_search` or :func:`run_funsearch`, whichever ``config`` is for."""
    run = run_funsearch if isinstance(config, FunSearchConfig) else run_search
    return run(config, sampler, db, sandbox, run_id=run_id, progress=progress, on_batch=on_batch)  # type: ignore[arg-type]


__all__ = [
    "DEFAULT_SEARCH_METHOD",
    "EVOLUTION_OPERATORS",
    "SEARCH_METHODS",
    "FunSearchConfig",
    "ParsedAnswer",
    "PlannedSample",
    "SearchConfig",
    "SearchResult",
    "batches",
    "derive_seed",
    "extract_idea",
    "lineage_layout",
    "make_search_config",
    "parse_answer",
    "plan_sample",
    "plot_lineage",
    "population",
    "run_funsearch",
    "run_search",
    "run_search_method",
    "search_method_of",
]
