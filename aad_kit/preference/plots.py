"""Pictures and an inspector for preference pairs (stage 4 notebook).

Each figure function returns a matplotlib Figure (save it with
:func:`aad_kit.plots.save_figure`); :func:`pair_inspector` returns an ipywidgets widget that
also executes headless under papermill.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from aad_kit.preference.core import PairSet, Pool

SUBSET_CMAP = "viridis_r"
STRATEGY_COLORS = {
    "dar": "#1565c0", "dar_diverse": "#00897b", "random": "#9e9e9e", "min_gap": "#ef6c00", "top_bottom": "#6a1b9a",
    "half_zip": "#2e7d32",
}  # fmt: skip


def _color(name: str, k: int) -> str:
    return STRATEGY_COLORS.get(name, plt.get_cmap("tab10")(k % 10))


def fitness_subsets(source: Pool | PairSet, bins: int = 30) -> Figure:
    """Histogram of the valid algorithms' scores, coloured by DAR subset, with the boundaries.

    With a :class:`PairSet`, the scores of the chosen (top strip) and rejected (bottom strip)
    answers are marked under the histogram.
    """
    pool = source.pool if isinstance(source, PairSet) else source
    fig, ax = plt.subplots(figsize=(8, 3.8))
    s = pool.scores
    if len(s) == 0:
        ax.text(0.5, 0.5, "no valid algorithm", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    cmap = plt.get_cmap(SUBSET_CMAP, max(pool.n_subsets, 2))
    lo, hi = float(s.min()), float(s.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    stacked = [s[pool.subset == k] for k in range(pool.n_subsets)]
    ax.hist(stacked, bins=edges, stacked=True, color=[cmap(k) for k in range(pool.n_subsets)],
            label=[f"S{k} ({len(v)})" for k, v in enumerate(stacked)], edgecolor="white", linewidth=0.3)
    for b in pool.boundaries():
        ax.axvline(b, color="#c62828", ls="--", lw=1)
    if isinstance(source, PairSet) and source.pairs:
        y0 = ax.get_ylim()[1]
        cs = [p.chosen.score for p in source.pairs]
        rs = [p.rejected.score for p in source.pairs if p.rejected.valid]
        ax.plot(cs, np.full(len(cs), -0.04 * y0), "|", color="#1565c0", ms=10, label="chosen (y+)")
        ax.plot(rs, np.full(len(rs), -0.09 * y0), "|", color="#c62828", ms=10, label="rejected (y-)")
        ax.set_ylim(-0.13 * y0, y0)
    failed = f", {len(pool.failed)} failed answers below every subset" if pool.failed else ""
    ax.set_title(f"Fitness of {len(s)} valid distinct algorithms in {pool.n_subsets} ranked subsets"
                 f" (S0 = best){failed}", fontsize=9)
    ax.set_xlabel("score (higher is better)")
    ax.set_ylabel("algorithms")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def pair_gaps(sets: Mapping[str, PairSet]) -> Figure:
    """Score difference ``score(y+) - score(y-)`` per strategy (valid-vs-valid pairs).

    Box plots with the individual gaps; the share of pairs whose ``y-`` is a failed answer (no
    finite gap) is written under each box.
    """
    names = list(sets)
    fig, ax = plt.subplots(figsize=(1.7 * max(len(names), 2) + 2, 3.8))
    data, labels = [], []
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        gaps = np.array([p.score_gap for p in sets[name].pairs], dtype=float)
        finite = gaps[np.isfinite(gaps)]
        data.append(finite if len(finite) else np.array([np.nan]))
        failed = float(np.mean(np.isnan(gaps))) if len(gaps) else 0.0
        labels.append(f"{name}\n{len(gaps)} pairs\n{failed:.0%} vs failed")
        if len(finite):
            ax.scatter(k + 1 + rng.uniform(-0.18, 0.18, len(finite)), finite, s=8, alpha=0.5,
                       color=_color(name, k), zorder=3)
    ax.boxplot(data, showfliers=False, widths=0.5)
    ax.set_xticks(range(1, len(names) + 1), labels, fontsize=8)
    ax.set_ylabel("score(y+) - score(y-)")
    ax.set_title("Preference gap per strategy (valid-vs-valid pairs)", fontsize=9)
    fig.tight_layout()
    return fig


def quality_vs_diversity(summary: pd.DataFrame) -> Figure:
    """Side by side per strategy: quality (mean chosen score) against diversity of the chosen set.

    Left: mean chosen score vs mean pairwise code similarity of the distinct chosen answers
    (lower = more diverse; bottom right is the goal). Right: distinct chosen algorithms,
    near-duplicate families and distinct AST shapes among them.
    """
    df = summary[summary["n_pairs"] > 0].reset_index(drop=True)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for k, r in df.iterrows():
        sim = r["chosen_similarity"]
        a1.scatter([sim if math.isfinite(sim) else 0.0], [r["mean_chosen_score"]], s=60,
                   color=_color(r["strategy"], k), zorder=3)
        a1.annotate(f"{r['strategy']} ({r['n_pairs']})", (sim if math.isfinite(sim) else 0.0, r["mean_chosen_score"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    a1.set_xlabel("mean pairwise similarity of the chosen set (lower = more diverse)")
    a1.set_ylabel("mean chosen score")
    a1.set_title("Quality vs diversity of y+", fontsize=9)
    width = 0.27
    x = np.arange(len(df))
    for off, col, label in ((-width, "distinct_chosen", "distinct chosen"),
                            (0.0, "chosen_families", "families (near-dup clusters)"),
                            (width, "chosen_shapes", "distinct AST shapes")):
        a2.bar(x + off, df[col], width, label=label)
    a2.set_xticks(x, df["strategy"], fontsize=8)
    a2.set_ylabel("count")
    a2.set_title("Structural diversity of the chosen answers", fontsize=9)
    a2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _subset_counts(ps: PairSet) -> np.ndarray:
    m = ps.pool.n_subsets
    counts = np.zeros((m, m + 1), dtype=int)
    for p in ps.pairs:
        counts[p.chosen_subset, min(p.rejected_subset, m)] += 1
    return counts


def subset_heatmap(ps: PairSet, ax=None) -> Figure:  # noqa: ANN001
    """Counts of pairs by (chosen subset, rejected subset); the last column is failed answers."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(4.6, 3.8))
    else:
        fig = ax.figure
    counts = _subset_counts(ps)
    m = ps.pool.n_subsets
    im = ax.imshow(counts, cmap="Blues", aspect="auto")
    ax.set_xticks(range(m + 1), [f"S{k}" for k in range(m)] + ["failed"], fontsize=8)
    ax.set_yticks(range(m), [f"S{k}" for k in range(m)], fontsize=8)
    ax.set_xlabel("rejected (y-) subset")
    ax.set_ylabel("chosen (y+) subset")
    vmax = counts.max() if counts.size else 0
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if counts[i, j] > vmax / 2 else "black")
    ax.set_title(f"{ps.strategy}: {len(ps)} pairs", fontsize=9)
    if own:
        fig.colorbar(im, ax=ax, fraction=0.05)
        fig.tight_layout()
    return fig


def subset_heatmaps(sets: Mapping[str, PairSet]) -> Figure:
    """:func:`subset_heatmap` of every strategy side by side."""
    names = list(sets)
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(3.6 * max(len(names), 1), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        subset_heatmap(sets[name], ax=ax)
    fig.suptitle("Which ranked subsets were paired (rows: y+, columns: y-)", fontsize=9)
    fig.tight_layout()
    return fig


def _fmt(x: object) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def _text(v: object) -> str:
    if isinstance(v, list):  # conversational: list of messages
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in v)
    return str(v)


def pair_inspector(source, prompt_chars: int = 4000):  # noqa: ANN001, ANN201 - widget
    """Page through pairs: prompt, chosen and rejected answers side by side, with scores.

    ``source``: a :class:`PairSet` or a preference ``datasets.Dataset`` (from
    :func:`aad_kit.preference.to_dataset`).
    """
    import ipywidgets as widgets

    if isinstance(source, PairSet):
        from aad_kit.preference.dataset import pair_rows

        rows = pair_rows(source, conversational=True) if source.task else []
    else:
        rows = list(source)
    if not rows:
        return widgets.HTML("<i>no pairs to show</i>")
    slider = widgets.IntSlider(min=0, max=len(rows) - 1, description="pair", continuous_update=False)
    show_prompt = widgets.Checkbox(value=False, description="show prompt")
    view = widgets.HTML()
    box = "<pre style='font-size:11px;white-space:pre-wrap;margin:0'>{}</pre>"

    def render(_: object = None) -> None:
        r = rows[slider.value]
        head = (
            f"<b>{html.escape(str(r.get('strategy', '')))}</b> pair {slider.value + 1}/{len(rows)} · "
            f"task {html.escape(str(r.get('task', '')))} · run {html.escape(str(r.get('run_id', '')))}"
        )
        prompt = ""
        if show_prompt.value:
            text = _text(r["prompt"])
            cut = text[:prompt_chars] + (" …" if len(text) > prompt_chars else "")
            prompt = "<b>prompt x</b>" + box.format(html.escape(cut))

        def side(which: str, color: str) -> str:
            sub = r.get(f"{which}_subset")
            info = (f"id {_fmt(r.get(f'{which}_id'))} · score {_fmt(r.get(f'{which}_score'))} · "
                    f"rank {_fmt(r.get(f'{which}_rank'))} · subset S{_fmt(sub)}")
            if which == "rejected" and r.get("rejected_status") not in (None, "ok"):
                info += f" · <span style='color:#c62828'>{html.escape(str(r['rejected_status']))}</span>"
            body = html.escape(_text(r[which]))
            return (f"<td style='vertical-align:top;width:50%;padding:4px;border-top:3px solid {color}'>"
                    f"<b>{'y+ chosen' if which == 'chosen' else 'y- rejected'}</b><br>{info}{box.format(body)}</td>")

        view.value = (f"{head}<br>{prompt}<table style='width:100%'><tr>"
                      f"{side('chosen', '#2e7d32')}{side('rejected', '#c62828')}</tr></table>")

    slider.observe(render, names="value")
    show_prompt.observe(render, names="value")
    render()
    return widgets.VBox([widgets.HBox([slider, show_prompt]), view])


__all__ = [
    "fitness_subsets",
    "pair_gaps",
    "pair_inspector",
    "quality_vs_diversity",
    "subset_heatmap",
    "subset_heatmaps",
]
