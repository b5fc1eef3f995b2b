"""The generalisation study's files in a run directory, read and written atomically.

Files in the run directory
--------------------------
``generalisation_samples.csv``
    The long table: one row per (model, task, setting, seed, sample); see :data:`SAMPLE_COLUMNS`.
``generalisation_answers.jsonl``
    One record per answer (raw text, parsed code and idea, parser notes, tokens): written
    right after each sampling call, so an interrupted run never samples twice.
``generalisation_summary.csv``
    Metrics with bootstrap intervals per (model, task, setting): :func:`~aad_kit.evaluation.metrics.summarize`.
``generalisation_comparison.csv``
    Base vs tuned per setting: :func:`~aad_kit.evaluation.metrics.compare_models`.
``generalisation_config.json``
    The config and, per model, what determines its answers (spec, adapter / replay file
    sha256, sampling parameters) plus the sampler's ``info()``.
``generalisation_search.sqlite`` / ``generalisation_search_curves.csv``
    Only with the optional same-budget search comparison (:func:`~aad_kit.evaluation.search_comparison.run_search_comparison`).

The long table is typed on every read (:func:`load_samples`); :func:`restrict` cuts it to one
config's models, grid and seeds in a stable order.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from aad_kit.evaluation.grid import GeneralisationConfig

SAMPLES_CSV = "generalisation_samples.csv"
ANSWERS_JSONL = "generalisation_answers.jsonl"
SUMMARY_CSV = "generalisation_summary.csv"
COMPARISON_CSV = "generalisation_comparison.csv"
CONFIG_JSON = "generalisation_config.json"
SEARCH_DB = "generalisation_search.sqlite"
CURVES_CSV = "generalisation_search_curves.csv"

SAMPLE_COLUMNS: tuple[str, ...] = (
    "model",  # the model's name in the study ("base", "tuned", ...)
    "model_id",  # the sampler's model_id
    "task",
    "setting",
    "role",  # train | held_out | other_task
    "seed",  # GenerationConfig.seed of the sampling call
    "sample",  # index of the answer within its (model, task, seed) call: 0 .. N-1
    "status",  # aad_kit.result.Status value (parser's status when there was no code)
    "valid",  # status == "ok"
    "score",  # higher is better; NaN unless valid
    "metric",  # the task's natural unit; NaN unless valid
    "idea",  # the answer's one-line idea
    "code_hash",  # aad_kit.code.code_hash of the parsed code ("" without code)
    "eval_time",  # seconds the sandbox spent (0 for answers not evaluated)
    "cached",  # the sandbox answered from its cache
    "finish_reason",  # the sampler's: stop | length | error
    "completion_tokens",
    "message",  # the sandbox's (or the parser's) message, shortened
)
_KEY = ("model", "task", "seed")
_ROW_KEY = ("model", "task", "setting", "seed", "sample")
_STR_COLS = ("model", "model_id", "task", "setting", "role", "status", "idea", "code_hash",
             "finish_reason", "message")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def _clean_text(text: Any, limit: int = 300) -> str:
    s = _CONTROL.sub(" ", str(text or "")).strip()
    return s if len(s) <= limit else s[: limit - 3] + "..."


def empty_samples() -> pd.DataFrame:
    return _typed(pd.DataFrame(columns=list(SAMPLE_COLUMNS)))


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reindex(columns=list(SAMPLE_COLUMNS))
    for col in ("score", "metric", "eval_time", "completion_tokens"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    for col in ("seed", "sample"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("int64")
    for col in ("valid", "cached"):
        df[col] = df[col].map(lambda v: str(v).strip().lower() in ("true", "1")).astype(bool)
    for col in _STR_COLS:
        df[col] = df[col].fillna("").astype(str)
    return df


def load_samples(run_dir: str | os.PathLike[str] | None) -> pd.DataFrame:
    """The stored long table (empty when there is none)."""
    path = Path(run_dir) / SAMPLES_CSV if run_dir else None
    if path is None or not path.is_file():
        return empty_samples()
    return _typed(pd.read_csv(path, dtype=str, keep_default_na=False))


def _write_atomic(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def load_answers(run_dir: str | os.PathLike[str] | None) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    """Stored answers per (model, task, seed), each list in sample order (complete cells only;
    a truncated last line from an interrupted write is ignored)."""
    path = Path(run_dir) / ANSWERS_JSONL if run_dir else None
    out: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    if path is None or not path.is_file():
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            key = (rec["model"], rec["task"], int(rec["seed"]))
            out.setdefault(key, []).append(rec)
    for key, recs in list(out.items()):
        by_index = {int(r["sample"]): r for r in recs}  # a re-sampled cell: the last one wins
        out[key] = [by_index[i] for i in sorted(by_index)]
    return out


def _append_answers(run_dir: Path | None, records: Sequence[dict[str, Any]]) -> None:
    if run_dir is None:
        return
    with open(run_dir / ANSWERS_JSONL, "a", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read_state(run_dir: Path | None) -> dict[str, Any]:
    if run_dir is None or not (run_dir / CONFIG_JSON).is_file():
        return {"models": {}, "model_info": {}}
    state = json.loads((run_dir / CONFIG_JSON).read_text(encoding="utf-8"))
    state.setdefault("models", {})
    state.setdefault("model_info", {})
    return state


def _write_state(run_dir: Path | None, state: dict[str, Any]) -> None:
    if run_dir is None:
        return
    tmp = run_dir / (CONFIG_JSON + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, run_dir / CONFIG_JSON)


def _drop_model(run_dir: Path, model: str) -> None:
    df = load_samples(run_dir)
    if len(df):
        _write_atomic(df[df["model"] != model], run_dir / SAMPLES_CSV)
    path = run_dir / ANSWERS_JSONL
    if path.is_file():
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("model") != model:
                    kept.append(line)
            except ValueError:
                continue
        path.write_text("".join(k + "\n" for k in kept), encoding="utf-8")


def stored_models(run_dir: Path) -> list[str]:
    """The models whose sampling parameters the run directory's config file records."""
    return list(_read_state(Path(run_dir))["models"])


def forget_model(run_dir: Path, model: str) -> None:
    """Remove ``model``'s rows, answers and recorded parameters, so that a later study
    samples it afresh under whatever spec it then has (an ablation branch's tuned model)."""
    run_dir = Path(run_dir)
    _drop_model(run_dir, model)
    state = _read_state(run_dir)
    state["models"].pop(model, None)
    state["model_info"].pop(model, None)
    _write_state(run_dir, state)


def _order(df: pd.DataFrame, config: GeneralisationConfig) -> pd.DataFrame:
    """Rows sorted by model (config order), grid order, seed, sample."""
    if df.empty:
        return df
    model_rank = {m: i for i, (m, _) in enumerate(config.models)}
    cell_rank = {(c.task, c.setting): i for i, c in enumerate(config.cells)}
    key = pd.DataFrame({
        "m": df["model"].map(lambda m: model_rank.get(m, len(model_rank))),
        "c": [cell_rank.get((t, s), len(cell_rank)) for t, s in zip(df["task"], df["setting"], strict=True)],
        "seed": df["seed"], "sample": df["sample"],
    }, index=df.index)
    return df.loc[key.sort_values(["m", "c", "seed", "sample"], kind="stable").index].reset_index(drop=True)


def restrict(samples: pd.DataFrame, config: GeneralisationConfig) -> pd.DataFrame:
    """The rows of ``samples`` that belong to ``config`` (its models, grid and seeds)."""
    if samples.empty:
        return samples
    cells = {(c.task, c.setting) for c in config.cells}
    mask = (
        samples["model"].isin(config.model_specs)
        & samples["seed"].isin(config.seeds)
        & (samples["sample"] < config.samples_per_seed)
        & pd.Series([(t, s) in cells for t, s in zip(samples["task"], samples["setting"], strict=True)],
                    index=samples.index)
    )
    out = samples[mask].copy()
    out["role"] = [config.role_of(t, s) for t, s in zip(out["task"], out["setting"], strict=True)]
    return _order(out, config)


__all__ = [
    "ANSWERS_JSONL",
    "COMPARISON_CSV",
    "CONFIG_JSON",
    "CURVES_CSV",
    "SAMPLES_CSV",
    "SAMPLE_COLUMNS",
    "SEARCH_DB",
    "SUMMARY_CSV",
    "empty_samples",
    "load_answers",
    "load_samples",
    "restrict",
]
