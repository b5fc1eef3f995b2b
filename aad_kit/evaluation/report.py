"""The main result of a run: the headline table and figure, the pre-registered primary
endpoint, power, and the training data a copy audit compares against.

Kept out of the notebook so that stage 6 is a few calls long and the README, the run report
and the tests read the same numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aad_kit.evaluation import stats

ROW_ORDER = ("base", "tuned", "teacher")
ROW_LABELS = {"base": "student (base)", "tuned": "student (tuned)", "teacher": "teacher (reference)"}


def headline_table(summary: pd.DataFrame, config: Any) -> pd.DataFrame:
    """One row per (setting, model): n, valid rate (Wilson 95 %), mean score of valid
    answers (bootstrap 95 %), best score; settings in grid order, models base/tuned/teacher."""
    if summary is None or summary.empty:
        return pd.DataFrame()
    order = {(c.task, c.setting): i for i, c in enumerate(config.cells)}
    df = summary.copy()
    df["_cell"] = [order.get((t, s), 99) for t, s in zip(df["task"], df["setting"], strict=True)]
    df["_model"] = [ROW_ORDER.index(m) if m in ROW_ORDER else 9 for m in df["model"]]
    df = df.sort_values(["_cell", "_model"])
    out = pd.DataFrame({
        "task": df["task"], "setting": df["setting"], "role": df["role"],
        "model": [ROW_LABELS.get(m, m) for m in df["model"]],
        "answers": df["n_samples"], "valid": df["n_valid"],
        "valid_rate": df["valid_rate"], "valid_lo": df["valid_rate_wilson_lo"],
        "valid_hi": df["valid_rate_wilson_hi"],
        "mean_score": df["mean_score"], "mean_lo": df["mean_score_lo"], "mean_hi": df["mean_score_hi"],
        "best_score": df["best_score"],
    })
    return out.reset_index(drop=True)


def headline_figure(summary: pd.DataFrame, config: Any) -> Any:
    """Mean score of valid answers and valid rate per setting, one bar per model, 95 % intervals."""
    import matplotlib.pyplot as plt

    table = headline_table(summary, config)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    if table.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "no answers", ha="center", va="center", transform=ax.transAxes)
        return fig
    cells = list(dict.fromkeys(zip(table["task"], table["setting"], strict=True)))
    models = list(dict.fromkeys(table["model"]))
    width = 0.8 / max(1, len(models))
    colors = {"student (base)": "#90a4ae", "student (tuned)": "#1565c0", "teacher (reference)": "#ef6c00"}
    for ax, (col, lo, hi, label) in zip(axes, (("mean_score", "mean_lo", "mean_hi", "mean score of valid answers"),
                                             ("valid_rate", "valid_lo", "valid_hi", "valid rate")), strict=True):
        for k, m in enumerate(models):
            rows = table[table["model"] == m].set_index(["task", "setting"])
            x = np.arange(len(cells)) + (k - (len(models) - 1) / 2) * width
            y = np.array([rows[col].get(c, np.nan) for c in cells], dtype=float)
            yl = np.array([rows[lo].get(c, np.nan) for c in cells], dtype=float)
            yh = np.array([rows[hi].get(c, np.nan) for c in cells], dtype=float)
            err = np.vstack([np.clip(y - yl, 0, None), np.clip(yh - y, 0, None)])
            ax.bar(x, y, width, color=colors.get(m, None), label=m, yerr=np.nan_to_num(err), capsize=3)
        ax.set_xticks(np.arange(len(cells)))
        ax.set_xticklabels([f"{s}\n({config.role_of(t, s).replace('_', ' ')})" for t, s in cells], fontsize=7)
        ax.set_title(label, fontsize=9)
        if col == "mean_score":
            finite = table[col].dropna()
            if len(finite):
                lo_v, hi_v = float(table[lo].min(skipna=True)), float(table[hi].max(skipna=True))
                pad = 0.05 * max(1e-9, hi_v - lo_v)
                if math.isfinite(lo_v) and math.isfinite(hi_v):
                    ax.set_ylim(lo_v - pad, hi_v + pad)
        else:
            ax.set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Student before and after DPO on the teacher's DAR pairs, with the teacher — trained on "
                 f"{config.train_task} / {config.train_setting}", fontsize=9)
    fig.tight_layout()
    return fig


def primary_endpoint(comparison: pd.DataFrame | None, config: Any) -> dict[str, Any]:
    """The pre-registered primary endpoint: tuned minus base in the mean score of valid answers
    on the training setting, 95 % paired bootstrap interval; positive when it lies above 0."""
    base = {"task": config.train_task, "setting": config.train_setting}
    if comparison is None or comparison.empty:
        return {**base, "outcome": "not evaluated",
                "text": "**Primary endpoint: not evaluated** (no tuned model or no answers)."}
    row = comparison[(comparison["task"] == config.train_task) & (comparison["setting"] == config.train_setting)]
    if row.empty:
        return {**base, "outcome": "not evaluated", "text": "**Primary endpoint: not evaluated.**"}
    r = row.iloc[0]
    d, lo, hi = float(r["d_mean_score"]), float(r["d_mean_score_lo"]), float(r["d_mean_score_hi"])
    if math.isnan(d) or math.isnan(lo):
        outcome = "undefined"
    elif lo > 0:
        outcome = "positive"
    elif hi < 0:
        outcome = "negative"
    else:
        outcome = "null"
    text = (f"**Primary endpoint ({config.train_task} / {config.train_setting}): {outcome}.** Tuned minus base in the "
            f"mean score of valid answers: {d:+.4g} (95 % CI [{lo:+.4g}, {hi:+.4g}]); base {r['mean_score_base']:.5g} "
            f"on {int(round(r['valid_rate_base'] * r['n_base']))} valid answers, tuned {r['mean_score_tuned']:.5g} on "
            f"{int(round(r['valid_rate_tuned'] * r['n_tuned']))}. Valid rate {r['valid_rate_base']:.0%} -> "
            f"{r['valid_rate_tuned']:.0%} ({float(r['d_valid_rate']):+.2f}, 95 % CI "
            f"[{float(r['d_valid_rate_lo']):+.2f}, {float(r['d_valid_rate_hi']):+.2f}]).")
    return {**base, "outcome": outcome, "d_mean_score": d, "lo": lo, "hi": hi,
            "mean_score_base": float(r["mean_score_base"]), "mean_score_tuned": float(r["mean_score_tuned"]),
            "valid_rate_base": float(r["valid_rate_base"]), "valid_rate_tuned": float(r["valid_rate_tuned"]),
            "d_valid_rate": float(r["d_valid_rate"]), "text": text}


def compare_pair(samples: pd.DataFrame, config: Any, a: str, b: str) -> pd.DataFrame | None:
    """``b`` minus ``a`` per setting (``compare_models`` with other names), or None."""
    from aad_kit.evaluation.metrics import compare_models

    if samples is None or samples.empty or not {a, b} <= set(samples["model"]):
        return None
    return compare_models(samples, a, b, n_boot=config.n_boot, confidence=config.confidence,
                          seed=config.bootstrap_seed)


def database_gap(records: Any) -> float | None:
    """Mean score of the top two of the paper's ten DAR subsets minus the middle two
    (subsets 4-5): the size of difference the training data contains."""
    from aad_kit.preference import PairConfig
    from aad_kit.preference.paper_dar import build_paper_pool

    pool = build_paper_pool(records, PairConfig())
    if len(pool.valid) < pool.n_subsets:
        return None
    scores = pool.scores
    top, mid = scores[pool.subset <= 1], scores[(pool.subset >= 4) & (pool.subset <= 5)]
    return float(top.mean() - mid.mean())


def training_gap(layout: Any) -> float | None:
    """:func:`database_gap` of the runs stage 4 paired (None when stage 4 did not run)."""
    from aad_kit.preference import load_run_records
    from aad_kit.run_layout import MissingStageOutput

    try:
        db_path = layout.output("02_candidate_generation", "database")
        runs = layout.output("04_dar_sampling", "runs", path=False)
    except MissingStageOutput:
        return None
    return database_gap(load_run_records(db_path, runs))


def power_table(samples: pd.DataFrame, config: Any, *, gap: float | None = None,
                alpha: float = 0.05) -> pd.DataFrame:
    """Per setting: the base model's valid answers and spread, the smallest mean-score
    difference detectable with 80 % power, and the power for the pre-registered differences
    (10 points of valid rate; the database's top-vs-middle subset gap)."""
    rows = []
    if samples is None or samples.empty:
        return pd.DataFrame(rows)
    for c in config.cells:
        g = samples[(samples["task"] == c.task) & (samples["setting"] == c.setting)]
        a = g[g["model"] == "base"]
        b = g[g["model"] == "tuned"] if "tuned" in set(g["model"]) else a
        if a.empty:
            continue
        sa = a.loc[a["valid"], "score"].astype(float)
        sb = b.loc[b["valid"], "score"].astype(float)
        sd = float(np.std(np.concatenate([sa.to_numpy(), sb.to_numpy()]), ddof=1)) if len(sa) + len(sb) > 2 else math.nan
        pa = float(a["valid"].mean())
        # Every valid answer scoring the same (e.g. all restate the template) gives sd = 0,
        # which would claim any difference detectable: the score power is then unknown.
        estimable = math.isfinite(sd) and sd > 0
        note = "" if estimable else (
            f"no spread among the {len(sa) + len(sb)} valid answers (all score {sa.iloc[0]:g}): score power not estimable"
            if len(sa) + len(sb) > 2 else "too few valid answers to estimate the score spread")
        row = {"task": c.task, "setting": c.setting, "role": c.role, "answers_per_model": len(a),
               "valid_base": len(sa), "valid_tuned": len(sb), "score_sd": sd,
               "detectable_mean_diff_80pct": (stats.detectable_difference(sd, sd, len(sa), len(sb), alpha)
                                              if estimable else math.nan),
               "power_valid_rate_10pts": stats.power_two_proportions(pa, min(1.0, pa + 0.10), len(a), len(b), alpha),
               "database_top_vs_middle_gap": gap if c.role == "train" else math.nan,
               "power_for_database_gap": (stats.power_two_means(gap, sd, sd, len(sa), len(sb), alpha)
                                          if gap is not None and c.role == "train" and estimable
                                          else math.nan),
               "note": note}
        rows.append(row)
    return pd.DataFrame(rows)


def reference_hashes(layout: Any) -> dict[str, set[str]]:
    """Code hashes of the run's training data: the programs of the training pairs (stage 4's
    log) and of the whole database stage 2 built (teacher runs included)."""
    from aad_kit.code import code_hash
    from aad_kit.db import AlgorithmDB
    from aad_kit.run_layout import MissingStageOutput

    out: dict[str, set[str]] = {}
    try:
        db_path = layout.output("02_candidate_generation", "database")
        runs = layout.outputs("04_dar_sampling").get("runs") or []
    except MissingStageOutput:
        return out
    with AlgorithmDB(db_path) as db:
        recs = [r for rid in runs for r in db.records(rid)] if runs else db.records()
    by_id = {r.id: r for r in recs}
    try:
        log = Path(str(layout.output("04_dar_sampling", "pairs")) + ".jsonl")
    except MissingStageOutput:
        log = None
    if log is not None and log.is_file():
        ids = set()
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                ids.update(int(r[k]) for k in ("chosen_id", "rejected_id") if r.get(k) is not None)
        out["training pairs"] = {code_hash(by_id[i].code) for i in ids if i in by_id and by_id[i].code}
    out["database"] = {code_hash(r.code) for r in recs if r.code and r.status == "ok"}
    return out


__all__ = ["ROW_LABELS", "compare_pair", "database_gap", "headline_figure", "headline_table",
           "power_table", "primary_endpoint", "reference_hashes", "training_gap"]
