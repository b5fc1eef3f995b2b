"""Bootstrap intervals: coverage at roughly the nominal rate, determinism, degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aad_kit.evaluation.stats import (
    bootstrap_ci,
    bootstrap_diff,
    bootstrap_mean,
    top_k_mean,
    wilson_interval,
)

REPS = 300  # repeated experiments per coverage check
N_BOOT = 600


def _coverage(draw, truth, make_ci, reps=REPS, seed=123):
    rng = np.random.default_rng(seed)
    hits = 0
    for r in range(reps):
        ci = make_ci(draw(rng), r)
        hits += ci.lo <= truth <= ci.hi
    return hits / reps


def test_mean_interval_covers_the_true_mean_at_about_the_nominal_rate():
    cov = _coverage(lambda rng: rng.normal(3.0, 2.0, size=40), 3.0,
                    lambda x, r: bootstrap_ci(x, "mean", n_boot=N_BOOT, confidence=0.9, seed=r))
    # percentile bootstrap slightly under-covers at n = 40; 300 reps -> sd of ~0.017
    assert 0.83 <= cov <= 0.96, cov


def test_skewed_distribution_coverage_is_reasonable():
    cov = _coverage(lambda rng: rng.exponential(1.0, size=60), 1.0,
                    lambda x, r: bootstrap_ci(x, n_boot=N_BOOT, confidence=0.95, seed=r))
    assert 0.88 <= cov <= 0.99, cov


def test_proportion_interval_covers_the_true_rate():
    cov = _coverage(lambda rng: (rng.random(50) < 0.3).astype(float), 0.3,
                    lambda x, r: bootstrap_ci(x, n_boot=N_BOOT, confidence=0.9, seed=r))
    assert 0.82 <= cov <= 0.97, cov


def test_nanmean_interval_covers_the_mean_over_valid_answers():
    def draw(rng):
        x = rng.normal(10.0, 1.0, size=60)
        x[rng.random(60) < 0.4] = np.nan  # 40 % invalid answers
        return x

    cov = _coverage(draw, 10.0,
                    lambda x, r: bootstrap_ci(x, "nanmean", n_boot=N_BOOT, confidence=0.9, seed=r))
    assert 0.83 <= cov <= 0.96, cov


def test_unpaired_and_paired_difference_cover_the_true_difference():
    cov = _coverage(lambda rng: (rng.normal(0, 1, 40), rng.normal(0.5, 1, 40)), 0.5,
                    lambda ab, r: bootstrap_diff(*ab, n_boot=N_BOOT, confidence=0.9, seed=r))
    assert 0.83 <= cov <= 0.97, cov

    def correlated(rng):
        common = rng.normal(0, 1, 40)
        return common + rng.normal(0, 0.3, 40), common + 0.5 + rng.normal(0, 0.3, 40)

    cov_p = _coverage(correlated, 0.5, lambda ab, r: bootstrap_diff(
        *ab, paired=True, n_boot=N_BOOT, confidence=0.9, seed=r))
    assert 0.83 <= cov_p <= 0.97, cov_p


def test_pairing_narrows_the_interval_for_correlated_samples():
    rng = np.random.default_rng(0)
    common = rng.normal(0, 1, 60)
    a, b = common + rng.normal(0, 0.2, 60), common + 0.3 + rng.normal(0, 0.2, 60)
    paired = bootstrap_diff(a, b, paired=True, seed=1)
    unpaired = bootstrap_diff(a, b, paired=False, seed=1)
    assert paired.width < unpaired.width / 2
    assert paired.excludes(0.0) and not unpaired.excludes(0.0)
    with pytest.raises(ValueError, match="equal lengths"):
        bootstrap_diff(a, b[:-1], paired=True)


def test_same_seed_same_interval_and_estimate_is_the_plain_statistic():
    x = np.random.default_rng(5).normal(size=25)
    a, b = bootstrap_ci(x, seed=7), bootstrap_ci(x, seed=7)
    assert a == b
    assert bootstrap_ci(x, seed=8) != a
    assert a.estimate == pytest.approx(float(np.mean(x)))
    assert a.lo < a.estimate < a.hi
    assert a.n == 25 and a.n_boot == 2000 and a.confidence == 0.95
    # chunked resampling (large n) gives an interval of the right size
    big = np.random.default_rng(1).normal(size=5000)
    ci = bootstrap_ci(big, n_boot=500, seed=0)
    assert ci.width == pytest.approx(2 * 1.96 / math.sqrt(5000), rel=0.2)


def test_all_invalid_answers_give_nan_mean_and_zero_valid_rate():
    scores = np.full(8, np.nan)
    ms = bootstrap_ci(scores, "nanmean")
    assert math.isnan(ms.estimate) and math.isnan(ms.lo) and math.isnan(ms.hi)
    assert not ms.defined and not ms.excludes(0.0)
    vr = bootstrap_ci(np.zeros(8))
    assert (vr.estimate, vr.lo, vr.hi) == (0.0, 0.0, 0.0)
    lo, hi = wilson_interval(0, 8)
    assert lo == 0.0 and 0.3 < hi < 0.35  # the bootstrap collapses, Wilson does not
    assert math.isnan(bootstrap_mean([np.nan, np.nan]).estimate)
    d = bootstrap_diff(scores, np.arange(8.0), "nanmean")
    assert math.isnan(d.estimate) and not d.excludes(0.0)


def test_one_observation_has_an_estimate_but_no_interval():
    ci = bootstrap_ci([4.2])
    assert ci.estimate == 4.2 and ci.n == 1
    assert math.isnan(ci.lo) and math.isnan(ci.hi)
    empty = bootstrap_ci([])
    assert empty.n == 0 and math.isnan(empty.estimate)
    d = bootstrap_diff([1.0], [2.0], paired=True)
    assert d.estimate == 1.0 and math.isnan(d.lo)


def test_resamples_without_a_valid_answer_are_dropped_and_counted():
    x = np.array([np.nan] * 9 + [5.0])  # one valid answer in ten
    ci = bootstrap_ci(x, "nanmean", n_boot=1000, seed=0)
    assert ci.estimate == 5.0 and ci.lo == ci.hi == 5.0
    # P(no valid in a resample) = 0.9 ** 10 ~ 0.35
    assert 250 < ci.n_failed < 450


def test_wilson_interval_known_values_and_errors():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_top_k_mean():
    assert top_k_mean([1.0, np.nan, 3.0, 2.0], 1) == 3.0
    assert top_k_mean([1.0, np.nan, 3.0, 2.0], 2) == 2.5
    assert math.isnan(top_k_mean([1.0, np.nan], 2))  # fewer than k valid: undefined, not 0
    with pytest.raises(ValueError):
        top_k_mean([1.0], 0)


def test_bad_arguments():
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], n_boot=0)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="unknown statistic"):
        bootstrap_ci([1.0, 2.0], "median")
    ci = bootstrap_ci([1.0, 2.0, 3.0], lambda x, axis: np.median(x, axis=axis), seed=0)
    assert ci.estimate == 2.0


def test_power_table_does_not_claim_power_without_a_score_spread():
    """Quick run 2026-12-01: every valid student answer scored 1842 (the template), so the
    pooled sd was 0 and the table said a difference of 0 was detectable with power 1.
    With no spread the score power is unknown (NaN, with a note); the valid-rate power stays."""
    from types import SimpleNamespace

    import pandas as pd

    from aad_kit.evaluation import report

    cell = SimpleNamespace(task="admissible_set", setting="n15_w10", role="train")
    rows = [{"task": "admissible_set", "setting": "n15_w10", "model": m, "valid": i < 4,
             "score": 1842.0 if i < 4 else float("nan")} for m in ("base", "tuned") for i in range(32)]
    t = report.power_table(pd.DataFrame(rows), SimpleNamespace(cells=[cell]), gap=780.0)
    r = t.iloc[0]
    assert r["score_sd"] == 0 and math.isnan(r["detectable_mean_diff_80pct"]) and math.isnan(r["power_for_database_gap"])
    assert "no spread" in r["note"] and 0 < r["power_valid_rate_10pts"] < 1
    spread = [dict(x, score=1842.0 + 10 * (i % 3)) if x["valid"] else x for i, x in enumerate(rows)]
    r = report.power_table(pd.DataFrame(spread), SimpleNamespace(cells=[cell]), gap=780.0).iloc[0]
    assert r["detectable_mean_diff_80pct"] > 0 and 0 < r["power_for_database_gap"] <= 1 and r["note"] == ""
