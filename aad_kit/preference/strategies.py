"""Pair-sampling strategies behind one registry: DAR and the baselines it is compared with.

``sample_pairs(records, strategy, config)`` draws pairs with any of

=============  ===============================================================================
``dar``        Diversity-Aware Rank-based sampling as the paper's code runs it (default;
               :mod:`aad_kit.preference.paper_dar`)
``dar_diverse`` the kit's earlier DAR variant (:mod:`aad_kit.preference.dar`): tie-aware
               quantiles, reuse caps, a code-similarity filter, optionally failed answers as
               rejected
``random``     two distinct valid algorithms with different scores, uniformly at random among
               all such pairs; ordered so ``y+`` is the better one
``min_gap``    "continuous fitness" sampling: uniform among the pairs whose score difference is
               at least ``config.min_gap`` (default: 10% of the valid score range)
``top_bottom`` ``y+`` from the top ``k`` and ``y-`` from the bottom ``k`` of the ranking
               (``k = ceil(extreme_fraction * N)``, default fraction ``1 / n_subsets``),
               uniformly among those ``k * k`` pairs
``half_zip``   the ranking's better half zipped with its worse half: pair ``i`` is
               ``(ranking[i], ranking[N - h + i])`` with ``h = N // 2`` (the middle element of an
               odd ranking is left out); ``n_pairs < h`` keeps a seeded random subset of the
               ``i``; more than ``h`` pairs are impossible
=============  ===============================================================================

All strategies share :class:`~aad_kit.preference.core.PairConfig` (``n_pairs``, ``seed``,
``failed_as_rejected`` (not ``dar``: the paper pairs valid programs only), ``strict``). The baselines deliberately have **no** diversity rule and
no reuse caps (that is what DAR adds); every strategy never repeats a pair and never pairs
two equal scores. With ``failed_as_rejected`` the failed answers are appended to the ranking
*below* every valid algorithm (in id order), and only ever appear as ``y-``: ``random`` and
``min_gap`` may then pair any valid algorithm with a failed answer (a failed answer is
infinitely worse, so it passes any gap), ``top_bottom``/``half_zip`` take their bottom/worse
half from that extended ranking.

Every pair also carries the rank and DAR subset of both members (from the same pool
partition), so all strategies can be drawn on the same pictures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from aad_kit.preference.core import (
    Pair,
    PairConfig,
    PairSet,
    Pool,
    PreferenceDataError,
    make_pair,
    run_with_failed_mode,
)
from aad_kit.preference.dar import _dar_draw
from aad_kit.preference.paper_dar import paper_dar_pairs

DrawFn = Callable[[Pool, int, bool], tuple[list[Pair], list[str]]]


def _extended(pool: Pool, use_failed: bool) -> tuple[np.ndarray, int]:
    """Scores of the extended ranking (valid best-first, then failed as -inf) and #valid."""
    s = pool.scores
    if use_failed and pool.failed:
        s = np.concatenate([s, np.full(len(pool.failed), -np.inf)])
    return s, len(pool.valid)


def _member(pool: Pool, k: int):  # noqa: ANN202
    return k if k < len(pool.valid) else pool.failed[k - len(pool.valid)]


def _pairs_from_index(pool: Pool, idx: Sequence[tuple[int, int]], strategy: str) -> list[Pair]:
    ranks = pool.rank_of()
    return [make_pair(pool, _member(pool, i), _member(pool, j), strategy, ranks) for i, j in idx]


def _choose(rng: np.random.Generator, ii: np.ndarray, jj: np.ndarray, n: int) -> list[tuple[int, int]]:
    """Up to ``n`` distinct (i, j) from the candidate arrays, uniformly without replacement."""
    if len(ii) == 0:
        return []
    pick = rng.choice(len(ii), size=min(n, len(ii)), replace=False)
    return [(int(ii[k]), int(jj[k])) for k in pick]


def _candidate_pairs(s: np.ndarray, n_valid: int, min_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """All (better, worse) index pairs of the extended ranking with gap > / >= threshold."""
    n = len(s)
    if n < 2:
        return np.zeros(0, int), np.zeros(0, int)
    ii, jj = np.triu_indices(n, k=1)  # i < j: i ranks better (or equal) than j
    keep = ii < n_valid  # y+ must be valid
    ii, jj = ii[keep], jj[keep]
    diff = s[ii] - s[jj]  # inf where j is a failed answer
    keep = (diff > 0) & (diff >= min_gap)
    return ii[keep], jj[keep]


def _random_draw(pool: Pool, n_target: int, use_failed: bool) -> tuple[list[Pair], list[str]]:
    rng = np.random.default_rng([pool.config.seed, 0x5A])
    s, nv = _extended(pool, use_failed)
    ii, jj = _candidate_pairs(s, nv, 0.0)
    return _pairs_from_index(pool, _choose(rng, ii, jj, n_target), "random"), []


def resolve_min_gap(pool: Pool) -> float:
    """``config.min_gap``, or 10% of the valid score range when it is None."""
    if pool.config.min_gap is not None:
        return float(pool.config.min_gap)
    s = pool.scores
    return float(0.1 * (s.max() - s.min())) if len(s) else 0.0


def _min_gap_draw(pool: Pool, n_target: int, use_failed: bool) -> tuple[list[Pair], list[str]]:
    rng = np.random.default_rng([pool.config.seed, 0x6A])
    s, nv = _extended(pool, use_failed)
    gap = resolve_min_gap(pool)
    ii, jj = _candidate_pairs(s, nv, gap)
    notes = [] if pool.config.min_gap is not None else [f"min_gap: minimum score gap {gap:.6g} (10% of the range)"]
    return _pairs_from_index(pool, _choose(rng, ii, jj, n_target), "min_gap"), notes


def extreme_k(pool: Pool, n: int) -> int:
    frac = pool.config.extreme_fraction or 1.0 / pool.config.n_subsets
    return max(1, min(n // 2, math.ceil(frac * n)))


def _top_bottom_draw(pool: Pool, n_target: int, use_failed: bool) -> tuple[list[Pair], list[str]]:
    rng = np.random.default_rng([pool.config.seed, 0x7B])
    s, nv = _extended(pool, use_failed)
    n = len(s)
    if n < 2 or nv == 0:
        return [], []
    k = extreme_k(pool, n)
    top = np.arange(min(k, nv))
    bottom = np.arange(n - k, n)
    ii, jj = (a.ravel() for a in np.meshgrid(top, bottom, indexing="ij"))
    keep = s[ii] > s[jj]
    return _pairs_from_index(pool, _choose(rng, ii[keep], jj[keep], n_target), "top_bottom"), []


def _half_zip_draw(pool: Pool, n_target: int, use_failed: bool) -> tuple[list[Pair], list[str]]:
    rng = np.random.default_rng([pool.config.seed, 0x8C])
    s, nv = _extended(pool, use_failed)
    n = len(s)
    h = n // 2
    idx = [(i, n - h + i) for i in range(h) if i < nv and s[i] > s[n - h + i]]
    if len(idx) > n_target:
        keep = np.sort(rng.choice(len(idx), size=n_target, replace=False))
        idx = [idx[k] for k in keep]
    return _pairs_from_index(pool, idx, "half_zip"), []


STRATEGIES: dict[str, DrawFn] = {
    "dar_diverse": _dar_draw,
    "random": _random_draw,
    "min_gap": _min_gap_draw,
    "top_bottom": _top_bottom_draw,
    "half_zip": _half_zip_draw,
}
STRATEGY_NAMES: tuple[str, ...] = ("dar", *STRATEGIES)


def register_strategy(name: str, draw: DrawFn) -> None:
    """Add a strategy: ``draw(pool, n_target, use_failed) -> (pairs, notes)``."""
    if name in STRATEGIES or name == "dar":
        raise ValueError(f"strategy {name!r} is already registered")
    STRATEGIES[name] = draw


def sample_pairs(records: Any, strategy: str = "dar", config: PairConfig | None = None, **overrides: Any) -> PairSet:
    """Draw preference pairs from ``records`` (one run's algorithms) with ``strategy``.

    ``records``: :meth:`AlgorithmDB.records` output, mappings, or :meth:`AlgorithmDB.to_dataframe`.
    ``overrides`` replace fields of ``config`` (e.g. ``n_pairs=64, seed=1``). Raises
    :class:`PreferenceDataError` when no pair can be formed, with the reason.
    """
    names = ("dar", *STRATEGIES)
    if strategy not in names:
        raise ValueError(f"unknown pair strategy {strategy!r}; choose one of: {', '.join(names)}")
    config = (config or PairConfig()).with_(**overrides) if overrides else (config or PairConfig())
    if strategy == "dar":
        return paper_dar_pairs(records, config)
    return run_with_failed_mode(records, config, strategy, STRATEGIES[strategy])


# ---------------------------------------------------------------------------- summaries
def summarize(ps: PairSet, threshold: float | None = None, mode: str | None = None) -> dict[str, Any]:
    """Quality, gap and diversity numbers of one pair set (one row of :func:`compare_strategies`).

    Diversity is measured on the *distinct* chosen algorithms: mean pairwise code similarity
    (lower = more diverse), number of near-duplicate families at ``threshold`` (default: the
    config's), number of distinct AST shapes, and reuse (max / mean times an algorithm is chosen).
    """
    from aad_kit.preference import diversity as dv

    cfg = ps.config
    threshold = cfg.similarity_threshold if threshold is None else threshold
    mode = mode or cfg.similarity_mode
    gaps = np.array([p.score_gap for p in ps.pairs], dtype=float)
    valid_gaps = gaps[~np.isnan(gaps)]
    chosen_ids = [p.chosen.id for p in ps.pairs]
    distinct = {p.chosen.id: p.chosen for p in ps.pairs}
    codes = [c.code or "" for c in distinct.values()]
    reuse_c = dv.reuse_counts(chosen_ids)
    reuse_r = dv.reuse_counts(p.rejected.id for p in ps.pairs)
    rejected_valid = [p.rejected.score for p in ps.pairs if p.rejected.valid]
    return {
        "strategy": ps.strategy,
        "n_pairs": len(ps.pairs),
        "requested": ps.requested,
        "mean_chosen_score": float(np.mean([p.chosen.score for p in ps.pairs])) if ps.pairs else math.nan,
        "mean_rejected_score": float(np.mean(rejected_valid)) if rejected_valid else math.nan,
        "mean_gap": float(valid_gaps.mean()) if len(valid_gaps) else math.nan,
        "median_gap": float(np.median(valid_gaps)) if len(valid_gaps) else math.nan,
        "min_gap": float(valid_gaps.min()) if len(valid_gaps) else math.nan,
        "failed_rejected_share": float(np.mean([p.rejected_failed for p in ps.pairs])) if ps.pairs else math.nan,
        "distinct_chosen": len(distinct),
        "chosen_similarity": dv.mean_pairwise_similarity(codes, mode),
        "chosen_families": dv.n_structures(codes, threshold, mode),
        "chosen_shapes": dv.n_distinct_shapes(codes),
        "max_chosen_reuse": max(reuse_c.values()) if reuse_c else 0,
        "mean_chosen_reuse": float(np.mean(list(reuse_c.values()))) if reuse_c else math.nan,
        "max_rejected_reuse": max(reuse_r.values()) if reuse_r else 0,
        "time_s": ps.elapsed_s,
        "pairs_per_s": len(ps.pairs) / ps.elapsed_s if ps.elapsed_s > 0 else math.inf,
    }


def compare_strategies(
    records: Any,
    strategies: Sequence[str] | None = None,
    config: PairConfig | None = None,
    *,
    equal_size: bool = True,
):  # noqa: ANN201 - returns (dict, DataFrame)
    """Draw pairs with several strategies; returns ``({name: PairSet}, summary DataFrame)``.

    ``equal_size``: after the first strategy (DAR when included), every other one is asked for
    the same number of pairs it produced, so quality and diversity compare at equal dataset size.
    A strategy that cannot form any pair is reported with ``n_pairs = 0`` and its reason.
    """
    import warnings

    import pandas as pd

    config = config or PairConfig()
    names = list(strategies or STRATEGY_NAMES)
    if "dar" in names:
        names.remove("dar")
        names.insert(0, "dar")
    sets: dict[str, PairSet] = {}
    rows = []
    cfg = config
    for name in names:
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ps = sample_pairs(records, name, cfg)
        except PreferenceDataError as err:
            rows.append({"strategy": name, "n_pairs": 0, "error": str(err), "time_s": time.perf_counter() - t0})
            continue
        sets[name] = ps
        rows.append({**summarize(ps), "error": ""})
        if equal_size and cfg is config and not config.n_pairs:
            cfg = config.with_(n_pairs=len(ps))
    return sets, pd.DataFrame(rows)


__all__ = [
    "STRATEGIES",
    "STRATEGY_NAMES",
    "compare_strategies",
    "extreme_k",
    "register_strategy",
    "resolve_min_gap",
    "sample_pairs",
    "summarize",
]
