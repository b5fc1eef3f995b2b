"""The ``dar_diverse`` variant of DAR: its draw (:func:`dar_diverse_pairs`).

The paper's own DAR (strategy ``dar``, the default) is :mod:`aad_kit.preference.paper_dar`.
This module is the kit's earlier reading of the method from the abstract alone, kept as a
named variant for the ablation: tie-aware quantiles, reuse caps, a code-similarity filter and
optionally failed answers as rejected.

The paper (Liu et al., arXiv 2507.10614: abstract and Fig. 1) builds DPO pairs ``(x, y+, y-)``
from the database ``D`` of a search run. Sampling on the continuous fitness gives unstable
preference gaps, so DAR instead

1. sorts ``D`` by fitness,
2. discretises the ranking into ranked subsets ``S_0`` (best) ... ``S_{m-1}`` (worst),
3. draws a high-quality ``y+`` from the better subsets and a clearly worse ``y-`` from a lower
   subset,
4. keeps the chosen set diverse (not many copies of one algorithm family).

What the paper states is that procedure (from the text available to us: its abstract, the
Fig. 1 caption and shared/PAPER.md; the method section's constants could not be consulted).
The constants below (how many subsets, which subsets count as "better", the subset gap, how
diversity is measured and enforced, how many pairs) are **this kit's choices**, each a
:class:`PairConfig` field with a documented default; change them when the paper's values are
known.

The procedure as implemented (:func:`dar_diverse_pairs`)
------------------------------------------------
* Pool, ranking and subsets: :func:`~aad_kit.preference.core.build_pool` (the pair core every
  strategy shares, :mod:`aad_kit.preference.core`).
* Pairs: repeatedly (seeded ``numpy`` generator)

  - pick the chosen subset ``i`` uniformly among the top ``chosen_subsets`` subsets that can
    still form a pair (uniform over subsets, not over algorithms: every quality level of the
    better part is represented, which is the "balance of quality and diversity");
  - pick ``y+`` in ``S_i`` among the algorithms that pass the diversity rule (below), preferring
    one not chosen yet, then the least chosen, ties at random;
  - pick the rejected subset ``j >= i + min_subset_gap`` uniformly among those with an
    available partner (the failed answers form one extra subset ``j = m`` below every valid
    one when ``failed_as_rejected`` is on), then ``y-`` at random in ``S_j`` (least used
    first);
  - never repeat a pair; stop at ``n_pairs`` or when no feasible pair is left.
* Diversity rule: an algorithm is used as ``y+`` at most ``max_chosen_reuse`` times, as ``y-``
  at most ``max_rejected_reuse`` times, and among the *distinct* chosen algorithms no one has
  more than ``max_similar_chosen`` others with code similarity ``>= similarity_threshold``
  (:mod:`aad_kit.preference.diversity`; default 0: no two chosen answers are near-duplicates).

Edge cases: all scores equal / a single valid algorithm give no valid-vs-valid pair (use
``failed_as_rejected``); fewer feasible pairs than requested returns what is feasible, with a
warning in :attr:`PairSet.warnings` (``strict=True`` raises instead); no pair at all raises
:class:`PreferenceDataError` saying why.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The core under its old import path too (these names were defined here before
# aad_kit.preference.core existed; the private helpers are re-exported explicitly).
from aad_kit.preference.core import (
    NOT_THE_ANSWERS_FAULT,
    PARTITIONS,
    Candidate,
    Pair,
    PairConfig,
    PairSet,
    Pool,
    PreferenceDataError,
    assign_subsets,
    build_pool,
    default_n_pairs,
    finish,
    make_pair,
    run_with_failed_mode,
)
from aad_kit.preference.core import _as_records as _as_records
from aad_kit.preference.core import _candidate as _candidate
from aad_kit.preference.core import _get as _get


def effective_gap(pool: Pool) -> tuple[int, list[str]]:
    """``min_subset_gap`` clipped to the subsets the data has (with a note when clipped)."""
    gap = pool.config.min_subset_gap
    if pool.n_subsets >= 2 and gap > pool.n_subsets - 1:
        return pool.n_subsets - 1, [
            f"dar: only {pool.n_subsets} subset(s) (the data has {pool.n_distinct_scores} distinct "
            f"score(s)), so min_subset_gap {gap} is clipped to {pool.n_subsets - 1}"
        ]
    return gap, []


def _dar_draw(pool: Pool, n_target: int, use_failed: bool) -> tuple[list[Pair], list[str]]:
    cfg = pool.config
    rng = np.random.default_rng([cfg.seed, 0xDA7])
    n_valid = len(pool.valid)
    m = pool.n_subsets
    gap, notes = effective_gap(pool)
    members: list[list[int]] = [np.flatnonzero(pool.subset == k).tolist() for k in range(m)]
    failed_idx = list(range(len(pool.failed))) if use_failed else []
    scores = pool.scores
    near = pool.similarity() >= cfg.similarity_threshold if n_valid else np.zeros((0, 0), bool)
    if n_valid:
        np.fill_diagonal(near, False)
    k_sim = cfg.max_similar_chosen
    chosen_uses = np.zeros(n_valid, dtype=int)
    rejected_uses = np.zeros(n_valid, dtype=int)
    failed_uses = np.zeros(len(pool.failed), dtype=int)
    in_chosen = np.zeros(n_valid, dtype=bool)
    similar_deg = np.zeros(n_valid, dtype=int)  # near-duplicates among the distinct chosen
    near_chosen = np.zeros(n_valid, dtype=int)  # chosen algorithms near each algorithm
    blocked = np.zeros(n_valid, dtype=bool)  # near a chosen one that has no room left
    saturated = np.zeros(n_valid, dtype=bool)
    dead = np.zeros(n_valid, dtype=bool)  # has no partner left (monotone: never revives)
    used_pairs: set[tuple[int, int]] = set()  # (chosen index, rejected index or -1-failed index)
    ranks = pool.rank_of()
    pairs: list[Pair] = []
    top = min(cfg.chosen_subsets, m) if m >= 2 else 1
    top_members = [np.array(members[i], dtype=int) for i in range(top)] if n_valid else []

    def partners(a: int, j: int) -> list[int]:
        """Rejected candidates for chosen ``a`` in subset ``j`` (``j == m``: failed answers)."""
        if j == m:
            return [f for f in failed_idx if failed_uses[f] < cfg.max_rejected_reuse
                    and (a, -1 - f) not in used_pairs]
        return [b for b in members[j] if rejected_uses[b] < cfg.max_rejected_reuse
                and scores[a] - scores[b] > cfg.min_score_gap and (a, b) not in used_pairs]

    def lower_subsets(i: int) -> list[int]:
        out = [j for j in range(i + gap, m) if members[j]] if m >= 2 else []
        if failed_idx:
            out.append(m)
        return out

    def mark_saturated(idx: np.ndarray) -> None:
        for c in idx.tolist():
            if not saturated[c] and similar_deg[c] >= k_sim:
                saturated[c] = True
                blocked[near[c]] = True

    while len(pairs) < n_target and n_valid:
        # the diversity rule and the reuse cap, for every algorithm at once
        ok = (chosen_uses < cfg.max_chosen_reuse) & ~dead
        ok &= in_chosen | ((near_chosen <= k_sim) & ~blocked)
        alive = [i for i in range(top) if ok[top_members[i]].any()]
        if not alive:
            break
        i = alive[int(rng.integers(len(alive)))]
        cands = top_members[i][ok[top_members[i]]]
        # diversity-aware choice: a fresh algorithm first, then the least chosen; ties at random
        key = in_chosen[cands].astype(int) * (cfg.max_chosen_reuse + 1) + chosen_uses[cands]
        best = cands[key == key.min()]
        a = int(best[rng.integers(len(best))])
        js = [j for j in lower_subsets(i) if partners(a, j)]
        if not js:
            dead[a] = True
            continue
        j = js[int(rng.integers(len(js)))]
        opts = partners(a, j)
        uses = [int(failed_uses[b] if j == m else rejected_uses[b]) for b in opts]
        opts = [b for b, u in zip(opts, uses, strict=True) if u == min(uses)]
        b = int(opts[rng.integers(len(opts))])
        if not in_chosen[a]:
            nb = near[a] & in_chosen
            similar_deg[nb] += 1
            similar_deg[a] = int(nb.sum())
            in_chosen[a] = True
            near_chosen[near[a]] += 1
            mark_saturated(np.append(np.flatnonzero(nb), a))
        chosen_uses[a] += 1
        if j == m:
            failed_uses[b] += 1
            used_pairs.add((a, -1 - b))
            pairs.append(make_pair(pool, a, pool.failed[b], "dar_diverse", ranks))
        else:
            rejected_uses[b] += 1
            used_pairs.add((a, b))
            pairs.append(make_pair(pool, a, b, "dar_diverse", ranks))
    return pairs, notes


def dar_diverse_pairs(records: Any, config: PairConfig | None = None) -> PairSet:
    """Draw preference pairs with the ``dar_diverse`` variant (see the module docstring)."""
    return run_with_failed_mode(records, config or PairConfig(), "dar_diverse", _dar_draw)


__all__ = [
    "NOT_THE_ANSWERS_FAULT",
    "PARTITIONS",
    "Candidate",
    "Pair",
    "PairConfig",
    "PairSet",
    "Pool",
    "PreferenceDataError",
    "assign_subsets",
    "build_pool",
    "dar_diverse_pairs",
    "default_n_pairs",
    "effective_gap",
    "finish",
    "make_pair",
    "run_with_failed_mode",
]
