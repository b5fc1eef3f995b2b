"""The generalisation study's metrics: per-(model, task, setting) summaries with bootstrap
intervals (:func:`summarize`) and the base-vs-tuned difference per setting
(:func:`compare_models`, paired where the answers pair up), with a plain-language verdict."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from aad_kit.evaluation import stats
from aad_kit.tasks import get_task


def summarize(
    samples: pd.DataFrame,
    *,
    top_k: Sequence[int] = (1, 3),
    n_boot: int = stats.DEFAULT_N_BOOT,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> pd.DataFrame:
    """Metrics per (model, task, setting), with percentile-bootstrap intervals.

    * ``valid_rate`` (+ ``_lo``/``_hi``): share of answers with status ok; bootstrap over
      answers. ``valid_rate_wilson_lo``/``_hi``: the Wilson interval, which unlike the
      bootstrap does not collapse to a point at 0 % or 100 %.
    * ``mean_score`` (+ CI): mean score over valid answers; bootstrap over answers (invalid
      ones included, so the number of valid answers varies as in a repeat). NaN when the model
      has no valid answer on the setting (never 0). ``mean_metric``: the same in the task's
      unit (no CI).
    * ``best_score`` / ``best_metric``: the best valid answer (no CI: a bootstrap interval
      of a maximum is not meaningful).
    * ``top{k}_mean`` (+ CI): per seed, the mean of the k best valid scores (best-of-N for
      k = 1), averaged over seeds; bootstrap over seeds. A seed with fewer than k valid
      answers has no top-k; ``top{k}_seeds`` says how many seeds contributed.
    * ``distinct_valid``: distinct valid programs (by normalised code hash).
    """
    rows = []
    if samples.empty:
        return pd.DataFrame(rows)
    group_cols = ["model", "task", "setting", "role"]
    for (model, task, setting, role), g in samples.groupby(group_cols, sort=False):
        valid = g["valid"].to_numpy(dtype=bool)
        scores = np.where(valid, g["score"].to_numpy(dtype=float), np.nan)
        metrics = np.where(valid, g["metric"].to_numpy(dtype=float), np.nan)
        kw = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
        vr = stats.bootstrap_ci(valid.astype(float), "mean", **kw)
        wl, wh = stats.wilson_interval(int(valid.sum()), len(valid), confidence)
        ms = stats.bootstrap_ci(scores, "nanmean", **kw)
        t = get_task(task)
        row: dict[str, Any] = {
            "model": model, "task": task, "setting": setting, "role": role,
            "n_seeds": int(g["seed"].nunique()), "n_samples": len(g), "n_valid": int(valid.sum()),
            "valid_rate": vr.estimate, "valid_rate_lo": vr.lo, "valid_rate_hi": vr.hi,
            "valid_rate_wilson_lo": wl, "valid_rate_wilson_hi": wh,
            "mean_score": ms.estimate, "mean_score_lo": ms.lo, "mean_score_hi": ms.hi,
            "mean_score_failed_resamples": ms.n_failed,
            "mean_metric": float(np.nanmean(metrics)) if valid.any() else math.nan,
        }
        if valid.any():
            best = int(np.nanargmax(scores))
            row["best_score"], row["best_metric"] = float(scores[best]), float(metrics[best])
        else:
            row["best_score"] = row["best_metric"] = math.nan
        for k in top_k:
            per_seed = [stats.top_k_mean(np.where(sg["valid"], sg["score"], np.nan), k)
                        for _, sg in g.groupby("seed", sort=True)]
            ci = stats.bootstrap_mean(per_seed, **kw)
            row.update({f"top{k}_mean": ci.estimate, f"top{k}_lo": ci.lo, f"top{k}_hi": ci.hi,
                        f"top{k}_seeds": ci.n})
        row["distinct_valid"] = int(g.loc[g["valid"], "code_hash"].nunique())
        row["metric_name"] = t.metric_name
        row["metric_lower_is_better"] = bool(t.metric_lower_is_better)
        row["n_boot"] = n_boot
        row["confidence"] = confidence
        rows.append(row)
    return pd.DataFrame(rows)


def compare_models(
    samples: pd.DataFrame,
    base: str = "base",
    tuned: str = "tuned",
    *,
    n_boot: int = stats.DEFAULT_N_BOOT,
    confidence: float = stats.DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> pd.DataFrame:
    """``tuned`` minus ``base`` per (task, setting): valid rate and mean score over valid.

    When both models have answers for the same ``(seed, sample)`` indices the answers are
    paired and the pairs are resampled jointly (``paired=True``); otherwise each model's
    answers are resampled independently. ``*_differs`` is True when the interval excludes 0,
    i.e. the difference is distinguishable from 0 at the chosen confidence. A mean-score
    difference is NaN when either model has no valid answer on the setting.
    """
    rows = []
    if samples.empty:
        return pd.DataFrame(rows)
    kw = {"n_boot": n_boot, "confidence": confidence, "seed": seed}
    for (task, setting), g in samples.groupby(["task", "setting"], sort=False):
        a = g[g["model"] == base].sort_values(["seed", "sample"])
        b = g[g["model"] == tuned].sort_values(["seed", "sample"])
        if a.empty or b.empty:
            continue
        paired = list(zip(a["seed"], a["sample"], strict=True)) == list(zip(b["seed"], b["sample"], strict=True))
        va, vb = a["valid"].to_numpy(float), b["valid"].to_numpy(float)
        sa = np.where(a["valid"], a["score"], np.nan).astype(float)
        sb = np.where(b["valid"], b["score"], np.nan).astype(float)
        dv = stats.bootstrap_diff(va, vb, "mean", paired=paired, **kw)
        ds = stats.bootstrap_diff(sa, sb, "nanmean", paired=paired, **kw)
        row = {
            "task": task, "setting": setting, "role": g["role"].iloc[0],
            "n_base": len(a), "n_tuned": len(b), "paired": paired,
            "valid_rate_base": float(va.mean()), "valid_rate_tuned": float(vb.mean()),
            "d_valid_rate": dv.estimate, "d_valid_rate_lo": dv.lo, "d_valid_rate_hi": dv.hi,
            "valid_rate_differs": dv.excludes(0.0),
            "mean_score_base": stats.nanmean(sa[None, :], axis=1)[0],
            "mean_score_tuned": stats.nanmean(sb[None, :], axis=1)[0],
            "d_mean_score": ds.estimate, "d_mean_score_lo": ds.lo, "d_mean_score_hi": ds.hi,
            "mean_score_differs": ds.excludes(0.0),
            "d_mean_score_failed_resamples": ds.n_failed,
        }
        row["verdict"] = _verdict(row, confidence)
        rows.append(row)
    return pd.DataFrame(rows)


def _verdict(row: Mapping[str, Any], confidence: float) -> str:
    pct = f"{confidence:.0%}"

    def one(name: str, d: float, lo: float, hi: float, differs: bool, fmt: str) -> str:
        if math.isnan(d):
            return f"{name}: undefined"
        if math.isnan(lo):
            return f"{name}: {d:+{fmt}} (too few answers for an interval)"
        ci = f"{d:+{fmt}}, {pct} CI [{lo:+{fmt}}, {hi:+{fmt}}]"
        if differs:
            return f"{name}: tuned {'higher' if d > 0 else 'lower'} ({ci})"
        return f"{name}: not distinguishable from 0 ({ci})"

    v = one("valid rate", row["d_valid_rate"], row["d_valid_rate_lo"], row["d_valid_rate_hi"],
            row["valid_rate_differs"], ".2f")
    rb, rt = row["valid_rate_base"], row["valid_rate_tuned"]
    if rb == rt and rb in (0.0, 1.0):  # the bootstrap interval is a point: say what it means
        v = (f"valid rate: both models {rb:.0%} valid (no difference observed; the bootstrap "
             "interval has zero width here, see the Wilson intervals in the summary)")
    s = one("mean score", row["d_mean_score"], row["d_mean_score_lo"], row["d_mean_score_hi"],
            row["mean_score_differs"], ".4g")
    if math.isnan(row["d_mean_score"]):
        who = [m for m in ("base", "tuned") if math.isnan(row[f"mean_score_{m}"])]
        s += f" ({' and '.join(who)} without a valid answer)"
    return f"{v}; {s}"


__all__ = ["compare_models", "summarize"]
