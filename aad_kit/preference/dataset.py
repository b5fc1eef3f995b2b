"""Preference pairs -> a Hugging Face ``datasets.Dataset`` in TRL's preference format, on disk.

Each pair becomes one row:

* ``prompt``: exactly what the generator sees at inference. The generalisation stage samples
  with the ``i1`` prompt, so ``x = aad_kit.prompts.i1_prompt(task)``. *Conversational* (for a
  model with a chat template, as :class:`aad_kit.llm.hf.HFSampler` wraps it):
  ``[{"role": "system", ...}, {"role": "user", ...}]`` from :func:`aad_kit.prompts.as_messages`;
  otherwise the plain user prompt string (the hf backend's text for a model without one).
* ``chosen`` / ``rejected``: :func:`aad_kit.prompts.format_answer` of (idea, code) of ``y+`` /
  ``y-`` (a failed answer without code: its raw text), as ``[{"role": "assistant", ...}]`` in
  the conversational form, else the plain string.
* metadata: ``chosen_id, rejected_id, chosen_score, rejected_score, chosen_rank, rejected_rank,
  chosen_subset, rejected_subset, rejected_status, strategy, task, setting, run_id``
  (``rejected_score``/``rejected_rank`` are null for a failed rejected answer).

TRL's ``DPOTrainer`` takes this dataset unchanged (tested with TRL 1.16: the extra columns are
ignored).

On disk (:func:`save_preference_data`), under ``<run_dir>/preference/``:
``<name>/`` (``Dataset.save_to_disk``), ``<name>.jsonl`` (the reviewer's log: one line per pair
with ids, scores, ranks, subsets, statuses and ideas) and ``<name>.summary.json`` (config,
counts, warnings, diversity numbers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aad_kit.preference.core import PairConfig, PairSet, PreferenceDataError
from aad_kit.prompts import as_messages, i1_prompt

METADATA_COLUMNS = (
    "chosen_id", "rejected_id", "chosen_score", "rejected_score", "chosen_rank", "rejected_rank",
    "chosen_subset", "rejected_subset", "rejected_status", "strategy", "task", "setting", "run_id",
)  # fmt: skip


def has_chat_template(tokenizer_or_path: Any) -> bool:
    """Whether a tokenizer (object, or a local model directory) has a chat template."""
    if isinstance(tokenizer_or_path, (str, Path)):
        p = Path(tokenizer_or_path)
        if (p / "chat_template.jinja").exists() or (p / "chat_template.json").exists():
            return True
        cfg = p / "tokenizer_config.json"
        if cfg.exists():
            return bool(json.loads(cfg.read_text(encoding="utf-8")).get("chat_template"))
        return False
    return bool(getattr(tokenizer_or_path, "chat_template", None))


def model_uses_chat_template(model: str | None) -> bool:
    """Whether the model a sampler spec names gets chat-formatted prompts (conversational rows).

    ``openai:`` servers take system + user messages; a local directory (``hf:/path`` or a
    path) is checked for a chat template; a registered model (:mod:`aad_kit.models`) is
    checked where installed, else assumed to have one (both registered models do). Unknown
    specs: True (the hf backend's behaviour for chat models, the common case).
    """
    if not model:
        return True
    from aad_kit.llm.spec import parse_spec

    parsed = parse_spec(model, strict=False)
    if parsed.scheme not in ("", "hf"):  # openai takes messages; llamacpp/replay: not inspected
        return True
    target = parsed.target
    if Path(target).is_dir():
        return has_chat_template(target)
    try:
        from aad_kit.models import REGISTRY, installed_path
    except ImportError:  # pragma: no cover
        return True
    if target in REGISTRY:
        path = installed_path(target)
        return has_chat_template(path) if path else True
    return True


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def pair_rows(ps: PairSet, *, conversational: bool = True, run_id: str | None = None) -> list[dict[str, Any]]:
    """The dataset rows of a pair set (see the module docstring)."""
    if ps.task is None:
        raise PreferenceDataError("the pair set has no task: cannot build the prompt")
    user = i1_prompt(ps.task)
    prompt: Any = as_messages(user) if conversational else user
    rows = []
    for p in ps.pairs:
        chosen, rejected = p.chosen.answer, p.rejected.answer
        rows.append({
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen}] if conversational else chosen,
            "rejected": [{"role": "assistant", "content": rejected}] if conversational else rejected,
            "chosen_id": p.chosen.id, "rejected_id": p.rejected.id,
            "chosen_score": _clean(p.chosen.score), "rejected_score": _clean(p.rejected.score),
            "chosen_rank": p.chosen_rank, "rejected_rank": p.rejected_rank,
            "chosen_subset": p.chosen_subset, "rejected_subset": p.rejected_subset,
            "rejected_status": p.rejected.status, "strategy": p.strategy,
            "task": ps.task, "setting": ps.pool.setting or "",
            "run_id": run_id or ps.pool.run_id or p.chosen.run_id or "",
        })  # fmt: skip
    return rows


def to_dataset(ps: PairSet, *, conversational: bool = True, run_id: str | None = None):  # noqa: ANN201
    """A ``datasets.Dataset`` in TRL's preference format (conversational or plain strings)."""
    import datasets

    rows = pair_rows(ps, conversational=conversational, run_id=run_id)
    msg = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
    text = datasets.Value("string")
    features = datasets.Features({
        "prompt": msg if conversational else text,
        "chosen": msg if conversational else text,
        "rejected": msg if conversational else text,
        "chosen_id": datasets.Value("int64"), "rejected_id": datasets.Value("int64"),
        "chosen_score": datasets.Value("float64"), "rejected_score": datasets.Value("float64"),
        "chosen_rank": datasets.Value("int64"), "rejected_rank": datasets.Value("int64"),
        "chosen_subset": datasets.Value("int64"), "rejected_subset": datasets.Value("int64"),
        "rejected_status": text, "strategy": text, "task": text, "setting": text, "run_id": text,
    })  # fmt: skip
    return datasets.Dataset.from_list(rows, features=features)


def log_rows(ps: PairSet) -> list[dict[str, Any]]:
    """The reviewer's log: one JSON-able dict per pair (no prompt; ideas and statuses included)."""
    out = []
    for k, p in enumerate(ps.pairs):
        out.append({
            "pair": k, "strategy": p.strategy,
            "chosen_id": p.chosen.id, "rejected_id": p.rejected.id,
            "chosen_score": _clean(p.chosen.score), "rejected_score": _clean(p.rejected.score),
            "score_gap": _clean(p.score_gap),
            "chosen_rank": p.chosen_rank, "rejected_rank": p.rejected_rank,
            "chosen_subset": p.chosen_subset, "rejected_subset": p.rejected_subset,
            "chosen_operator": p.chosen.operator, "rejected_operator": p.rejected.operator,
            "rejected_status": p.rejected.status,
            "chosen_idea": p.chosen.idea, "rejected_idea": p.rejected.idea,
        })  # fmt: skip
    return out


def save_preference_data(
    ps: PairSet, run_dir: str | Path, *, dataset: Any = None, name: str | None = None,
    conversational: bool = True, run_id: str | None = None,
) -> dict[str, Path]:
    """Write the dataset (``save_to_disk``), the JSONL log and a summary; returns their paths."""
    from aad_kit.preference.strategies import summarize

    name = name or f"pairs_{ps.strategy}"
    out = Path(run_dir) / "preference"
    out.mkdir(parents=True, exist_ok=True)
    ds = dataset if dataset is not None else to_dataset(ps, conversational=conversational, run_id=run_id)
    ds_dir = out / name
    ds.save_to_disk(str(ds_dir))
    log = out / f"{name}.jsonl"
    with log.open("w", encoding="utf-8") as f:
        for row in log_rows(ps):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {
        "strategy": ps.strategy, "task": ps.task, "setting": ps.pool.setting,
        "run_id": run_id or ps.pool.run_id, "conversational": conversational,
        "n_pairs": len(ps), "requested": ps.requested, "pool": ps.pool.describe(),
        "n_subsets": ps.pool.n_subsets, "subset_boundaries": ps.pool.boundaries(),
        "warnings": ps.warnings, "config": ps.config.to_dict(),
        "stats": {k: _clean(v) for k, v in summarize(ps).items()},
    }  # fmt: skip
    summary_path = out / f"{name}.summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return {"dataset": ds_dir, "log": log, "summary": summary_path}


# ---------------------------------------------------------------------------- from the database
def resolve_run(db: Any, run_id: str | None = None) -> str | None:
    """``run_id`` if given (must exist), else the only / most recently created run in ``db``."""
    runs = db.runs()
    if run_id:
        if db.get_run(run_id) is None and not db.count(run_id):
            known = ", ".join(r.run_id for r in runs) or "none"
            raise PreferenceDataError(f"no run {run_id!r} in {db.path} (runs: {known})")
        return run_id
    if runs:
        return sorted(runs, key=lambda r: (r.created_at, r.run_id))[-1].run_id
    if len(db):
        return None  # rows without a registered run: use them all
    raise PreferenceDataError(f"{db.path} holds no algorithms: run the candidate-generation stage first")


def load_records(db_path: str | Path, run_id: str | None = None) -> tuple[list[Any], str | None]:
    """The records of one run of the database at ``db_path`` and that run's id."""
    from aad_kit.db import AlgorithmDB

    path = Path(db_path)
    if not path.exists():
        raise PreferenceDataError(f"no algorithm database at {path}: run the candidate-generation stage first")
    with AlgorithmDB(path) as db:
        rid = resolve_run(db, run_id)
        recs = db.records(rid)
    if not recs:
        raise PreferenceDataError(f"run {rid!r} in {path} has no algorithms")
    return recs, rid


def load_run_records(db_path: str | Path, run_ids: Sequence[str]) -> list[Any]:
    """The records of several runs (e.g. a teacher database's independent runs: the paper's
    DAR pools every run of the task into one database D)."""
    from aad_kit.db import AlgorithmDB

    path = Path(db_path)
    if not path.exists():
        raise PreferenceDataError(f"no algorithm database at {path}: run the candidate-generation stage first")
    with AlgorithmDB(path) as db:
        known = {r.run_id for r in db.runs()}
        missing = [r for r in run_ids if r not in known]
        if missing:
            raise PreferenceDataError(f"no run(s) {missing} in {path} (runs: {sorted(known)})")
        recs = [rec for rid in run_ids for rec in db.records(rid)]
    if not recs:
        raise PreferenceDataError(f"runs {list(run_ids)} in {path} hold no algorithms")
    return recs


def build_preference_dataset(
    source: str | Path | Sequence[Any],
    strategy: str = "dar",
    config: PairConfig | None = None,
    *,
    run_id: str | None = None,
    conversational: bool = True,
    run_dir: str | Path | None = None,
    name: str | None = None,
):  # noqa: ANN201 - returns (Dataset, PairSet)
    """One call for the pipeline: database (path) or records -> pairs -> Dataset (-> disk).

    Returns ``(dataset, pair_set)``; with ``run_dir`` the dataset, log and summary are saved
    under ``<run_dir>/preference/`` (:func:`save_preference_data`).
    """
    from aad_kit.preference.strategies import sample_pairs

    if isinstance(source, (str, Path)):
        records, run_id = load_records(source, run_id)
    else:
        records = list(source)
    ps = sample_pairs(records, strategy, config)
    ds = to_dataset(ps, conversational=conversational, run_id=run_id)
    if run_dir:
        save_preference_data(ps, run_dir, dataset=ds, name=name, conversational=conversational, run_id=run_id)
    return ds, ps


__all__ = [
    "METADATA_COLUMNS",
    "build_preference_dataset",
    "has_chat_template",
    "load_records",
    "load_run_records",
    "log_rows",
    "model_uses_chat_template",
    "pair_rows",
    "resolve_run",
    "save_preference_data",
    "to_dataset",
]
