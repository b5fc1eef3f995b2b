"""Candidate generation: EoH-style search, answer parsing and lineage plots.

>>> from aad_kit.search import SearchConfig, run_search          # doctest: +SKIP
>>> result = run_search(SearchConfig("admissible_set", "n12_w7", budget=64), sampler, "runs/x/algorithms.sqlite", run_id="x")
"""

from __future__ import annotations

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
from aad_kit.search.lineage_plot import lineage_layout, plot_lineage
from aad_kit.search.parsing import ParsedAnswer, extract_idea, parse_answer

__all__ = [
    "EVOLUTION_OPERATORS",
    "ParsedAnswer",
    "PlannedSample",
    "SearchConfig",
    "SearchResult",
    "batches",
    "derive_seed",
    "extract_idea",
    "lineage_layout",
    "parse_answer",
    "plan_sample",
    "plot_lineage",
    "population",
    "run_search",
]
