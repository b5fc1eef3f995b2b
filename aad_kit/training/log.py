"""The DPO training log: one row per logged optimizer step (TRL's metric names plus step
time), kept as ``training_log.jsonl`` and ``training_log.csv`` in the training's directory,
written by a ``TrainerCallback`` after every logged step (:func:`_make_log_callback`)."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

LOG_JSONL = "training_log.jsonl"
LOG_CSV = "training_log.csv"

# Columns every log row carries (TRL's metric names), in CSV order; other logged keys follow.
LOG_COLUMNS = (
    "step", "epoch", "loss", "rewards/margins", "rewards/accuracies", "rewards/chosen",
    "rewards/rejected", "logps/chosen", "logps/rejected", "learning_rate", "grad_norm",
    "step_time_s", "elapsed_s",
)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def read_log(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of ``out_dir/training_log.jsonl`` (empty list when absent)."""
    path = Path(out_dir) / LOG_JSONL
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def load_training_log(out_dir: str | os.PathLike[str]) -> Any:
    """The training log of ``out_dir`` as a pandas DataFrame (one row per logged step)."""
    import pandas as pd

    rows = read_log(out_dir)
    cols = list(LOG_COLUMNS) + sorted({k for r in rows for k in r} - set(LOG_COLUMNS))
    return pd.DataFrame(rows, columns=cols)


def _write_log(out: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite both log files from ``rows`` (atomic per file)."""
    tmp = out / (LOG_JSONL + ".tmp")
    tmp.write_text("".join(json.dumps(r, default=_json_default) + "\n" for r in rows), "utf-8")
    os.replace(tmp, out / LOG_JSONL)
    cols = list(LOG_COLUMNS) + sorted({k for r in rows for k in r} - set(LOG_COLUMNS))
    tmp = out / (LOG_CSV + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in cols})
    os.replace(tmp, out / LOG_CSV)


def _make_log_callback(out: Path, rows: list[dict[str, Any]], elapsed_before: float) -> Any:
    from transformers import TrainerCallback

    class _LogCallback(TrainerCallback):
        """Appends a row per logged step (TRL metrics + step time) to the JSONL/CSV log."""

        def __init__(self) -> None:
            self.t_start = time.perf_counter()
            self.t_step: float | None = None
            self.step_times: list[float] = []
            self.summary: dict[str, Any] = {}

        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
            self.t_step = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            if self.t_step is not None:
                self.step_times.append(time.perf_counter() - self.t_step)

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            if not state.is_world_process_zero:  # one process writes the log (multi-process)
                return
            logs = dict(logs or {})
            if any(k.startswith("eval_") for k in logs):  # an evaluation on the held-out pairs
                ev = {k: v for k, v in logs.items() if k.startswith("eval_")}
                same = [r for r in rows if r.get("step") == int(state.global_step)]
                if same:
                    same[-1].update(ev)
                else:
                    rows.append({"step": int(state.global_step), **ev})
                _write_log(out, rows)
                from aad_kit.progress import report

                report("dpo", int(state.global_step), int(state.max_steps or 0) or None, unit="steps",
                       heldout_accuracy=float(ev.get("eval_rewards/accuracies", float("nan"))))
                return
            if "loss" not in logs:  # the end-of-training summary (train_runtime, ...)
                if "train_runtime" in logs:
                    self.summary = logs
                return
            recent = self.step_times or [float("nan")]
            row = {
                "step": int(state.global_step),
                **{k: v for k, v in logs.items() if k != "step"},
                "step_time_s": round(sum(recent) / len(recent), 4),
                "elapsed_s": round(elapsed_before + time.perf_counter() - self.t_start, 3),
            }
            self.step_times = []
            rows.append(row)
            _write_log(out, rows)
            from aad_kit.progress import report

            report("dpo", int(state.global_step), int(state.max_steps or 0) or None, unit="steps",
                   loss=float(logs.get("loss", float("nan"))),
                   accuracy=float(logs.get("rewards/accuracies", float("nan"))))

    return _LogCallback()


__all__ = ["LOG_COLUMNS", "LOG_CSV", "LOG_JSONL", "load_training_log", "read_log"]
