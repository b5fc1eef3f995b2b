"""Bootstrap confidence intervals for the generalisation study (numpy only, seeded).

Everything here is a *percentile bootstrap*: draw ``n_boot`` resamples of the observations
with replacement, compute the statistic on each, and report the ``(1 - c) / 2`` and
``(1 + c) / 2`` quantiles of those values as the ``c`` confidence interval. Resampling is
vectorised (a ``(chunk, n)`` index matrix at a time) and uses
``numpy.random.default_rng(seed)``, so the same data and seed always give the same interval.

What is resampled is the caller's choice; :mod:`aad_kit.evaluation.generalisation` resamples

* *answers* (every ``(seed, sample)`` answer of a model on a setting is one observation) for
  the valid rate and the mean score over valid answers: answers to the same prompt are
  independent draws from the model whatever the sampling seed, so they are the natural unit;
* *seeds* for the per-seed top-k means (best-of-N is a property of one seed's N answers).

Honest-reporting rules built in:

* A statistic that is undefined on the data (e.g. the mean score of a model with no valid
  answer) is ``NaN`` with a ``NaN`` interval, never 0.
* Fewer than ``min_n`` (default 2) observations: the point estimate is reported but the
  interval is ``NaN``: one observation says nothing about spread.
* Resamples on which the statistic is undefined (a resample that happens to contain no valid
  answer) are dropped and counted in :attr:`BootstrapCI.n_failed`; the interval is then
  conditional on the statistic being defined.
* A proportion of exactly 0 or 1 has a zero-width percentile interval (every resample gives
  the same value). :func:`wilson_interval` is the better interval there and is reported next
  to the bootstrap one for valid rates.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# A vectorised statistic: reduces a (rows, n) array along axis 1 to one value per row.
Statistic = Callable[..., np.ndarray]

DEFAULT_N_BOOT = 2000
DEFAULT_CONFIDENCE = 0.95
_MAX_CELLS = 2_000_000  # resample matrix entries per chunk (bounds memory for large n)


@dataclass(frozen=True)
class BootstrapCI:
    """A point estimate and its percentile-bootstrap interval."""

    estimate: float
    lo: float
    hi: float
    n: int  # observations (after dropping NaN ones where the statistic requires it)
    n_boot: int
    confidence: float
    n_failed: int = 0  # resamples on which the statistic was undefined (dropped)

    @property
    def width(self) -> float:
        return self.hi - self.lo

    @property
    def defined(self) -> bool:
        """Both bounds are numbers."""
        return not (math.isnan(self.lo) or math.isnan(self.hi))

    def excludes(self, value: float = 0.0) -> bool:
        """The interval is defined and does not contain ``value``: distinguishable from it."""
        return self.defined and (self.lo > value or self.hi < value)

    def to_dict(self, prefix: str = "") -> dict[str, Any]:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


# -------------------------------------------------------------------------------- statistics
def mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean along ``axis`` (the valid rate when ``x`` holds 0/1)."""
    return np.mean(x, axis=axis)


def nanmean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over the non-NaN entries; NaN where every entry is NaN (no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def nanmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Max over the non-NaN entries; NaN where every entry is NaN (no warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(x, axis=axis)


STATISTICS: dict[str, Statistic] = {"mean": mean, "nanmean": nanmean, "nanmax": nanmax}


def _statistic(statistic: str | Statistic) -> Statistic:
    if callable(statistic):
        return statistic
    try:
        return STATISTICS[statistic]
    except KeyError:
        raise ValueError(f"unknown statistic {statistic!r}; use one of {list(STATISTICS)} "
                         "or a callable(x, axis)") from None


def _nan_ci(estimate: float, n: int, n_boot: int, confidence: float) -> BootstrapCI:
    return BootstrapCI(float(estimate), math.nan, math.nan, n, n_boot, confidence)


def _check(n_boot: int, confidence: float) -> None:
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")


def _resampled(
    n: int, n_boot: int, rng: np.random.Generator, fn: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``fn(idx)`` for ``n_boot`` index matrices of shape (chunk, n), concatenated."""
    chunk = max(1, min(n_boot, _MAX_CELLS // max(1, n)))
    out = []
    done = 0
    while done < n_boot:
        rows = min(chunk, n_boot - done)
        idx = rng.integers(0, n, size=(rows, n))
        out.append(np.asarray(fn(idx), dtype=float))
        done += rows
    return np.concatenate(out)


def _percentile(values: np.ndarray, estimate: float, n: int, n_boot: int,
                confidence: float) -> BootstrapCI:
    finite = values[~np.isnan(values)]
    failed = int(values.size - finite.size)
    if finite.size == 0:
        return BootstrapCI(float(estimate), math.nan, math.nan, n, n_boot, confidence, failed)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapCI(float(estimate), float(lo), float(hi), n, n_boot, confidence, failed)


# -------------------------------------------------------------------------------- one sample
def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: str | Statistic = "mean",
    *,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    min_n: int = 2,
) -> BootstrapCI:
    """Percentile-bootstrap interval of ``statistic`` over the observations ``values``.

    ``statistic``: ``"mean"``, ``"nanmean"`` (NaN entries are e.g. invalid answers: the mean
    over the others), ``"nanmax"``, or a callable ``f(x, axis)`` reducing along ``axis``.
    Observations are resampled as given (NaN entries included), so for ``"nanmean"`` the
    number of non-NaN entries varies between resamples, as it would between repeats of the
    experiment.
    """
    _check(n_boot, confidence)
    stat = _statistic(statistic)
    x = np.asarray(values, dtype=float).ravel()
    n = int(x.size)
    if n == 0:
        return _nan_ci(math.nan, 0, n_boot, confidence)
    estimate = float(stat(x[None, :], axis=1)[0])
    if n < min_n or math.isnan(estimate):
        return _nan_ci(estimate, n, n_boot, confidence)
    rng = np.random.default_rng(seed)
    boots = _resampled(n, n_boot, rng, lambda idx: stat(x[idx], axis=1))
    return _percentile(boots, estimate, n, n_boot, confidence)


def bootstrap_mean(values: Sequence[float] | np.ndarray, **kw: Any) -> BootstrapCI:
    """Mean of the non-NaN ``values`` (NaN entries are dropped first, not resampled)."""
    x = np.asarray(values, dtype=float).ravel()
    return bootstrap_ci(x[~np.isnan(x)], "mean", **kw)


# -------------------------------------------------------------------------------- two samples
def bootstrap_diff(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    statistic: str | Statistic = "mean",
    *,
    paired: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    min_n: int = 2,
) -> BootstrapCI:
    """Interval of ``statistic(b) - statistic(a)``.

    ``paired=True``: ``a[i]`` and ``b[i]`` belong together (same seed and sample index, so
    with a seeded sampler the same random numbers); the pairs are resampled jointly, which
    keeps any correlation between them. ``paired=False``: ``a`` and ``b`` are resampled
    independently (two-sample bootstrap). ``n`` in the result is ``min(len(a), len(b))``.
    """
    _check(n_boot, confidence)
    stat = _statistic(statistic)
    xa = np.asarray(a, dtype=float).ravel()
    xb = np.asarray(b, dtype=float).ravel()
    if paired and xa.size != xb.size:
        raise ValueError(f"paired bootstrap needs equal lengths, got {xa.size} and {xb.size}")
    n = int(min(xa.size, xb.size))
    if n == 0:
        return _nan_ci(math.nan, 0, n_boot, confidence)
    estimate = float(stat(xb[None, :], axis=1)[0] - stat(xa[None, :], axis=1)[0])
    if n < min_n or math.isnan(estimate):
        return _nan_ci(estimate, n, n_boot, confidence)
    rng = np.random.default_rng(seed)
    if paired:
        boots = _resampled(n, n_boot, rng,
                           lambda idx: stat(xb[idx], axis=1) - stat(xa[idx], axis=1))
    else:
        ba = _resampled(xa.size, n_boot, rng, lambda idx: stat(xa[idx], axis=1))
        bb = _resampled(xb.size, n_boot, rng, lambda idx: stat(xb[idx], axis=1))
        boots = bb - ba
    return _percentile(boots, estimate, n, n_boot, confidence)


# -------------------------------------------------------------------------------- helpers
def wilson_interval(k: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (NaN, NaN when ``n == 0``).

    Unlike the percentile bootstrap it does not collapse to a point at 0/n or n/n: after
    0 valid answers out of 10, the 95% interval is [0, 0.28], not [0, 0].
    """
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    z = _normal_quantile(0.5 + confidence / 2.0)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exact bounds at 0/n and n/n
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def _normal_quantile(p: float) -> float:
    """Inverse standard normal CDF (bisection on ``math.erf``; plenty fast for one value)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def power_two_means(delta: float, sd_a: float, sd_b: float, n_a: int, n_b: int,
                    alpha: float = 0.05) -> float:
    """Power of a two-sided test at level ``alpha`` to detect a difference ``delta`` between
    two means (normal approximation; what a 95% bootstrap CI excluding 0 amounts to)."""
    if n_a < 1 or n_b < 1:
        return math.nan
    se = math.sqrt(sd_a ** 2 / n_a + sd_b ** 2 / n_b)
    if se == 0:
        return 1.0 if delta != 0 else alpha
    z = _normal_quantile(1 - alpha / 2)
    return _normal_cdf(abs(delta) / se - z) + _normal_cdf(-abs(delta) / se - z)


def power_two_proportions(p_a: float, p_b: float, n_a: int, n_b: int, alpha: float = 0.05) -> float:
    """Power to detect valid rates ``p_a`` vs ``p_b`` (unpooled normal approximation)."""
    return power_two_means(p_b - p_a, math.sqrt(p_a * (1 - p_a)), math.sqrt(p_b * (1 - p_b)),
                           n_a, n_b, alpha)


def detectable_difference(sd_a: float, sd_b: float, n_a: int, n_b: int, alpha: float = 0.05,
                          power: float = 0.8) -> float:
    """The smallest difference of two means detected with ``power`` at level ``alpha``."""
    if n_a < 1 or n_b < 1:
        return math.nan
    se = math.sqrt(sd_a ** 2 / n_a + sd_b ** 2 / n_b)
    return (_normal_quantile(1 - alpha / 2) + _normal_quantile(power)) * se


def top_k_mean(scores: Sequence[float] | np.ndarray, k: int) -> float:
    """Mean of the ``k`` best non-NaN scores; NaN when fewer than ``k`` are valid.

    (With fewer than ``k`` valid answers "the mean of the best k" does not exist; reporting the
    mean of fewer would mix a different statistic in, and 0 would be a made-up score.)
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    x = np.asarray(scores, dtype=float).ravel()
    x = x[~np.isnan(x)]
    if x.size < k:
        return math.nan
    return float(np.mean(np.sort(x)[-k:]))


__all__ = [
    "BootstrapCI",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_N_BOOT",
    "STATISTICS",
    "bootstrap_ci",
    "bootstrap_diff",
    "bootstrap_mean",
    "detectable_difference",
    "mean",
    "nanmax",
    "nanmean",
    "power_two_means",
    "power_two_proportions",
    "top_k_mean",
    "wilson_interval",
]
