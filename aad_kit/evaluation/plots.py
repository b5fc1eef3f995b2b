"""Figures of the generalisation study. Each function draws one figure and returns it; save
them with :func:`aad_kit.plots.save_figure` (the notebook does).

Scores of different tasks live on different scales (set sizes in the thousands, tour lengths
around 5), so every figure has one panel per task. Settings are ordered as in the grid:
training setting (marked "train"), held-out settings, then the other tasks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from aad_kit.plots import STATUS_COLORS, STATUS_ORDER

MODEL_COLORS = ["#90a4ae", "#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#c62828"]
ROLE_LABEL = {"train": "train", "held_out": "held out", "other_task": "other task"}

METRIC_LABELS = {
    "valid_rate": "valid answers (share)",
    "mean_score": "mean score over valid answers\n(higher is better)",
    "best_score": "best score (higher is better)",
}


def _label(metric: str) -> str:
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    if metric.startswith("top") and metric.endswith("_mean"):
        return f"mean of the {metric[3:-5]} best scores per seed\n(higher is better)"
    return metric


def _models(df: pd.DataFrame, models: Sequence[str] | None) -> list[str]:
    return list(models) if models else list(dict.fromkeys(df["model"]))


def _colors(models: Sequence[str]) -> dict[str, str]:
    return {m: MODEL_COLORS[i % len(MODEL_COLORS)] for i, m in enumerate(models)}


def _panels(n: int, width: float = 4.4, height: float = 3.4, ncols: int | None = None):
    ncols = ncols or n
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _setting_label(setting: str, role: str) -> str:
    return f"{setting}\n({ROLE_LABEL.get(role, role)})" if role != "other_task" else setting


def metric_bars(
    summary: pd.DataFrame,
    metric: str = "valid_rate",
    models: Sequence[str] | None = None,
    ci: str = "bootstrap",
    kind: str = "auto",
) -> Figure:
    """``metric`` per setting, one mark per model, with its confidence interval.

    ``metric``: a column of :func:`~aad_kit.evaluation.generalisation.summarize` that has
    ``_lo``/``_hi`` columns (``valid_rate``, ``mean_score``, ``top1_mean``, ...).
    ``kind``: ``"bar"``, ``"point"`` (dot and whisker), or ``"auto"``: bars for the valid
    rate (a share, starting at 0), points for scores (which may be negative, so a bar from 0
    would mean nothing). ``ci="wilson"`` draws the Wilson interval for ``valid_rate``. A
    model with no value (no valid answer) gets an "n/a" mark: an absent score is not 0.
    """
    models = _models(summary, models)
    colors = _colors(models)
    tasks = list(dict.fromkeys(summary["task"]))
    bars = kind == "bar" or (kind == "auto" and metric == "valid_rate")
    n_set = int(summary.groupby("task")["setting"].nunique().max())
    fig, axes = _panels(len(tasks), width=max(3.6, 1.2 + 0.8 * n_set))
    base = metric.removesuffix("_mean") if metric.startswith("top") else metric
    lo_col, hi_col = f"{base}_lo", f"{base}_hi"
    if ci == "wilson" and metric == "valid_rate":
        lo_col, hi_col = "valid_rate_wilson_lo", "valid_rate_wilson_hi"
    width = 0.8 / max(1, len(models))
    for ax, task in zip(axes, tasks, strict=True):
        sub = summary[summary["task"] == task]
        settings = list(dict.fromkeys(sub["setting"]))
        roles = {s: sub.loc[sub["setting"] == s, "role"].iloc[0] for s in settings}
        x = np.arange(len(settings))
        for i, m in enumerate(models):
            rows = sub[sub["model"] == m].set_index("setting").reindex(settings)
            y = rows[metric].to_numpy(dtype=float)
            xs = x + (i - (len(models) - 1) / 2) * width
            has = ~np.isnan(y)
            lo = rows[lo_col].to_numpy(dtype=float) if lo_col in rows else np.full_like(y, np.nan)
            hi = rows[hi_col].to_numpy(dtype=float) if hi_col in rows else np.full_like(y, np.nan)
            if bars:
                ax.bar(xs[has], y[has], width=width, color=colors[m], label=m, edgecolor="white")
            else:
                ax.plot(xs[has], y[has], "o", color=colors[m], label=m, ms=6)
            err = has & ~np.isnan(lo) & ~np.isnan(hi)
            if err.any():
                ax.errorbar(xs[err], y[err], yerr=[y[err] - lo[err], hi[err] - y[err]],
                            fmt="none", ecolor=colors[m] if not bars else "#212121",
                            elinewidth=1.2, capsize=3)
            for xi in xs[~has]:
                ax.annotate("n/a", (xi, 0.02), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=7, color=colors[m], rotation=90)
        if not np.isfinite(sub[metric].to_numpy(dtype=float)).any():
            ax.set_yticks([])  # nothing to show: no made-up scale
        if bars:
            ax.axhline(0, color="#616161", lw=0.6)
        else:
            ax.grid(axis="y", alpha=0.3)
        ax.set_xticks(x, [_setting_label(s, roles[s]) for s in settings], fontsize=7, rotation=30,
                      ha="right")
        ax.set_xlim(-0.6, len(settings) - 0.4)
        ax.set_title(task, fontsize=10)
        ax.set_ylabel(_label(metric), fontsize=8)
        if metric == "valid_rate":
            ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
    conf = summary["confidence"].iloc[0] if "confidence" in summary and len(summary) else 0.95
    what = "Wilson" if lo_col.startswith("valid_rate_wilson") else "bootstrap"
    na = "" if metric == "valid_rate" else "; n/a: no valid answer"
    fig.suptitle(f"{_label(metric).splitlines()[0]} per setting ({conf:.0%} {what} intervals{na})",
                 fontsize=10)
    fig.tight_layout()
    return fig


def score_distributions(samples: pd.DataFrame, models: Sequence[str] | None = None,
                        ncols: int = 4) -> Figure:
    """Scores of the valid answers, one panel per (task, setting), one column of dots per model
    (with the median as a bar). A model without a valid answer shows "0 valid"."""
    models = _models(samples, models)
    colors = _colors(models)
    groups = list(samples.groupby(["task", "setting"], sort=False))
    fig, axes = _panels(max(1, len(groups)), width=3.2, height=3.0, ncols=min(ncols, max(1, len(groups))))
    rng = np.random.default_rng(0)
    for ax, ((task, setting), g) in zip(axes, groups, strict=False):
        for i, m in enumerate(models):
            ok = g[(g["model"] == m) & g["valid"]]["score"].to_numpy(dtype=float)
            if ok.size:
                ax.scatter(i + rng.uniform(-0.18, 0.18, ok.size), ok, s=12, alpha=0.7,
                           color=colors[m])
                ax.hlines(np.median(ok), i - 0.3, i + 0.3, color="#212121", lw=1.5)
        counts = [f"{m}\n{int(((g['model'] == m) & g['valid']).sum())}/{int((g['model'] == m).sum())} valid"
                  for m in models]
        ax.set_xticks(range(len(models)), counts, fontsize=7)
        ax.set_xlim(-0.6, len(models) - 0.4)
        role = g["role"].iloc[0]
        ax.set_title(f"{task}\n{setting} ({ROLE_LABEL.get(role, role)})", fontsize=8)
        ax.set_ylabel("score (higher is better)", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("Scores of valid answers (bar: median)", fontsize=10)
    fig.tight_layout()
    return fig


def status_shares(samples: pd.DataFrame, models: Sequence[str] | None = None) -> Figure:
    """Share of answers ending in each status, per model and task (on the task's first
    setting in the grid: every setting of a task scores the same answers)."""
    models = _models(samples, models)
    first = samples.groupby("task", sort=False)["setting"].first()
    sub = samples[[s == first[t] for t, s in zip(samples["task"], samples["setting"], strict=True)]]
    table = pd.crosstab([sub["model"], sub["task"]], sub["status"], normalize="index")
    table = table.reindex(columns=[s for s in STATUS_ORDER if s in table.columns])
    order = [(m, t) for m in models for t in first.index if (m, t) in table.index]
    table = table.reindex(order)
    fig, ax = plt.subplots(figsize=(7.5, 0.8 + 0.4 * max(1, len(table))))
    table.plot.barh(stacked=True, ax=ax, color=[STATUS_COLORS.get(c, "#9e9e9e") for c in table.columns])
    ax.set_yticks(range(len(table)), [f"{m} / {t}" for m, t in table.index], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of answers")
    ax.set_title("Outcome of the answers per model and task")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def _forest_rows(ax: plt.Axes, sub: pd.DataFrame, metric: str, labels: Sequence[str]) -> None:
    """One row per line of ``sub``: the difference ``d_<metric>`` with its interval; filled
    when the interval excludes 0; "undefined" where a model had no valid answer."""
    d, lo, hi = f"d_{metric}", f"d_{metric}_lo", f"d_{metric}_hi"
    sub = sub.reset_index(drop=True)
    for y, r in sub.iterrows():
        if math.isnan(r[d]):
            ax.annotate("undefined (no valid answer)", (0.5, y), xycoords=("axes fraction", "data"),
                        ha="center", va="center", fontsize=7, color="#757575",
                        bbox={"fc": "white", "ec": "none", "pad": 1})
            continue
        color = "#1565c0" if r[d] >= 0 else "#c62828"
        differs = not math.isnan(r[lo]) and (r[lo] > 0 or r[hi] < 0)
        if not math.isnan(r[lo]):
            ax.hlines(y, r[lo], r[hi], color=color, lw=1.5)
        ax.plot(r[d], y, "o", color=color, mfc=color if differs else "white", ms=6)
    ax.axvline(0, color="#616161", lw=0.8, ls="--")
    span = sub[[d, lo, hi]].to_numpy(dtype=float)
    span = np.abs(span[np.isfinite(span)])
    half = 1.15 * float(span.max()) if span.size and span.max() > 0 else 1.0
    ax.set_xlim(-half, half)  # 0 in the middle: the sign is what matters
    ax.set_yticks(range(len(sub)), list(labels), fontsize=7)
    ax.set_ylim(len(sub) - 0.5, -0.5)


def comparison_forest(comparison: pd.DataFrame, metric: str = "valid_rate") -> Figure:
    """Tuned minus base per setting with its interval (``metric``: ``valid_rate`` or
    ``mean_score``). Filled marks: the interval excludes 0 (distinguishable); hollow: not;
    "undefined" where a model has no valid answer."""
    tasks = list(dict.fromkeys(comparison["task"]))
    n_max = comparison.groupby("task")["setting"].nunique().max() if len(comparison) else 1
    fig, axes = _panels(max(1, len(tasks)), width=4.2, height=1.6 + 0.45 * n_max)
    for ax, task in zip(axes, tasks, strict=False):
        sub = comparison[comparison["task"] == task]
        _forest_rows(ax, sub, metric, [_setting_label(s, r) for s, r in zip(sub["setting"], sub["role"], strict=True)])
        ax.set_title(task, fontsize=10)
        ax.set_xlabel(f"tuned - base: {_label(metric).splitlines()[0]}", fontsize=8)
    fig.suptitle("Tuned minus base (filled: interval excludes 0)", fontsize=10)
    fig.tight_layout()
    return fig


def ablation_forest(table: pd.DataFrame, role: str = "train") -> Figure:
    """The pair-strategy ablation (:func:`aad_kit.ablation.ablation_table`): tuned minus base
    per strategy on the setting(s) of ``role``, valid rate and mean score side by side."""
    sub = table[(table["role"] == role) & table["d_valid_rate"].notna()]
    fig, axes = _panels(2, width=4.2, height=1.6 + 0.45 * max(1, len(sub)))
    labels = [f"{s}{' (run)' if src else ''}\n{st}" for s, src, st in
              zip(sub["strategy"], sub["source"], sub["setting"], strict=True)]
    for ax, metric in zip(axes, ("valid_rate", "mean_score"), strict=True):
        _forest_rows(ax, sub, metric, labels)
        ax.set_xlabel(f"tuned - base: {_label(metric).splitlines()[0]}", fontsize=8)
    fig.suptitle(f"Pair strategies by the tuned model ({ROLE_LABEL.get(role, role)}; filled: interval "
                 "excludes 0)", fontsize=10)
    fig.tight_layout()
    return fig


def best_so_far_curves(curves: pd.DataFrame, models: Sequence[str] | None = None) -> Figure:
    """Best valid score after each LLM sample of the same-budget searches: a thin line per
    seed, a thick line for the mean over seeds (where every seed has a valid sample), and the
    best shipped heuristic the searches started from (dashed)."""
    models = _models(curves, models)
    colors = _colors(models)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for m in models:
        sub = curves[curves["model"] == m]
        wide = sub.pivot_table(index="sample_index", columns="seed", values="best_so_far",
                               aggfunc="first", dropna=False)
        for seed in wide.columns:
            ax.step(wide.index, wide[seed], where="post", color=colors[m], lw=0.7, alpha=0.5)
        mean = wide.mean(axis=1, skipna=False)
        none = " - no valid sample" if sub["best_so_far"].isna().all() else ""
        ax.step(wide.index, mean, where="post", color=colors[m], lw=2.2,
                label=f"{m} (mean of {wide.shape[1]} seed(s){none})")
    ref = curves["best_seed_heuristic"].dropna()
    if len(ref):
        ax.axhline(float(ref.max()), ls="--", lw=0.9, color="#616161", label="best shipped heuristic")
    if len(curves):
        ax.set_xlim(-0.5, float(curves["sample_index"].max()) + 0.5)
    ax.set_xlabel("LLM sample")
    ax.set_ylabel("best score so far (higher is better)")
    ax.set_title("Same-budget search: best score so far")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def make_figures(
    samples: pd.DataFrame,
    summary: pd.DataFrame,
    comparison: pd.DataFrame | None = None,
    curves: pd.DataFrame | None = None,
) -> dict[str, Figure]:
    """Every figure of the study, by the file name it is saved under."""
    figs: dict[str, Figure] = {}
    if summary.empty:
        return figs
    figs["generalisation_valid_rate"] = metric_bars(summary, "valid_rate")
    figs["generalisation_mean_score"] = metric_bars(summary, "mean_score")
    top = sorted(c for c in summary.columns if c.startswith("top") and c.endswith("_mean"))
    if top:
        figs[f"generalisation_{top[0]}"] = metric_bars(summary, top[0])
    figs["generalisation_score_distributions"] = score_distributions(samples)
    figs["generalisation_status_shares"] = status_shares(samples)
    if comparison is not None and len(comparison):
        figs["generalisation_diff_valid_rate"] = comparison_forest(comparison, "valid_rate")
        figs["generalisation_diff_mean_score"] = comparison_forest(comparison, "mean_score")
    if curves is not None and len(curves):
        figs["generalisation_search_best_so_far"] = best_so_far_curves(curves)
    return figs


__all__ = [
    "best_so_far_curves",
    "comparison_forest",
    "make_figures",
    "metric_bars",
    "score_distributions",
    "status_shares",
]
