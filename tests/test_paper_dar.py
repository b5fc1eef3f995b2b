"""The paper's DAR (strategy ``dar``): the constants and rules of the authors' dataset creator."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from aad_kit.preference import (
    PairConfig,
    PreferenceDataError,
    paper_dar_pairs,
    sample_pairs,
    subset_probabilities,
    tied_share,
)
from aad_kit.preference.paper_dar import build_paper_pool


def rec(id: int, score: float | None, code: str | None = None, status: str = "ok", **kw) -> dict:
    return {"id": id, "score": score, "status": status, "operator": kw.get("operator", "m1"),
            "code": code if code is not None else f"def priority(el, n, w):\n    return {id}\n",
            "idea": f"idea {id}", "raw_response": None, "task": "admissible_set",
            "setting": "n15_w10", "run_id": "r", "duplicate_of": kw.get("duplicate_of")}


def test_subset_probabilities_are_the_papers():
    p = subset_probabilities(10, 7, 3.0)
    # P(i) ∝ exp((M - 4 - i) / tau): 0.314, 0.225, 0.161, 0.116, 0.083, 0.059, 0.043
    assert p == pytest.approx([0.314, 0.225, 0.161, 0.116, 0.083, 0.059, 0.043], abs=6e-4)
    cfg = PairConfig()
    assert (cfg.m_subsets, cfg.top_subsets, cfg.subset_gap, cfg.tau, cfg.paper_pairs) == (10, 7, 2, 3.0, 1000)


def test_pool_dedups_exact_code_sorts_by_score_and_cuts_equal_counts():
    recs = [rec(i, float(i)) for i in range(1, 24)]  # 23 programs, scores 1..23
    recs.append(rec(30, 99.0, code=recs[0]["code"]))  # exact copy of #1: dropped (older kept)
    recs.append(rec(31, None, status="runtime_error"))
    recs.append(rec(32, 5.0, code="   "))  # empty code
    recs.append(rec(33, -7.0))  # negative scores sort by value, not abs(): worst here
    pool = build_paper_pool(recs, PairConfig())
    assert [c.id for c in pool.valid][:3] == [23, 22, 21] and pool.valid[-1].id == 33
    assert 30 not in {c.id for c in pool.valid} and pool.skipped["exact duplicate code"] == 1
    sizes = Counter(pool.subset.tolist())
    assert sorted(sizes) == list(range(10)) and set(sizes.values()) <= {2, 3}  # 24 into 10
    assert np.all(np.diff(pool.subset) >= 0)


def test_pairs_follow_the_subset_rules_and_distribution():
    recs = [rec(i, float(i)) for i in range(1, 201)]
    ps = paper_dar_pairs(recs, PairConfig(seed=3))
    assert len(ps) == 1000 and ps.strategy == "dar"
    keys = [(p.chosen.id, p.rejected.id) for p in ps.pairs]
    assert len(set(keys)) == len(keys)  # unique pairs
    assert all(p.chosen_subset <= 6 for p in ps.pairs)  # y+ from the top M - 3
    assert all(p.rejected_subset >= p.chosen_subset + 2 for p in ps.pairs)  # gap of two subsets
    assert all(p.chosen.score > p.rejected.score for p in ps.pairs)
    # the y+ subset frequencies follow exp((M-4-i)/tau) (1000 draws: within 4 points)
    freq = np.bincount([p.chosen_subset for p in ps.pairs], minlength=7)[:7] / len(ps)
    assert np.abs(freq - subset_probabilities(10, 7, 3.0)).max() < 0.04
    # y- uniform over i+2..M-1: from y+ subset 0, each of subsets 2..9 is equally likely
    rej = Counter(p.rejected_subset for p in ps.pairs if p.chosen_subset == 0)
    assert set(rej) == set(range(2, 10)) and min(rej.values()) > 0.4 * max(rej.values())
    again = paper_dar_pairs(list(reversed(recs)), PairConfig(seed=3))
    assert [(p.chosen.id, p.rejected.id) for p in again.pairs] == keys  # deterministic
    assert sample_pairs(recs, "dar", PairConfig(seed=3)).pairs == ps.pairs
    assert tied_share(ps) == 0.0


def test_ties_may_straddle_subsets_and_are_counted():
    recs = [rec(i, 1.0 if i > 4 else 2.0 + i) for i in range(1, 41)]  # 36 tied programs
    ps = paper_dar_pairs(recs, PairConfig(seed=0, n_pairs=200))
    assert 0 < tied_share(ps) < 1
    assert all(p.chosen.score >= p.rejected.score for p in ps.pairs)


def test_too_few_programs_and_invalid_options_are_clear_errors():
    with pytest.raises(PreferenceDataError, match="at least m_subsets = 10"):
        paper_dar_pairs([rec(i, float(i)) for i in range(1, 10)])
    with pytest.raises(PreferenceDataError, match="dar_diverse"):
        paper_dar_pairs([rec(i, float(i)) for i in range(1, 30)], PairConfig(failed_as_rejected=True))
    small = paper_dar_pairs([rec(i, float(i)) for i in range(1, 11)])  # 10 programs, 1 per subset
    # feasible unique pairs: sum over i in 0..6 of (10 - (i + 2)) = 8+7+...+2 = 35
    assert len(small) == 35 and not math.isnan(small.pairs[0].score_gap)
    for bad in ({"m_subsets": 2}, {"subset_gap": 10}, {"top_subsets": 9}, {"tau": 0.0}):
        with pytest.raises(ValueError):
            PairConfig(**bad)
