"""The admissible-set task: published numbers, an independent reference greedy, validation."""

from __future__ import annotations

import itertools
import math
import os
import random

import numpy as np
import pytest

from aad_kit.tasks import InvalidOutput, get_task
from aad_kit.tasks.admissible_set import (
    BAD_SORTED_TRIPLES,
    TRIPLES,
    AdmissibleSetTask,
    construct,
    expand,
    find_violation,
    greedy_select,
    is_admissible,
    priorities,
)

RUN_SLOW = os.environ.get("AAD_KIT_SLOW") == "1"
slow = pytest.mark.skipif(not RUN_SLOW, reason="slow: set AAD_KIT_SLOW=1 to run")


@pytest.fixture(scope="module")
def task() -> AdmissibleSetTask:
    t = get_task("admissible_set")
    assert isinstance(t, AdmissibleSetTask)
    return t


@pytest.fixture(scope="module")
def heur(task):
    return {name: h.function("priority") for name, h in task.heuristics().items()}


def trivial(el, n, w):
    return 0.0


def seeded_random(el, n, w):
    # A deterministic pseudo-random priority of el alone (str seeds are hashed with SHA-512).
    return random.Random(f"aad-kit/{el}").random()


def coarse(el, n, w):
    # Many ties: exercises the first-maximum tie-breaking.
    return float(el[0] + 2 * el[-1] - (el[1] == el[2]))


# ---------------------------------------------------------------------------------------------
# An independent, plain-Python reference of FunSearch's symmetric construction.
# ---------------------------------------------------------------------------------------------
REF_TRIPLES = [(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 2), (0, 2, 1), (1, 1, 1), (2, 2, 2)]
REF_WEIGHT = [sum(1 for x in t if x != 0) for t in REF_TRIPLES]


def _rotations(t):
    x, y, z = t
    return {(x, y, z), (z, x, y), (y, z, x)}


def _good(a, b, c):
    return sorted((a, b, c)) in ([0, 1, 2], [0, 0, 1], [0, 0, 2])


def derived_bad_triples():
    """Block-index triples for which some rotations leave no good coordinate in the block."""
    bad = set()
    for a, b, c in itertools.combinations_with_replacement(range(7), 3):
        for x in _rotations(REF_TRIPLES[a]):
            for y in _rotations(REF_TRIPLES[b]):
                for z in _rotations(REF_TRIPLES[c]):
                    if not any(_good(x[i], y[i], z[i]) for i in range(3)):
                        bad.add((a, b, c))
    return bad


REF_BAD = derived_bad_triples()


def reference_solve(priority, n, w):
    """Pre-admissible rows (lists of block indices) and the expanded set, loops only."""
    groups = n // 3
    children = [
        list(c)
        for c in itertools.product(range(7), repeat=groups)
        if sum(REF_WEIGHT[x] for x in c) == w
    ]
    scores = []
    for c in children:
        el = ()
        for x in c:
            el = el + REF_TRIPLES[x]
        scores.append(priority(el, n, w))
    chosen = []
    while children:
        best = 0
        for i in range(1, len(children)):
            if scores[i] > scores[best]:
                best = i
        new = children[best]
        kept_children, kept_scores = [], []
        for c, s in zip(children, scores, strict=True):
            if all(REF_WEIGHT[x] <= REF_WEIGHT[y] for x, y in zip(new, c, strict=True)):
                continue
            if all(REF_WEIGHT[x] >= REF_WEIGHT[y] for x, y in zip(new, c, strict=True)):
                continue
            if any(
                all(tuple(sorted(t)) in REF_BAD for t in zip(e, new, c, strict=True))
                for e in chosen
            ):
                continue
            kept_children.append(c)
            kept_scores.append(s)
        chosen.append(new)
        children, scores = kept_children, kept_scores
    rows = []
    for row in chosen:
        options = [
            [REF_TRIPLES[x]] if x in (0, 5, 6) else sorted(_rotations(REF_TRIPLES[x])) for x in row
        ]
        for combo in itertools.product(*options):
            rows.append(sum(combo, ()))
    return chosen, rows


def brute_force_admissible(rows):
    rows = [tuple(r) for r in rows]
    if len({tuple(x != 0 for x in r) for r in rows}) != len(rows):
        return False
    if len({sum(1 for x in r if x) for r in rows}) > 1:
        return False
    for u, v, z in itertools.combinations(rows, 3):
        if not any(_good(a, b, c) for a, b, c in zip(u, v, z, strict=True)):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Data and metadata.
# ---------------------------------------------------------------------------------------------
def test_bad_triples_match_first_principles():
    assert len(BAD_SORTED_TRIPLES) == 35
    assert set(BAD_SORTED_TRIPLES) == REF_BAD
    assert [tuple(t) for t in TRIPLES] == REF_TRIPLES


def test_metadata_and_settings(task):
    assert task.name == "admissible_set"
    assert task.function_name == "priority"
    assert task.signature == "def priority(el: tuple[int, ...], n: int, w: int) -> float:"
    assert task.signature in task.template_program
    assert task.metric_name == "admissible set size"
    assert task.metric_lower_is_better is False
    assert task.default_setting == "n15_w10"
    assert list(task.settings) == ["n12_w7", "n15_w10", "n18_w12", "n21_w15", "n24_w17"]
    assert [s.name for s in task.settings.values() if s.slow] == ["n21_w15", "n24_w17"]
    for s in task.settings.values():
        assert s.params["n"] % 3 == 0
        assert s.name == f"n{s.params['n']}_w{s.params['w']}"
        assert s.timeout_s > 0


def test_candidate_counts(task):
    for name, count in [("n12_w7", 448), ("n15_w10", 2432), ("n18_w12", 15024)]:
        inst = task.instances(name)
        assert inst.num_candidates == count
        assert all(len(el) == inst.n and sum(1 for x in el if x) == inst.w for el in inst.elements)
        assert all(type(x) is int for x in inst.elements[0])


def test_unknown_setting(task):
    with pytest.raises(KeyError, match="unknown setting 'n99_w1'"):
        task.setting("n99_w1")
    with pytest.raises(KeyError):
        task.run(trivial, "n99_w1")


def test_template_program_is_trivial(task):
    ns: dict = {}
    exec(task.template_program, ns)
    m = task.run(ns["priority"], "n15_w10")
    assert (m.metric, m.details["pre_admissible_rows"]) == (1842, 74)


# ---------------------------------------------------------------------------------------------
# Published numbers (FunSearch's admissible_set notebook).
# ---------------------------------------------------------------------------------------------
def test_trivial_n15_w10_published(task, heur):
    m = task.run(heur["trivial"], "n15_w10")
    assert m.metric == 1842 and m.score == 1842.0
    assert m.details == {
        "n": 15,
        "w": 10,
        "pre_admissible_rows": 74,
        "max_possible": 3003,
        "fraction_of_max": 1842 / 3003,
    }


def test_funsearch_n15_w10_published(task, heur):
    m = task.run(heur["funsearch_n15_w10"], "n15_w10")
    assert m.metric == 3003 == math.comb(15, 10)
    assert m.details["pre_admissible_rows"] == 101
    assert m.details["fraction_of_max"] == 1.0


def test_funsearch_n21_w15_published(task, heur):  # ~5 s
    m = task.run(heur["funsearch_n21_w15"], "n21_w15")
    assert (m.metric, m.details["pre_admissible_rows"]) == (43596, 308)


@pytest.mark.slow
@slow
def test_funsearch_n24_w17_published(task, heur):  # ~2 minutes
    m = task.run(heur["funsearch_n24_w17"], "n24_w17")
    assert (m.metric, m.details["pre_admissible_rows"]) == (237984, 736)


# ---------------------------------------------------------------------------------------------
# The vectorised greedy against the plain-Python reference.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["trivial", "seeded_random", "coarse", "funsearch_n15_w10"])
def test_greedy_matches_reference_n12(task, heur, which):
    fn = {"trivial": trivial, "seeded_random": seeded_random, "coarse": coarse}.get(which)
    fn = fn or heur[which]
    ref_pre, ref_rows = reference_solve(fn, 12, 7)
    inst = task.instances("n12_w7")
    chosen = greedy_select(priorities(fn, inst), inst)
    assert inst.blocks[chosen].tolist() == ref_pre
    m = task.run(fn, "n12_w7")
    assert m.metric == len(ref_rows)
    assert m.details["pre_admissible_rows"] == len(ref_pre)
    pre, rows = construct(fn, 12, 7)
    assert sorted(map(tuple, rows.tolist())) == sorted(ref_rows)


def test_greedy_matches_reference_n15_random(task):
    ref_pre, ref_rows = reference_solve(seeded_random, 15, 10)
    inst = task.instances("n15_w10")
    chosen = greedy_select(priorities(seeded_random, inst), inst)
    assert inst.blocks[chosen].tolist() == ref_pre
    assert task.run(seeded_random, "n15_w10").metric == len(ref_rows)


def test_deterministic(task, heur):
    for fn in (seeded_random, heur["funsearch_n15_w10"]):
        a = task.run(fn, "n12_w7")
        b = task.run(fn, "n12_w7")
        assert a == b


# ---------------------------------------------------------------------------------------------
# The admissible-set checker and the expansion.
# ---------------------------------------------------------------------------------------------
def test_checker_agrees_with_brute_force():
    rng = random.Random(7)
    outcomes = set()
    for _ in range(300):
        n, w = rng.choice([(4, 2), (5, 3), (6, 3), (6, 4)])
        pool = list(itertools.combinations(range(n), w))
        supports = rng.sample(pool, rng.randint(1, min(9, len(pool))))
        rows = []
        for s in supports:
            r = [0] * n
            for i in s:
                r[i] = rng.choice((1, 2))
            rows.append(r)
        expected = brute_force_admissible(rows)
        assert is_admissible(np.array(rows)) == expected, rows
        outcomes.add(expected)
    assert outcomes == {True, False}


def test_checker_rejects_malformed():
    assert find_violation(np.array([[1, 0], [1, 0]])) is not None  # repeated support
    assert find_violation(np.array([[1, 0], [0, 0]])) is not None  # weights differ
    assert find_violation(np.array([[3, 0], [0, 1]])) is not None  # entry out of range
    assert find_violation(np.zeros((0, 3), dtype=int)) is None
    # Weight 2, distinct supports, but every coordinate holds {0, 1, 1}: not admissible.
    bad = [(1, 1, 0), (1, 0, 1), (0, 1, 1)]
    assert not brute_force_admissible(bad)
    assert not is_admissible(np.array(bad))


@pytest.mark.parametrize("which", ["trivial", "funsearch_n15_w10", "balanced_blocks"])
def test_constructed_sets_are_admissible_n12(heur, which):
    pre, rows = construct(heur[which], 12, 7)
    assert len({tuple(r) for r in rows.tolist()}) == len(rows)
    assert is_admissible(rows)


@pytest.mark.slow
@slow
def test_funsearch_n15_set_is_admissible(heur):  # ~20 s
    pre, rows = construct(heur["funsearch_n15_w10"], 15, 10)
    assert rows.shape == (3003, 15) and pre.shape == (101, 5)
    assert is_admissible(rows)


def test_expand_rotations():
    rows = expand([[3, 0]])  # (0,1,2) rotated three ways, then (0,0,0)
    assert sorted(map(tuple, rows.tolist())) == sorted(
        [(0, 1, 2, 0, 0, 0), (2, 0, 1, 0, 0, 0), (1, 2, 0, 0, 0, 0)]
    )
    assert len(expand([[1, 4, 5]])) == 9


# ---------------------------------------------------------------------------------------------
# Output validation.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, pattern",
    [
        (float("nan"), "NaN"),
        (np.float64("nan"), "NaN"),
        ("1.0", "str"),
        (None, "NoneType"),
        (np.array([1.0, 2.0]), "ndarray"),
        ([1.0], "list"),
        (1 + 2j, "complex"),
        (10**400, "float"),
    ],
)
def test_invalid_outputs(task, value, pattern):
    def bad(el, n, w):
        return value if el[-1] == 2 else 0.0

    with pytest.raises(InvalidOutput, match=pattern) as info:
        task.run(bad, "n12_w7")
    assert "el=(" in str(info.value)


def test_numeric_scalar_types_accepted(task):
    ref = task.run(coarse, "n12_w7").metric
    for conv in (int, np.float32, np.int64, lambda x: np.array(x)):
        assert task.run(lambda el, n, w, c=conv: c(coarse(el, n, w)), "n12_w7").metric == ref
    assert task.run(lambda el, n, w: el[0] == 1, "n12_w7").metric > 0  # bools are numbers


def test_shipped_heuristics_run(task):
    hs = task.heuristics()
    assert {"trivial", "funsearch_n15_w10"} <= set(hs)
    for name, h in hs.items():
        assert h.source, name
        m = task.run(h.function("priority"), "n12_w7")
        assert m.metric > 0, name
        assert m.metric <= math.comb(12, 7)


def test_infinite_priorities_are_allowed(task):
    """+-inf orders deterministically (first maximum wins, as np.argmax); only NaN is rejected."""

    def with_value(big):
        return lambda el, n, w: big if el[0] == 2 else coarse(el, n, w)

    assert task.run(with_value(math.inf), "n12_w7").metric == task.run(with_value(1e9), "n12_w7").metric
    assert task.run(with_value(-math.inf), "n12_w7").metric == task.run(with_value(-1e9), "n12_w7").metric
    assert task.run(lambda el, n, w: -math.inf, "n12_w7").metric == task.run(lambda el, n, w: 0.0, "n12_w7").metric
