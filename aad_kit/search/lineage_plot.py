"""Plot the ancestry of one algorithm as a layered tree (matplotlib only, no graphviz).

Layers are generations (top: generation 0); within a layer nodes are ordered by the mean
position of their parents (then id), which keeps most edges short. Node colour is the score
(invalid ancestors grey); labels show ``#id``, the operator and the score.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

from aad_kit.db import AlgorithmDB, LineageNode

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def lineage_layout(nodes: list[LineageNode]) -> dict[int, tuple[float, float]]:
    """``{id: (x, y)}``: y = -generation, x spread evenly within each generation."""
    by_gen: dict[int, list[LineageNode]] = {}
    for n in nodes:
        by_gen.setdefault(n.generation, []).append(n)
    pos: dict[int, tuple[float, float]] = {}
    for gen in sorted(by_gen):
        layer = by_gen[gen]

        def key(n: LineageNode) -> tuple[float, int]:
            xs = [pos[p][0] for p in n.parent_ids if p in pos]
            return (sum(xs) / len(xs) if xs else 0.0, n.id)

        layer.sort(key=key)
        width = len(layer)
        for i, n in enumerate(layer):
            pos[n.id] = (i - (width - 1) / 2.0, -float(gen))
    return pos


def plot_lineage(
    db: AlgorithmDB,
    algorithm_id: int | None = None,
    *,
    run_id: str | None = None,
    ax: Axes | None = None,
    show_ideas: bool = False,
    cmap: str = "viridis",
) -> Figure:
    """Draw the lineage of ``algorithm_id`` (default: the best algorithm of ``run_id``)."""
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    if algorithm_id is None:
        best = db.best(run_id)
        if not best:
            raise ValueError(f"no valid algorithm in run {run_id!r} to draw the lineage of")
        algorithm_id = best[0].id
    nodes = lineage(db, algorithm_id)
    pos = lineage_layout(nodes)
    if ax is None:
        widest = max(sum(1 for n in nodes if n.generation == g) for g in {n.generation for n in nodes})
        width = max(5.0, (2.6 if show_ideas else 1.6) * widest + 1.5)
        height = max(3.0, 1.3 * (len({n.generation for n in nodes}) + 1))
        fig, ax = plt.subplots(figsize=(min(width, 18.0), min(height, 14.0)))
    else:
        fig = ax.figure  # type: ignore[assignment]
    scores = [n.score for n in nodes if n.score is not None and n.status == "ok"]
    norm = colors.Normalize(vmin=min(scores), vmax=max(scores)) if scores else None
    mapper = cm.ScalarMappable(norm=norm, cmap=cmap) if norm else None
    for n in nodes:
        for p in n.parent_ids:
            if p in pos:
                (x0, y0), (x1, y1) = pos[p], pos[n.id]
                ax.annotate(
                    "", xy=(x1, y1 + 0.12), xytext=(x0, y0 - 0.12),
                    arrowprops={"arrowstyle": "->", "color": "0.45", "lw": 1.0},
                )  # fmt: skip
    for n in nodes:
        x, y = pos[n.id]
        ok = n.status == "ok" and n.score is not None and mapper is not None
        face: Any = mapper.to_rgba(n.score) if ok else "0.8"  # type: ignore[union-attr]
        edge = "crimson" if n.depth == 0 else "black"
        score = f"{n.score:.4g}" if n.score is not None else n.status
        label = f"#{n.id} {n.operator}\n{score}"
        if show_ideas and n.idea:
            label += "\n" + "\n".join(textwrap.wrap(n.idea, 26, max_lines=2, placeholder="..."))
        ax.scatter([x], [y], s=900, c=[face], edgecolors=edge, linewidths=2 if n.depth == 0 else 1, zorder=3)
        ax.text(x, y - 0.28, label, ha="center", va="top", fontsize=7, zorder=4)
    gens = sorted({n.generation for n in nodes})
    ax.set_yticks([-g for g in gens], [f"gen {g}" for g in gens])
    ax.set_xticks([])
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(-max(gens) - 0.9, 0.5)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    if mapper is not None:
        fig.colorbar(mapper, ax=ax, label="score", shrink=0.7)
    ax.set_title(f"Lineage of algorithm #{algorithm_id} ({len(nodes)} algorithms)")
    return fig  # type: ignore[return-value]


def lineage(db: AlgorithmDB, algorithm_id: int) -> list[LineageNode]:
    return db.lineage(algorithm_id)


__all__ = ["lineage_layout", "plot_lineage"]
