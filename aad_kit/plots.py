"""Figures for the notebooks. Each function draws one figure and returns it.

Notebooks stay thin: they call these, and :func:`save_figure` keeps a PNG copy in the run
directory so batch runs leave pictures behind, not only executed notebooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from aad_kit.db import best_valid_so_far
from aad_kit.result import Status
from aad_kit.tasks import get_task

STATUS_ORDER = [s.value for s in Status]
STATUS_COLORS = {
    "ok": "#2e7d32", "syntax_error": "#8d6e63", "missing_function": "#a1887f",
    "forbidden_import": "#6a1b9a", "forbidden_call": "#ab47bc", "runtime_error": "#c62828",
    "timeout": "#ef6c00", "memory_limit": "#f9a825", "invalid_output": "#1565c0",
    "sandbox_error": "#000000",
}


def save_figure(fig: Figure, run_dir: str | Path | None, name: str) -> Path | None:
    """Write ``fig`` to ``<run_dir>/figures/<name>.png`` (no-op without a run directory)."""
    if not run_dir:
        return None
    from aad_kit.run_layout import RunLayout

    path = RunLayout.of(run_dir).figure(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


# ---- stage 1: instances ----------------------------------------------------------------------
def tsp_instances(settings: Sequence[str], heuristic: str = "nearest_neighbour") -> Figure:
    """First instance of each TSP setting, with the tour the given shipped heuristic builds."""
    from aad_kit.tasks.tsp import construct_tour, tour_length

    task = get_task("tsp_construct")
    fn = task.heuristics()[heuristic].function(task.function_name)
    fig, axes = plt.subplots(1, len(settings), figsize=(3.6 * len(settings), 3.6), squeeze=False)
    for ax, setting in zip(axes[0], settings, strict=False):
        inst = task.instances(setting)[0]
        tour = np.asarray(construct_tour(fn, inst))
        closed = np.append(tour, tour[0])
        ax.plot(inst.coords[closed, 0], inst.coords[closed, 1], "-", lw=0.8, color="#90a4ae")
        ax.scatter(inst.coords[:, 0], inst.coords[:, 1], s=10, color="#37474f", zorder=3)
        ax.scatter(*inst.coords[0], s=60, marker="*", color="#c62828", zorder=4, label="depot")
        length = tour_length(tour, inst.distances)
        ax.set_title(f"{setting}: n={inst.n}\n{heuristic} tour {length:.2f}", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    return fig


def cvrp_routes(
    setting: str, heuristics: Sequence[str] = ("nearest_neighbour",), instance: int = 0
) -> Figure:
    """One CVRP instance, with the routes each given shipped heuristic builds (one colour each).

    Customer marker area is proportional to demand; the depot is the red star.
    """
    from aad_kit.tasks.cvrp import construct_routes, route_length, split_routes

    task = get_task("cvrp_construct")
    inst = task.instances(setting)[instance]
    shipped = task.heuristics()
    fig, axes = plt.subplots(1, len(heuristics), figsize=(4.2 * len(heuristics), 4.4),
                             squeeze=False)
    cmap = plt.get_cmap("tab10")
    xy = inst.coords
    for ax, name in zip(axes[0], heuristics, strict=False):
        route = construct_routes(shipped[name].function(task.function_name), inst)
        routes = split_routes(route)
        for i, customers in enumerate(routes):
            closed = [0, *customers, 0]
            ax.plot(xy[closed, 0], xy[closed, 1], "-", lw=1.0, color=cmap(i % 10))
        ax.scatter(xy[1:, 0], xy[1:, 1], s=6 * inst.demands[1:], color="#37474f", zorder=3)
        ax.scatter(*xy[0], s=120, marker="*", color="#c62828", zorder=4, label="depot")
        ax.set_title(f"{name}: {len(routes)} routes, length {route_length(route, inst.distances):.2f}",
                     fontsize=9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(loc="lower left", fontsize=7)
    fig.suptitle(f"CVRP {setting}, instance {instance}: {inst.n_customers} customers "
                 f"(marker area ~ demand), capacity {inst.capacity:g}", fontsize=9)
    fig.tight_layout()
    return fig


def bin_packing_items(settings: Sequence[str]) -> Figure:
    """Item-size distributions (as a fraction of the bin capacity) per bin packing setting."""
    task = get_task("bin_packing")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for setting in settings:
        instances = task.instances(setting)
        frac = np.concatenate([inst.items / inst.capacity for inst in instances])
        cap = instances[0].capacity
        ax.hist(frac, bins=60, range=(0, 1), histtype="step", density=True,
                label=f"{setting} ({len(instances)}x{instances[0].num_items}, C={cap:g})")
    ax.set_xlabel("item size / bin capacity")
    ax.set_ylabel("density")
    ax.set_title("Bin packing: item sizes per setting")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def admissible_set_rows(setting: str, heuristics: Sequence[str]) -> Figure:
    """The pre-admissible rows (one colour per block triple) each priority selects."""
    from aad_kit.tasks.admissible_set import TRIPLES, construct

    task = get_task("admissible_set")
    s = task.setting(setting)
    n, w = s.params["n"], s.params["w"]
    shipped = task.heuristics()
    fig, axes = plt.subplots(1, len(heuristics), figsize=(3.2 * len(heuristics), 4.2), squeeze=False)
    cmap = plt.get_cmap("tab10", len(TRIPLES))
    image = None
    for ax, name in zip(axes[0], heuristics, strict=False):
        pre, full = construct(shipped[name].function(task.function_name), n, w)
        image = ax.imshow(pre, aspect="auto", cmap=cmap, vmin=-0.5, vmax=len(TRIPLES) - 0.5,
                          interpolation="nearest")
        ax.set_title(f"{name}\n{len(pre)} rows -> |set| = {len(full)}", fontsize=9)
        ax.set_xlabel("block")
        ax.set_ylabel("selected row (greedy order)")
    fig.suptitle(f"Admissible set {setting} (n={n}, w={w}): the greedy selection", fontsize=9)
    fig.tight_layout()
    bar = fig.colorbar(image, ax=axes[0].tolist(), ticks=range(len(TRIPLES)), fraction=0.04)
    bar.ax.set_yticklabels([str(t) for t in TRIPLES], fontsize=7)
    bar.set_label("block triple")
    return fig


def baselines(df: pd.DataFrame) -> Figure:
    """Metric of each shipped heuristic on each setting, one panel per task.

    A missing bar is a heuristic that did not finish validly (e.g. over the time budget).
    """
    tasks = list(dict.fromkeys(df["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.8), squeeze=False)
    for ax, task_name in zip(axes[0], tasks, strict=False):
        sub = df[df["task"] == task_name].pivot(index="setting", columns="name", values="metric")
        sub.plot.bar(ax=ax, width=0.8, legend=True)
        task = get_task(task_name)
        arrow = "lower is better" if task.metric_lower_is_better else "higher is better"
        ax.set_title(f"{task_name}", fontsize=10)
        ax.set_ylabel(f"{task.metric_name}\n({arrow})", fontsize=8)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


# ---- stage 3: scoring -------------------------------------------------------------------------
def status_counts(df: pd.DataFrame) -> Figure:
    """Failure taxonomy: how many candidates ended in each status, per task."""
    counts = pd.crosstab(df["task"], df["status"]).reindex(
        columns=[s for s in STATUS_ORDER if s in set(df["status"])], fill_value=0
    )
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.5 * len(counts)))
    counts.plot.barh(stacked=True, ax=ax, color=[STATUS_COLORS[c] for c in counts.columns])
    ax.set_xlabel("candidates")
    ax.set_title("Evaluation outcome per task")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def score_distribution(df: pd.DataFrame) -> Figure:
    """Scores of the valid candidates, one panel per (task, setting)."""
    ok = df[df["status"] == "ok"]
    groups = list(ok.groupby(["task", "setting"]))
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(3.4 * max(1, len(groups)), 3.2),
                             squeeze=False)
    for ax, ((task_name, setting), sub) in zip(axes[0], groups, strict=False):
        ax.hist(sub["score"], bins=min(20, max(3, len(sub))), color="#2e7d32", alpha=0.8)
        ax.set_title(f"{task_name}\n{setting} ({len(sub)} valid)", fontsize=8)
        ax.set_xlabel("score (higher is better)", fontsize=8)
    fig.tight_layout()
    return fig


def evaluation_times(df: pd.DataFrame) -> Figure:
    """Wall time per evaluation, one panel per task, one row per status (log scale).

    Static rejections (syntax, forbidden code) never reach a process and take microseconds;
    timeouts sit at the timeout. Each dot is one candidate.
    """
    tasks = list(dict.fromkeys(df["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False,
                             sharex=True)
    rng = np.random.default_rng(0)
    for ax, task_name in zip(axes[0], tasks, strict=False):
        sub = df[df["task"] == task_name]
        statuses = [s for s in STATUS_ORDER if s in set(sub["status"])]
        for y, status in enumerate(statuses):
            t = sub.loc[sub["status"] == status, "runtime_s"].clip(lower=1e-5).to_numpy()
            ax.scatter(t, y + rng.uniform(-0.15, 0.15, len(t)), s=14, alpha=0.8,
                       color=STATUS_COLORS[status])
        ax.set_yticks(range(len(statuses)), statuses, fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("seconds per evaluation", fontsize=8)
        ax.set_title(task_name, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# ---- stage 2: search ---------------------------------------------------------------------------
def _samples(df: pd.DataFrame) -> pd.DataFrame:
    """LLM samples only (shipped seed heuristics have negative sample indices), in order."""
    return df[df["sample_index"].notna() & (df["sample_index"] >= 0)].sort_values("sample_index")


def best_so_far(df: pd.DataFrame, baselines: dict[str, float] | None = None) -> Figure:
    """Best valid score after each LLM sample, with the shipped baselines as reference lines."""
    samples = _samples(df)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    curve = best_valid_so_far(samples)
    ax.step(samples["sample_index"], curve, where="post", color="#1565c0", label="best generated")
    ok = samples[samples["status"] == "ok"]
    ax.scatter(ok["sample_index"], ok["score"], s=10, color="#90caf9", label="valid sample")
    for i, (name, score) in enumerate(sorted((baselines or {}).items(), key=lambda kv: -kv[1])):
        ax.axhline(score, ls="--", lw=0.8, color=plt.get_cmap("Greys")(0.4 + 0.12 * i), label=name)
    ax.set_xlabel("LLM sample")
    ax.set_ylabel("score (higher is better)")
    ax.set_title("Best score so far")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def best_so_far_by_run(df: pd.DataFrame, baselines: dict[str, float] | None = None,
                       title: str = "Best score so far, per search run") -> Figure:
    """One best-so-far curve per run (e.g. the teacher database's independent runs)."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for i, (run, grp) in enumerate(df.groupby("run_id", sort=True)):
        samples = _samples(grp)
        curve = best_valid_so_far(samples)
        color = plt.get_cmap("tab10")(i % 10)
        ax.step(samples["sample_index"], curve, where="post", color=color, label=str(run))
        ok = samples[samples["status"] == "ok"]
        ax.scatter(ok["sample_index"], ok["score"], s=6, color=color, alpha=0.35)
    for i, (name, score) in enumerate(sorted((baselines or {}).items(), key=lambda kv: -kv[1])):
        ax.axhline(score, ls="--", lw=0.8, color=plt.get_cmap("Greys")(0.4 + 0.12 * i), label=name)
    ax.set_xlabel("LLM sample")
    ax.set_ylabel("score (higher is better)")
    ax.set_title(title)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return fig


def _notes(value: object) -> list[str]:
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    return [str(n) for n in value] if isinstance(value, (list, tuple, np.ndarray)) else []


def island_best_so_far(df: pd.DataFrame) -> pd.DataFrame:
    """Best score held by each island after each LLM sample of a FunSearch run.

    One row per sample index, one column per island (``island:N`` notes); seeds start every
    island, a valid original sample raises its island's best, and a reset
    (``reset:I<-J`` notes on the first sample after it) gives island I the best of island J.
    NaN while an island holds no valid program.
    """
    samples = _samples(df)
    seeds = df[df["sample_index"].notna() & (df["sample_index"] < 0)]
    start = seeds.loc[(seeds["status"] == "ok") & seeds["score"].notna(), "score"].max()
    notes = [_notes(v) for v in samples["notes"]]
    islands = sorted(
        {int(n.split(":", 1)[1]) for ns in notes for n in ns if n.startswith("island:")}
        | {int(i) for ns in notes for n in ns if n.startswith("reset:") for i in n[6:].split("<-")}
    )
    best = {i: float(start) if pd.notna(start) else float("nan") for i in islands}
    rows = []
    for (_, r), ns in zip(samples.iterrows(), notes, strict=True):
        moves = [n.split(":", 1)[1].split("<-") for n in ns if n.startswith("reset:")]
        snapshot = dict(best)
        for dst, src in moves:
            best[int(dst)] = snapshot.get(int(src), float("nan"))
        island = next((int(n.split(":", 1)[1]) for n in ns if n.startswith("island:")), None)
        if island is not None and r["status"] == "ok" and pd.isna(r["duplicate_of"]) and pd.notna(r["score"]):
            best[island] = float(np.nanmax([best[island], float(r["score"])]))
        rows.append({"sample_index": int(r["sample_index"]), **best})
    return pd.DataFrame(rows, columns=["sample_index", *islands]).set_index("sample_index")


def best_so_far_by_island(df: pd.DataFrame, baselines: dict[str, float] | None = None) -> Figure:
    """FunSearch: the best score of each island after each LLM sample (resets dotted)."""
    table = island_best_so_far(df)
    fig, ax = plt.subplots(figsize=(7, 3.6))
    cmap = plt.get_cmap("tab10" if len(table.columns) <= 10 else "tab20")
    for k, island in enumerate(table.columns):
        ax.step(table.index, table[island], where="post", lw=1.1, color=cmap(k % cmap.N),
                label=f"island {island}")
    if len(table.columns):
        ax.step(table.index, table.max(axis=1), where="post", lw=2.2, color="black", alpha=0.35,
                label="best overall")
    samples = _samples(df)
    resets = [int(r.sample_index) for r in samples.itertuples()
              if any(n.startswith("reset:") for n in _notes(r.notes))]
    for i, x in enumerate(resets):
        ax.axvline(x, ls=":", lw=0.9, color="grey", label="island reset" if i == 0 else None)
    for i, (name, score) in enumerate(sorted((baselines or {}).items(), key=lambda kv: -kv[1])):
        ax.axhline(score, ls="--", lw=0.8, color=plt.get_cmap("Greys")(0.4 + 0.12 * i), label=name)
    ax.set_xlabel("LLM sample")
    ax.set_ylabel("best score on the island")
    ax.set_title("Best score so far per island")
    if not len(table.columns):
        ax.text(0.5, 0.5, "no island samples", ha="center", va="center", transform=ax.transAxes)
    ax.legend(fontsize=6, loc="lower right", ncol=2)
    fig.tight_layout()
    return fig


def valid_rate_by_operator(df: pd.DataFrame) -> Figure:
    """Share of each operator's samples that ended in each status."""
    samples = _samples(df)
    table = pd.crosstab(samples["operator"], samples["status"], normalize="index")
    table = table.reindex(columns=[s for s in STATUS_ORDER if s in table.columns])
    counts = samples["operator"].value_counts()
    fig, ax = plt.subplots(figsize=(7, 0.8 + 0.45 * max(1, len(table))))
    table.plot.barh(stacked=True, ax=ax, color=[STATUS_COLORS[c] for c in table.columns])
    ax.set_yticks(range(len(table)), [f"{op} (n={counts[op]})" for op in table.index])
    ax.set_xlabel("share of samples")
    ax.set_title("Outcome per operator")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def score_histogram(df: pd.DataFrame) -> Figure:
    """Scores of the valid, non-duplicate algorithms in the database (seeds included)."""
    ok = df[(df["status"] == "ok") & df["duplicate_of"].isna()]
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for origin, sub in [("generated", ok[ok["operator"] != "seed"]), ("seed heuristic", ok[ok["operator"] == "seed"])]:
        if len(sub):
            ax.hist(sub["score"], bins=min(30, max(5, len(sub))), alpha=0.7, label=f"{origin} ({len(sub)})")
    ax.set_xlabel("score (higher is better)")
    ax.set_ylabel("algorithms")
    ax.set_title("Scores in the database")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
