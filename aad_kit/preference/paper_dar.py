"""DAR as the paper's released code runs it (strategy ``dar``, the default).

The procedure of ``create_data/dataset_creator.py`` in ``RayZhhh/dpo-aad`` (read, not copied;
constants in ``shared/PAPER.md``), with one correction the authors' own note calls for:

1. keep records with ``status == "ok"``, a finite score and non-empty code; **deduplicate by
   exact code** (the first occurrence by id is kept);
2. sort **best first by the score itself** (higher is better; the original sorts by
   ``abs(score)``, right only for its all-negative scores) and cut the ranking into
   ``m_subsets`` (M = 10) **equal-count** subsets (``numpy.array_split``: sizes differ by at
   most one; tied scores may straddle a boundary, as in the original);
3. for each pair: draw the ``y+`` subset ``i`` among the top ``top_subsets`` (M - 3 = 7) with
   ``P(i) ∝ exp((M - 4 - i) / tau)``, ``tau = 3`` (0.314, 0.225, 0.161, 0.116, 0.083, 0.059,
   0.043); draw the ``y-`` subset uniformly from ``i + subset_gap .. M - 1`` (gap 2: one whole
   subset between them); draw ``y+`` and ``y-`` uniformly inside their subsets, with
   replacement;
4. keep drawing until ``n_pairs`` **unique** (y+, y-) pairs (default 1,000) or until
   ``max_draw_factor * n_pairs`` draws found no more new ones.

The original then repeats its 1,000 unique pairs up to 10,000 rows; here repetition is the
trainer's epochs, so the dataset holds each unique pair once. "Diversity" in the original is
exactly the exact-code deduplication plus the spread of ``y+`` over seven quality tiers: there
is no code-similarity rule (that is the ``dar_diverse`` variant). Pairs whose two programs tie
on score can occur when ties straddle subsets; :func:`tied_share` reports how many.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from aad_kit.preference.core import (
    Candidate,
    Pair,
    PairConfig,
    PairSet,
    Pool,
    PreferenceDataError,
    _as_records,
    _candidate,
    _get,
    finish,
    make_pair,
)

STRATEGY = "dar"


def subset_probabilities(m_subsets: int, top_subsets: int, tau: float) -> np.ndarray:
    """``P(i) ∝ exp((M - 4 - i) / tau)`` over the ``top_subsets`` best subsets."""
    i = np.arange(top_subsets, dtype=float)
    w = np.exp((m_subsets - 4 - i) / tau)
    return w / w.sum()


def build_paper_pool(records: Iterable[Any], config: PairConfig) -> Pool:
    """Step 1-2: the exact-code-deduplicated valid programs, best first, in M equal subsets."""
    recs = _as_records(records)
    tasks = {str(_get(r, "task")) for r in recs}
    if len(tasks) > 1:
        raise PreferenceDataError(
            f"records of several tasks ({sorted(tasks)}): pairs share one prompt per task"
        )
    skipped: dict[str, int] = {}
    seen: set[str] = set()
    valid: list[Candidate] = []
    for rec in sorted(recs, key=lambda r: int(_get(r, "id"))):
        c = _candidate(rec)
        if c.operator == "seed" and not config.include_seeds:
            skipped["seed (include_seeds=False)"] = skipped.get("seed (include_seeds=False)", 0) + 1
            continue
        if c.status != "ok" or c.score is None or not (c.code or "").strip():
            skipped["not ok, no finite score or no code"] = skipped.get(
                "not ok, no finite score or no code", 0) + 1
            continue
        key = (c.code or "").strip()
        if key in seen:
            skipped["exact duplicate code"] = skipped.get("exact duplicate code", 0) + 1
            continue
        seen.add(key)
        valid.append(c)
    valid.sort(key=lambda c: (-float(c.score), c.id))  # type: ignore[arg-type]
    m = config.m_subsets
    subset = np.zeros(len(valid), dtype=int)
    for k, idx in enumerate(np.array_split(np.arange(len(valid)), m)):
        subset[idx] = k
    first = valid[0] if valid else None
    return Pool(
        valid=valid, failed=[], subset=subset, n_subsets=m,
        task=first.task if first else (next(iter(tasks)) if tasks else None),
        setting=first.setting if first else None, run_id=first.run_id if first else None,
        config=config, skipped=skipped,
    )  # fmt: skip


def draw_paper_pairs(pool: Pool, n_target: int) -> tuple[list[Pair], list[str]]:
    """Step 3-4 on a pool from :func:`build_paper_pool`."""
    cfg = pool.config
    m, top, gap = cfg.m_subsets, cfg.top_subsets, cfg.subset_gap
    members = [np.flatnonzero(pool.subset == k) for k in range(m)]
    if any(len(s) == 0 for s in members):
        raise PreferenceDataError(
            f"{STRATEGY}: {len(pool.valid)} valid distinct program(s) cannot fill {m} subsets "
            f"(need at least {m}); {pool.describe()}"
        )
    feasible = sum(len(members[i]) * len(members[j]) for i in range(top) for j in range(i + gap, m))
    notes = []
    if feasible < n_target:
        notes.append(f"{STRATEGY}: only {feasible} distinct (y+, y-) pairs exist in "
                     f"{len(pool.valid)} programs; drawing all of them, not {n_target}")
        n_target = feasible
    p_top = subset_probabilities(m, top, cfg.tau)
    rng = np.random.default_rng([cfg.seed, 0xDA8])
    ranks = pool.rank_of()
    seen: set[tuple[int, int]] = set()
    pairs: list[Pair] = []
    draws, max_draws = 0, max(1, int(cfg.max_draw_factor * n_target))
    while len(pairs) < n_target and draws < max_draws:
        draws += 1
        i = int(rng.choice(top, p=p_top))
        j = int(rng.integers(i + gap, m))  # uniform in i+gap .. M-1
        a = int(rng.choice(members[i]))
        b = int(rng.choice(members[j]))
        key = (pool.valid[a].id, pool.valid[b].id)
        if key in seen:
            continue
        seen.add(key)
        pairs.append(make_pair(pool, a, b, STRATEGY, ranks))
    if len(pairs) < n_target:
        notes.append(f"{STRATEGY}: {draws} draws found {len(pairs)} unique pairs of {n_target} wanted")
    return pairs, notes


def paper_dar_pairs(records: Any, config: PairConfig | None = None) -> PairSet:
    """Draw pairs with the paper's DAR (see the module docstring)."""
    config = config or PairConfig()
    if config.failed_as_rejected is True:
        raise PreferenceDataError(
            "the paper's DAR pairs valid programs only; failed_as_rejected is a rule of the "
            "dar_diverse variant (strategy='dar_diverse'); 'auto' is ignored by dar"
        )
    t0 = time.perf_counter()
    pool = build_paper_pool(records, config)
    if len(pool.valid) < config.m_subsets:
        raise PreferenceDataError(
            f"{STRATEGY}: {len(pool.valid)} valid distinct program(s); the paper's DAR needs at "
            f"least m_subsets = {config.m_subsets} to form its subsets ({pool.describe()})"
        )
    n_target = config.n_pairs or config.paper_pairs
    pairs, notes = draw_paper_pairs(pool, n_target)
    return finish(pool, pairs, STRATEGY, n_target, t0, notes, explicit=bool(config.n_pairs))


def tied_share(ps: PairSet) -> float:
    """Share of pairs whose two programs have the same score (ties straddling subsets)."""
    if not ps.pairs:
        return math.nan
    return float(np.mean([p.score_gap == 0 for p in ps.pairs]))


__all__ = ["STRATEGY", "build_paper_pool", "draw_paper_pairs", "paper_dar_pairs",
           "subset_probabilities", "tied_share"]
