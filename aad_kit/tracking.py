"""Experiment tracking in the tools researchers already use.

Why: a run's numbers live in its CSV/JSON tables and figures, but people compare runs in
TensorBoard (or W&B). Each run therefore also writes TensorBoard event files into
``<run>/tensorboard/`` (``tensorboard --logdir runs/<id>``): the DPO stage's per-step
losses, rewards and held-out preference accuracy (transformers' own ``TensorBoardCallback``,
what TRL's ``report_to="tensorboard"`` installs), and each search's best-so-far and valid rate
per sample. W&B is used only when asked for (``report_to="wandb"``; ``WANDB_MODE=offline``
works without a network). Tracking is best effort: without the ``tensorboard`` package,
``"auto"`` means no event files, never a failed stage.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TRACKERS = ("tensorboard", "wandb")


def tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def parse_report_to(report_to: str | Sequence[str]) -> list[str]:
    """``"auto"`` (TensorBoard when installed), ``"none"``, or tracker names
    (``"tensorboard,wandb"`` or a list); unknown names are an error naming the choices."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    names = [n.strip() for name in names for n in name.split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    if names == ["auto"]:
        return ["tensorboard"] if tensorboard_available() else []
    unknown = sorted(set(names) - set(TRACKERS))
    if unknown:
        raise ValueError(f"unknown tracker(s) {unknown}; choose from auto, none, {', '.join(TRACKERS)}")
    return list(dict.fromkeys(names))


def dpo_tracking(report_to: str | Sequence[str], log_dir: str | os.PathLike[str]
                 ) -> tuple[list[Any], list[str], dict[str, Any]]:
    """``(callbacks, report_to for TRL, manifest entry)`` of a DPO training.

    TensorBoard goes through an explicit ``TensorBoardCallback`` whose writer logs into
    ``log_dir`` (transformers 5 would pick ``<output_dir>/runs/<date_host>`` on its own); the
    other trackers are handed to TRL's ``report_to`` unchanged."""
    names = parse_report_to(report_to)
    callbacks: list[Any] = []
    info: dict[str, Any] = {"report_to": names, "tensorboard_dir": None}
    if "tensorboard" in names:
        if not tensorboard_available():
            raise ValueError("report_to names tensorboard but the tensorboard package is not installed "
                             "(pip install tensorboard)")
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        Path(log_dir).mkdir(parents=True, exist_ok=True)
        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir))))
        info["tensorboard_dir"] = str(log_dir)
    return callbacks, [n for n in names if n != "tensorboard"], info


def search_curves(samples: Any) -> Any:
    """Per run and sample: the best valid score so far and the running valid rate.

    ``samples``: the database's frame (:meth:`aad_kit.db.AlgorithmDB.to_dataframe`); seed
    programs (``sample_index`` < 0 or missing) count for the best score but not as samples.
    Returns a frame with ``run_id, sample, best_so_far, valid_rate, score``."""
    import pandas as pd

    rows = []
    for run_id, g in samples.groupby("run_id", sort=True):
        seeds = g[g["sample_index"].isna() | (g["sample_index"] < 0)]
        ok = seeds["status"].eq("ok") & seeds["score"].notna()
        best = float(seeds.loc[ok, "score"].max()) if ok.any() else -math.inf
        n_valid = 0
        for i, r in enumerate(g.dropna(subset=["sample_index"]).query("sample_index >= 0")
                              .sort_values("sample_index").itertuples(), start=1):
            valid = r.status == "ok" and r.score == r.score
            n_valid += bool(valid)
            if valid:
                best = max(best, float(r.score))
            rows.append({"run_id": run_id, "sample": i, "best_so_far": best if best > -math.inf else math.nan,
                         "valid_rate": n_valid / i, "score": float(r.score) if valid else math.nan})
    return pd.DataFrame(rows, columns=["run_id", "sample", "best_so_far", "valid_rate", "score"])


def write_search_events(samples: Any, log_dir: str | os.PathLike[str]) -> list[Path]:
    """TensorBoard scalars ``search/best_so_far``, ``search/valid_rate`` and ``search/score``
    (valid samples only), one event directory per search run under ``log_dir``; rewritten
    from the database each time, so a resumed stage leaves one consistent log. Returns the
    directories written (none without the tensorboard package)."""
    if not tensorboard_available():
        return []
    import shutil

    from torch.utils.tensorboard import SummaryWriter

    curves = search_curves(samples)
    out = []
    for run_id, g in curves.groupby("run_id", sort=True):
        d = Path(log_dir) / str(run_id)
        if d.exists():
            shutil.rmtree(d)
        with SummaryWriter(log_dir=str(d)) as w:
            for r in g.itertuples():
                if r.best_so_far == r.best_so_far:
                    w.add_scalar("search/best_so_far", r.best_so_far, r.sample)
                w.add_scalar("search/valid_rate", r.valid_rate, r.sample)
                if r.score == r.score:
                    w.add_scalar("search/score", r.score, r.sample)
        out.append(d)
    return out


def read_scalars(log_dir: str | os.PathLike[str]) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag under ``log_dir`` (recursively) as ``[(step, value), ...]``: how a
    test or a notebook checks what TensorBoard will show."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for d in sorted({p.parent for p in Path(log_dir).rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(d))
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return found
