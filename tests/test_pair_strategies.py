"""The baselines' defining properties, the registry, diversity measures, comparisons and pictures."""

from __future__ import annotations

import math
import warnings

import matplotlib
import numpy as np
import pytest

from aad_kit.preference import (
    STRATEGY_NAMES,
    PairConfig,
    PreferenceDataError,
    compare_strategies,
    register_strategy,
    sample_pairs,
    summarize,
)
from aad_kit.preference import diversity as dv
from aad_kit.preference import plots as pplots
from aad_kit.preference.strategies import STRATEGIES, extreme_k, resolve_min_gap
from tests.test_dar import FAMILIES, family_code, family_records, rec

matplotlib.use("Agg")


def _quiet(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sample_pairs(*args, **kw)


def _common_checks(ps) -> None:
    seen = set()
    for p in ps.pairs:
        assert p.chosen.valid
        if p.rejected.valid:
            assert p.chosen.score > p.rejected.score  # y+ is always strictly better
        key = (p.chosen.id, p.rejected.id)
        assert key not in seen
        seen.add(key)


# ---------------------------------------------------------------------------- registry
def test_registry():
    assert STRATEGY_NAMES == ("dar", "dar_diverse", "random", "min_gap", "top_bottom", "half_zip")
    with pytest.raises(ValueError, match="choose one of: dar, dar_diverse, random"):
        sample_pairs([rec(1, 1.0), rec(2, 2.0)], "best_of")
    for taken in ("dar", "random"):
        with pytest.raises(ValueError, match="already registered"):
            register_strategy(taken, STRATEGIES["random"])

    def first_last(pool, n, use_failed):
        from aad_kit.preference.core import make_pair

        return [make_pair(pool, 0, len(pool.valid) - 1, "first_last")], []

    register_strategy("first_last", first_last)
    try:
        ps = sample_pairs(family_records(2, 3), "first_last")
        assert len(ps) == 1 and ps.pairs[0].chosen_rank == 0
    finally:
        STRATEGIES.pop("first_last")
    # overrides go into the config
    ps = sample_pairs(family_records(4, 4), "random", n_pairs=5, seed=9)
    assert len(ps) == 5 and ps.config.seed == 9


# ---------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_every_strategy_orders_pairs_and_is_deterministic(strategy):
    recs = family_records(6, 6, seed=1)
    a = _quiet(recs, strategy, PairConfig(seed=4, n_pairs=10))
    b = _quiet(list(reversed(recs)), strategy, PairConfig(seed=4, n_pairs=10))
    _common_checks(a)
    assert [(p.chosen.id, p.rejected.id) for p in a.pairs] == [(p.chosen.id, p.rejected.id) for p in b.pairs]
    assert all(p.strategy == strategy for p in a.pairs)


def test_random_pairs_cover_all_orders():
    recs = family_records(3, 4, seed=2)  # 12 algorithms -> 66 possible pairs
    ps = _quiet(recs, "random", PairConfig(n_pairs=66))
    assert len(ps) == 66  # every unordered pair once, ordered better-first
    _common_checks(ps)
    assert len(_quiet(recs, "random", PairConfig(n_pairs=100))) == 66
    # it also pairs neighbours in the ranking (gap-free), unlike DAR
    assert min(p.rejected_rank - p.chosen_rank for p in ps.pairs) == 1


def test_min_gap_respects_the_gap():
    recs = family_records(6, 6, seed=3)
    ps = _quiet(recs, "min_gap", PairConfig(min_gap=1.0, n_pairs=40))
    assert len(ps) == 40 and all(p.score_gap >= 1.0 for p in ps.pairs)
    default = _quiet(recs, "min_gap")
    s = default.pool.scores
    assert resolve_min_gap(default.pool) == pytest.approx(0.1 * (s.max() - s.min()))
    assert all(p.score_gap >= resolve_min_gap(default.pool) for p in default.pairs)
    with pytest.raises(PreferenceDataError):
        sample_pairs(recs, "min_gap", PairConfig(min_gap=1e6))


def test_top_bottom_uses_the_extremes():
    recs = family_records(5, 8, seed=4)  # 40 algorithms
    ps = _quiet(recs, "top_bottom")
    n = len(ps.pool.valid)
    k = extreme_k(ps.pool, n)
    assert k == 10  # 1 / n_subsets of the ranking
    assert len(ps) == 40 and all(p.chosen_rank < k and p.rejected_rank >= n - k for p in ps.pairs)
    ps = _quiet(recs, "top_bottom", PairConfig(extreme_fraction=0.1))
    assert all(p.chosen_rank < 4 and p.rejected_rank >= n - 4 for p in ps.pairs)
    assert len(ps) == 16  # all of the 4 x 4 extreme pairs


def test_half_zip_pairs_ith_with_ith():
    recs = family_records(3, 7, seed=5)  # 21 algorithms: h = 10, the middle one is left out
    ps = _quiet(recs, "half_zip")
    n, h = 21, 10
    assert len(ps) == h
    assert sorted((p.chosen_rank, p.rejected_rank) for p in ps.pairs) == [(i, n - h + i) for i in range(h)]
    assert all(p.chosen_rank != 10 and p.rejected_rank != 10 for p in ps.pairs)
    sub = _quiet(recs, "half_zip", PairConfig(n_pairs=4, seed=1))
    assert len(sub) == 4 and all(p.rejected_rank == p.chosen_rank + (n - h) for p in sub.pairs)
    with pytest.warns(UserWarning, match="10 of 30"):
        sample_pairs(recs, "half_zip", PairConfig(n_pairs=30))


@pytest.mark.parametrize("strategy", [n for n in STRATEGY_NAMES if n != "dar"])
def test_failed_as_rejected_for_every_strategy(strategy):
    recs = family_records(6, 5, seed=6, n_failed=15)
    failed_ids = {r["id"] for r in recs if r["status"] != "ok"}
    off = _quiet(recs, strategy, PairConfig(n_pairs=12))
    assert not {p.rejected.id for p in off.pairs} & failed_ids
    on = _quiet(recs, strategy, PairConfig(n_pairs=12, failed_as_rejected=True))
    _common_checks(on)
    assert not {p.chosen.id for p in on.pairs} & failed_ids  # never chosen
    failed_pairs = [p for p in on.pairs if p.rejected.id in failed_ids]
    assert failed_pairs and all(p.rejected_rank is None and math.isnan(p.score_gap) for p in failed_pairs)
    assert all(p.rejected_subset == on.pool.failed_subset for p in failed_pairs)


def test_equal_scores_give_no_baseline_pairs():
    recs = [rec(i, 3.0) for i in range(1, 6)]
    for strategy in STRATEGY_NAMES[1:]:  # the paper's DAR: test_paper_dar
        with pytest.raises(PreferenceDataError, match="same score"):
            sample_pairs(recs, strategy)


# ---------------------------------------------------------------------------- diversity measures
def test_similarity_measures():
    v1, v2 = family_code(0, 1, 0, 0), family_code(0, 2, 1, 1)
    other = family_code(3, 1, 0, 0)
    assert dv.code_similarity(v1, v1) == 1.0
    assert dv.code_similarity(v1, "# comment\n" + v1) == 1.0  # normalised code
    assert dv.code_similarity(v1, v2) >= 0.9 > 0.7 > dv.code_similarity(v1, other)
    assert dv.code_similarity(v1, v2, "shape") == 1.0  # only constants differ
    renamed = v1.replace("s = ", "total = ").replace("s + ", "total + ")
    assert dv.ast_shape(renamed) == dv.ast_shape(v1) and dv.code_similarity(v1, renamed, "shape") == 1.0
    assert dv.ast_shape(family_code(2)) != dv.ast_shape(family_code(7))
    assert dv.ast_shape("def f(:") == "def f(:"  # unparseable: its own shape
    # regression: an f-string's literal parts stay strings (a teacher program broke stage 4)
    fstr = dv.ast_shape('def f(x):\n    s = f"a{x + 1}b{3}"\n    return len(s)\n')
    assert "f'a{v0 + <int>}b{<int>}'" in fstr
    codes = [family_code(f, a, 0, 0) for f in range(len(FAMILIES)) for a in (1, 2)]
    sim = dv.similarity_matrix(codes)
    assert sim.shape == (16, 16) and np.allclose(sim, sim.T) and np.allclose(np.diag(sim), 1)
    labels = dv.structure_clusters(codes, 0.9)
    assert labels.tolist() == [f for f in range(len(FAMILIES)) for _ in (1, 2)]
    # single linkage: any two programs at or above the threshold share a family
    i, j = np.nonzero(sim >= 0.5)
    assert all(labels_eq for labels_eq in (dv.structure_clusters(codes, 0.5)[i] == dv.structure_clusters(codes, 0.5)[j]))
    assert dv.n_structures(codes, 0.9) == len(FAMILIES) and dv.n_distinct_shapes(codes) == len(FAMILIES)
    assert dv.n_structures([]) == 0 and math.isnan(dv.mean_pairwise_similarity(codes[:1]))
    assert dv.reuse_counts([3, 3, 5]) == {3: 2, 5: 1}
    with pytest.raises(ValueError):
        dv.code_tokens(v1, "bytes")


# ---------------------------------------------------------------------------- comparison
def test_compare_strategies_quality_and_diversity():
    recs = family_records(10, 6, seed=7, n_failed=6)
    names = [n for n in STRATEGY_NAMES if n != "dar"]  # the paper's DAR: tests in test_paper_dar
    sets, summary = compare_strategies(recs, names)
    assert list(summary["strategy"]) == names
    n_dar = len(sets["dar_diverse"])
    # equal size: every baseline was asked for DAR's number of pairs (half_zip has at most N/2)
    for name, ps in sets.items():
        assert len(ps) == min(n_dar, len(ps.pool.valid) // 2) if name == "half_zip" else len(ps) == n_dar
    row = summary.set_index("strategy")
    # DAR's chosen set has no near-duplicates: each distinct chosen answer is its own family
    assert row.loc["dar_diverse", "chosen_families"] == row.loc["dar_diverse", "distinct_chosen"]
    assert row.loc["dar_diverse", "chosen_similarity"] <= row.loc["random", "chosen_similarity"]
    assert row.loc["dar_diverse", "max_chosen_reuse"] <= 2
    # DAR's y+ come from the better half and a whole subset lies between y+ and y-: its
    # smallest gap spans that subset, while random pairs also take near neighbours
    n_valid = len(sets["dar_diverse"].pool.valid)
    assert max(p.chosen_rank for p in sets["dar_diverse"].pairs) < n_valid / 2
    assert row.loc["dar_diverse", "min_gap"] > row.loc["random", "min_gap"]
    s = summarize(sets["dar_diverse"])
    assert s["n_pairs"] == n_dar and s["pairs_per_s"] > 0
    # a strategy that cannot form a pair is reported, not raised
    _, bad = compare_strategies([rec(1, 1.0), rec(2, 1.0)], ["dar_diverse", "random"])
    assert list(bad["n_pairs"]) == [0, 0] and bad["error"].str.contains("same score").all()


# ---------------------------------------------------------------------------- pictures
def test_figures_and_inspector_build_headless():
    import ipywidgets

    recs = family_records(8, 5, seed=8, n_failed=5)
    sets, summary = compare_strategies(recs, config=PairConfig(failed_as_rejected=True))
    figs = [pplots.fitness_subsets(sets["dar_diverse"]), pplots.fitness_subsets(sets["dar_diverse"].pool),
            pplots.pair_gaps(sets), pplots.quality_vs_diversity(summary),
            pplots.subset_heatmap(sets["dar_diverse"]), pplots.subset_heatmaps(sets)]
    for fig in figs:
        assert fig.axes
    counts = pplots._subset_counts(sets["dar_diverse"])
    assert counts.sum() == len(sets["dar_diverse"]) and counts[:, -1].sum() == sum(p.rejected_failed for p in sets["dar_diverse"].pairs)
    assert np.all(np.tril(counts[:, :-1]) == 0)  # DAR: y+ subset always above y- subset
    w = pplots.pair_inspector(sets["dar_diverse"])
    assert isinstance(w, ipywidgets.VBox)
    html = w.children[1].value
    assert "y+ chosen" in html and "y- rejected" in html
    w.children[0].children[1].value = True  # show the prompt
    assert "prompt x" in w.children[1].value
    w.children[0].children[0].value = len(sets["dar_diverse"]) - 1
    from aad_kit.preference import to_dataset

    assert isinstance(pplots.pair_inspector(to_dataset(sets["dar_diverse"])), ipywidgets.VBox)
    import matplotlib.pyplot as plt

    plt.close("all")
