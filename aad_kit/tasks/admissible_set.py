"""Admissible sets: FunSearch's *symmetric* greedy construction, scored by set size.

Background (Romera-Paredes et al., "Mathematical discoveries from program search with large
language models", Nature 2023; procedure and data from the FunSearch repository's
``admissible_set`` notebook, Apache-2.0). An admissible set ``A(n, w)`` is a set of vectors
in ``{0, 1, 2}^n`` such that

1. every vector has exactly ``w`` non-zero entries, and no two vectors share a support;
2. for every three distinct vectors ``x, y, z`` there is a coordinate ``i`` where the
   multiset ``{x_i, y_i, z_i}`` is ``{0, 1, 2}``, ``{0, 0, 1}`` or ``{0, 0, 2}``.

Large admissible sets give lower bounds on the cap-set capacity. The symmetric construction
searches a smaller space: the ``n`` coordinates are cut into ``n/3`` blocks of three, each
block holding one of seven triples; a greedy loop, ordered by the LLM-written ``priority``,
picks block choices ("pre-admissible rows") and every chosen row is finally expanded by the
cyclic rotations of its non-constant blocks. The metric is the size of the expanded set
(higher is better); ``C(n, w)`` is the largest possible size.

This module re-implements the notebook's procedure with numpy (the same greedy, the same
``np.argmax`` tie-breaking) so that ``n = 15`` is scored in well under a second plus the
priority calls (n = 24 in about 20 s instead of FunSearch's ~7 hours in pure Python).
:func:`construct` returns the actual rows and :func:`is_admissible` checks the definition
independently; both exist for tests and notebooks, :meth:`AdmissibleSetTask.measure` only
counts rows.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aad_kit.tasks.base import InvalidOutput, Measurement, Setting, Task

# The seven triples a block of three coordinates may hold, and their weights (non-zeros).
TRIPLES: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (0, 0, 1),
    (0, 0, 2),
    (0, 1, 2),
    (0, 2, 1),
    (1, 1, 1),
    (2, 2, 2),
)
TRIPLE_WEIGHTS: tuple[int, ...] = tuple(sum(1 for x in t if x) for t in TRIPLES)  # 0,1,1,2,2,3,3

# Sorted triples of block indices (into TRIPLES) that are "bad" for three rows in one block.
# Data from FunSearch's admissible_set notebook (Apache-2.0), Romera-Paredes et al. 2023.
BAD_SORTED_TRIPLES: frozenset[tuple[int, int, int]] = frozenset(
    [
        (0, 0, 0), (0, 1, 1), (0, 2, 2), (0, 3, 3), (0, 4, 4), (0, 5, 5), (0, 6, 6),
        (1, 1, 1), (1, 1, 2), (1, 2, 2), (1, 2, 3), (1, 2, 4), (1, 3, 3), (1, 4, 4),
        (1, 5, 5), (1, 6, 6), (2, 2, 2), (2, 3, 3), (2, 4, 4), (2, 5, 5), (2, 6, 6),
        (3, 3, 3), (3, 3, 4), (3, 4, 4), (3, 4, 5), (3, 4, 6), (3, 5, 5), (3, 6, 6),
        (4, 4, 4), (4, 5, 5), (4, 6, 6), (5, 5, 5), (5, 5, 6), (5, 6, 6), (6, 6, 6),
    ]
)  # fmt: skip


def _bad_table() -> np.ndarray:
    """``bad[a, b, c]`` is True iff the sorted triple (a, b, c) is bad (symmetric in a, b, c)."""
    bad = np.zeros((7, 7, 7), dtype=bool)
    for triple in BAD_SORTED_TRIPLES:
        for a, b, c in itertools.permutations(triple):
            bad[a, b, c] = True
    return bad


BAD_TABLE: np.ndarray = _bad_table()
BAD_TABLE.setflags(write=False)
_WEIGHTS = np.array(TRIPLE_WEIGHTS, dtype=np.int8)
_IS_ROTATING = np.array([len(set(t)) > 1 for t in TRIPLES])  # non-constant: 3 rotations


# ---------------------------------------------------------------------------------------------
# Instances: everything that does not depend on the candidate.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdmissibleSetInstances:
    """The candidates of one (n, w): block choices in ``itertools.product`` order."""

    n: int
    w: int
    blocks: np.ndarray  # (m, n/3) int8: index into TRIPLES for every block
    weights: np.ndarray  # (m, n/3) int8: weight of every block
    elements: tuple[tuple[int, ...], ...]  # the m length-n vectors handed to priority()
    expanded_sizes: np.ndarray  # (m,) int64: rows each candidate expands into, 3**(#rotating)
    codes: np.ndarray  # (m,) uint64: bit 7*b + blocks[:, b] set for every block b

    @property
    def num_candidates(self) -> int:
        return len(self.elements)


def build_candidates(n: int, w: int) -> AdmissibleSetInstances:
    """All block choices of total weight ``w`` (in ``itertools.product(range(7))`` order)."""
    if n <= 0 or n % 3:
        raise ValueError(f"n must be a positive multiple of 3, got n={n}")
    if not 0 <= w <= n:
        raise ValueError(f"w must lie in [0, n], got w={w} for n={n}")
    if n > 27:
        raise ValueError(f"n={n} is too large: 7**(n/3) candidates and 7 bits per block")
    groups = n // 3
    # Build the full 7**groups grid in product order (first block varies slowest).
    grid = np.indices((7,) * groups, dtype=np.int8).reshape(groups, -1).T
    blocks = np.ascontiguousarray(grid[_WEIGHTS[grid].sum(axis=1, dtype=np.int64) == w])
    weights = _WEIGHTS[blocks]
    triples = np.array(TRIPLES, dtype=np.int64)
    flat = triples[blocks].reshape(len(blocks), n)
    elements = tuple(tuple(int(x) for x in row) for row in flat.tolist())
    expanded_sizes = 3 ** _IS_ROTATING[blocks].sum(axis=1).astype(np.int64)
    shifts = np.arange(groups, dtype=np.uint64) * np.uint64(7)
    codes = np.bitwise_or.reduce(np.uint64(1) << (blocks.astype(np.uint64) + shifts), axis=1)
    for arr in (blocks, weights, expanded_sizes, codes):
        arr.setflags(write=False)
    return AdmissibleSetInstances(n, w, blocks, weights, elements, expanded_sizes, codes)


# ---------------------------------------------------------------------------------------------
# The greedy construction.
# ---------------------------------------------------------------------------------------------
_MAX_CELLS = 1 << 22  # bound on the (chosen x surviving) matrices built per step

# _BAD_BITS[a, b]: bit c set iff the block-index triple (a, b, c) is bad.
_BAD_BITS = (BAD_TABLE.astype(np.uint64) << np.arange(7, dtype=np.uint64)).sum(
    axis=2, dtype=np.uint64
)


def greedy_select(scores: np.ndarray, inst: AdmissibleSetInstances) -> np.ndarray:
    """Indices (into the candidates) of the pre-admissible rows, in the order chosen.

    Repeatedly takes the surviving candidate with the highest score (first one on ties, as
    ``np.argmax``) and removes every survivor that (a) is block-wise weight-dominated by, or
    dominates, the new row (the new row itself included), or (b) forms only bad block
    triples together with the new row and some previously chosen row.

    Test (b) is bit arithmetic: a survivor is one 7-bit one-hot field per block
    (``inst.codes``); an (extant, new) pair is, per block, the 7-bit set of survivor values
    that complete a bad triple. The survivor is blocked iff its one-hot bits lie inside the
    pair's bits for some extant row.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (inst.num_candidates,):
        raise ValueError(f"expected {inst.num_candidates} scores, got shape {scores.shape}")
    groups = inst.blocks.shape[1]
    shifts = np.arange(groups, dtype=np.uint64) * np.uint64(7)
    alive = np.arange(inst.num_candidates)
    alive_scores = scores
    alive_codes = inst.codes
    alive_weights = inst.weights
    chosen: list[int] = []
    while alive.size:
        j = int(np.argmax(alive_scores))
        new = int(alive[j])
        new_blocks = inst.blocks[new]
        new_weights = inst.weights[new]
        # (a) weight domination in either direction, block by block.
        keep = ~np.all(alive_weights >= new_weights, axis=1)
        keep &= ~np.all(alive_weights <= new_weights, axis=1)
        # (b) an extant row, the new row and the survivor form a bad triple in every block.
        if chosen and keep.any():
            extant = inst.blocks[chosen]  # (k, groups)
            pair_bits = np.bitwise_or.reduce(
                _BAD_BITS[extant, new_blocks[None, :]] << shifts, axis=1
            )
            outside = ~np.unique(pair_bits)  # bits a survivor must avoid to be blocked
            idx = np.flatnonzero(keep)
            per_chunk = max(1, _MAX_CELLS // outside.size)
            for start in range(0, idx.size, per_chunk):
                part = idx[start : start + per_chunk]
                inside = (alive_codes[part][None, :] & outside[:, None]) == 0
                keep[part[inside.any(axis=0)]] = False
        chosen.append(new)
        alive = alive[keep]
        alive_scores = alive_scores[keep]
        alive_codes = alive_codes[keep]
        alive_weights = alive_weights[keep]
    return np.array(chosen, dtype=np.int64)


def expand(pre_rows: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """Expand pre-admissible rows (block indices) by the rotations of non-constant blocks.

    Each block triple ``(x, y, z)`` that is not constant contributes ``(x, y, z)``,
    ``(z, x, y)`` and ``(y, z, x)``; the result holds the Cartesian product over blocks.
    """
    pre = np.asarray(pre_rows, dtype=np.int64)
    if pre.ndim != 2 or pre.shape[0] == 0:
        return np.empty((0, 3 * (pre.shape[1] if pre.ndim == 2 else 0)), dtype=np.int8)
    options = []
    for t in TRIPLES:
        x, y, z = t
        options.append([t] if x == y == z else [(x, y, z), (z, x, y), (y, z, x)])
    out: list[tuple[int, ...]] = []
    for row in pre.tolist():
        for combo in itertools.product(*(options[b] for b in row)):
            out.append(tuple(itertools.chain.from_iterable(combo)))
    return np.array(out, dtype=np.int8)


def _as_priority(value: Any, el: tuple[int, ...], n: int, w: int) -> float:
    """The priority as a float (not NaN), or :class:`InvalidOutput` naming the offending call."""
    ok_type = isinstance(value, (numbers.Real, np.integer, np.floating, np.bool_)) or (
        isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "biuf"
    )
    if not ok_type:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidOutput(
            f"priority(el={el}, n={n}, w={w}) returned {shown} of type "
            f"{type(value).__name__}; it must return a single real number (a float)"
        )
    try:
        x = float(value)
    except (OverflowError, TypeError, ValueError) as exc:
        raise InvalidOutput(
            f"priority(el={el}, n={n}, w={w}) returned {value!r:.80}, which does not convert "
            f"to a float ({exc})"
        ) from None
    if math.isnan(x):
        # +-inf is allowed (it orders deterministically: "always first"/"never first");
        # NaN has no order, so the greedy's choice would be arbitrary.
        raise InvalidOutput(
            f"priority(el={el}, n={n}, w={w}) returned NaN; priorities must be real numbers "
            f"(infinity is allowed, NaN is not)"
        )
    return x


def priorities(fn: Callable[..., Any], inst: AdmissibleSetInstances) -> np.ndarray:
    """Call ``fn(el, n, w)`` for every candidate and validate each value."""
    n, w = inst.n, inst.w
    out = np.empty(inst.num_candidates, dtype=np.float64)
    for i, el in enumerate(inst.elements):
        out[i] = _as_priority(fn(el, n, w), el, n, w)
    return out


def construct(fn: Callable[..., Any], n: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """``(pre-admissible rows as block indices, expanded admissible set)`` for a priority."""
    inst = build_candidates(n, w)
    chosen = greedy_select(priorities(fn, inst), inst)
    pre = np.asarray(inst.blocks[chosen])
    return pre, expand(pre)


# ---------------------------------------------------------------------------------------------
# An independent check of the admissible-set definition (for tests; O(N^2) pairs).
# ---------------------------------------------------------------------------------------------
def find_violation(rows: np.ndarray | Sequence[Sequence[int]]) -> str | None:
    """Why ``rows`` is not an admissible set, or ``None`` if it is one.

    Checks the definition directly: entries in {0, 1, 2}, one weight, distinct supports, and
    for every three distinct rows a coordinate whose values form one of the multisets
    {0, 1, 2}, {0, 0, 1}, {0, 0, 2}. For a pair (u, v) the third rows z that break the last
    rule are exactly those with z = u + v wherever u or v is 0, z != 0 where u and v are
    different non-zeros, and anything where u = v != 0; they are found by a hash join grouped
    by the common support of u and v. Meant for sets up to a few thousand rows.
    """
    a = np.asarray(rows)
    if a.ndim != 2:
        return f"expected a 2-d array of rows, got shape {a.shape}"
    num, n = a.shape
    if num == 0:
        return None
    if not np.isin(a, (0, 1, 2)).all():
        return "entries must be 0, 1 or 2"
    a = a.astype(np.int64)
    nz = a != 0
    weights = nz.sum(axis=1)
    if (weights != weights[0]).any():
        return f"rows have different weights: {sorted(set(weights.tolist()))}"
    if n > 62:
        return f"n={n} is too large for this checker (max 62)"
    bits = np.int64(1) << np.arange(n, dtype=np.int64)
    supp = nz.astype(np.int64) @ bits
    if np.unique(supp).size != num:
        return "two rows share a support (or a row is repeated)"
    if num < 3:
        return None
    if n > 39:  # base-3 codes below must fit in int64
        return f"n={n} is too large for the triple check (max 39)"
    pw3 = 3 ** np.arange(n, dtype=np.int64)
    full = a @ pw3
    left, right = np.triu_indices(num, 1)
    common = supp[left] & supp[right]
    order = np.argsort(common, kind="stable")
    left, right, common = left[order], right[order], common[order]
    starts = np.flatnonzero(np.r_[True, common[1:] != common[:-1]])
    ends = np.r_[starts[1:], common.size]
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        cmask = (common[s] & bits) != 0  # coordinates where both u and v are non-zero
        off = ~cmask
        # z must equal u + v off the common support: compare base-3 codes there.
        z_codes = (a * off) @ pw3
        zo = np.argsort(z_codes, kind="stable")
        z_sorted = z_codes[zo]
        u, v = left[s:e], right[s:e]
        target = full[u] + full[v] - ((a[u] + a[v]) * cmask) @ pw3
        lo = np.searchsorted(z_sorted, target, side="left")
        hi = np.searchsorted(z_sorted, target, side="right")
        for k in np.flatnonzero(hi > lo).tolist():
            ui, vi = int(u[k]), int(v[k])
            need_nonzero = cmask & (a[ui] != a[vi])
            for z in zo[lo[k] : hi[k]].tolist():
                if z in (ui, vi):
                    continue
                if (a[z][need_nonzero] != 0).all():
                    return (
                        f"rows {ui}, {vi}, {z} have no coordinate with values "
                        f"{{0,1,2}}, {{0,0,1}} or {{0,0,2}}"
                    )
    return None


def is_admissible(rows: np.ndarray | Sequence[Sequence[int]]) -> bool:
    """True iff ``rows`` is an admissible set (see :func:`find_violation`)."""
    return find_violation(rows) is None


# ---------------------------------------------------------------------------------------------
# The task.
# ---------------------------------------------------------------------------------------------
# Timeouts: in-process evaluation of the constant priority takes about 0.003 s / 0.02 s /
# 0.1 s / 0.9 s / 21 s (n = 12 ... 24) on one core, almost all of it in the greedy; candidate
# priorities written in slow Python cost ~1-5 ms per call, so the budgets below allow a few
# milliseconds per candidate on top of >20x the constant priority's time.
_SETTINGS = (
    Setting(
        name="n12_w7",
        params={"n": 12, "w": 7},
        description="n=12, w=7: 448 candidates (4 blocks); maximum C(12,7)=792, "
        "FunSearch's skeleton with priority 0 reaches 548.",
        timeout_s=20.0,
    ),
    Setting(
        name="n15_w10",
        params={"n": 15, "w": 10},
        description="n=15, w=10 (training setting): 2,432 candidates (5 blocks); maximum "
        "C(15,10)=3003, priority 0 reaches 1842, FunSearch's program 3003.",
        timeout_s=30.0,
    ),
    Setting(
        name="n18_w12",
        params={"n": 18, "w": 12},
        description="n=18, w=12: 15,024 candidates (6 blocks); maximum C(18,12)=18,564.",
        timeout_s=120.0,
    ),
    Setting(
        name="n21_w15",
        params={"n": 21, "w": 15},
        description="n=21, w=15: 68,768 candidates (7 blocks); maximum C(21,15)=54,264, "
        "FunSearch's published set has 43,596 rows.",
        timeout_s=600.0,
        slow=True,
    ),
    Setting(
        name="n24_w17",
        params={"n": 24, "w": 17},
        description="n=24, w=17: 435,712 candidates (8 blocks); maximum C(24,17)=346,104, "
        "FunSearch's published set has 237,984 rows.",
        timeout_s=3600.0,
        slow=True,
    ),
)


class AdmissibleSetTask(Task):
    """Evolve the priority that orders FunSearch's symmetric admissible-set greedy."""

    name = "admissible_set"
    function_name = "priority"
    signature = "def priority(el: tuple[int, ...], n: int, w: int) -> float:"
    template_program = '''import numpy as np


def priority(el: tuple[int, ...], n: int, w: int) -> float:
    """Returns the priority with which we want to add `el` to the admissible set.

    Args:
        el: a candidate vector of length n with entries in {0, 1, 2} and exactly w non-zero
            entries (a tuple of Python ints).
        n: the length of the vectors (a multiple of 3).
        w: the number of non-zero entries of every vector.

    Returns:
        A finite real number; candidates with higher priority are added first.
    """
    return 0.0
'''
    description = (
        "Design a priority function for a greedy construction of large admissible sets "
        "(a combinatorial problem related to cap sets). An admissible set A(n, w) is a "
        "set of vectors in {0, 1, 2}^n where every vector has exactly w non-zero entries, no "
        "two vectors have the same set of non-zero positions, and any three distinct vectors "
        "have some coordinate whose three values are {0, 1, 2}, {0, 0, 1} or {0, 0, 2}. "
        "The n coordinates are grouped into n/3 consecutive blocks of three, and every block "
        "holds one of the triples (0,0,0), (0,0,1), (0,0,2), (0,1,2), (0,2,1), (1,1,1), "
        "(2,2,2). The candidates `el` are all concatenations of such triples with exactly w "
        "non-zero entries in total, given as a tuple of n ints. Your function "
        "priority(el, n, w) is called once per candidate; then the construction repeatedly "
        "adds the remaining candidate of highest priority (the earliest one on ties) and "
        "discards every remaining candidate that would conflict with the rows chosen so far. "
        "Finally each chosen row is expanded by cyclically rotating its non-constant blocks, "
        "and the score is the size of the resulting admissible set: larger is better, and "
        "C(n, w) is the largest possible. A good priority orders the candidates so that early "
        "choices block as few other candidates as possible; it only sees the vector itself, "
        "must be deterministic, must return a finite float, and should work for any n "
        "divisible by 3 (it is tested on several (n, w))."
    )
    metric_name = "admissible set size"
    metric_lower_is_better = False
    settings = {s.name: s for s in _SETTINGS}
    default_setting = "n15_w10"

    def build_instances(self, setting: Setting) -> AdmissibleSetInstances:
        return build_candidates(int(setting.params["n"]), int(setting.params["w"]))

    def measure(
        self, fn: Callable[..., Any], instances: AdmissibleSetInstances, setting: Setting
    ) -> Measurement:
        inst = instances
        chosen = greedy_select(priorities(fn, inst), inst)
        size = int(inst.expanded_sizes[chosen].sum())
        max_possible = math.comb(inst.n, inst.w)
        return Measurement(
            metric=float(size),
            score=float(size),
            details={
                "n": inst.n,
                "w": inst.w,
                "pre_admissible_rows": int(chosen.size),
                "max_possible": max_possible,
                "fraction_of_max": size / max_possible,
            },
        )


__all__ = [
    "AdmissibleSetTask",
    "AdmissibleSetInstances",
    "TRIPLES",
    "TRIPLE_WEIGHTS",
    "BAD_SORTED_TRIPLES",
    "BAD_TABLE",
    "build_candidates",
    "greedy_select",
    "priorities",
    "expand",
    "construct",
    "find_violation",
    "is_admissible",
]
