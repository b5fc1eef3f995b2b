"""Preference datasets for DPO: loading (:func:`load_preference_dataset`), the format check
(:func:`validate_preference_dataset`) and content hashes (:func:`dataset_fingerprint`).

TRL's preference format: ``prompt`` / ``chosen`` / ``rejected``, either conversational
(``prompt`` = ``[system, user]`` messages, ``chosen``/``rejected`` = ``[assistant]``) or plain
strings. Extra metadata columns (``chosen_id``, ``scores``, ``strategy``, ...) are ignored for
training but hashed into the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def load_preference_dataset(source: Any) -> Any:
    """A ``datasets.Dataset`` from a Dataset, a ``save_to_disk`` directory, a ``.jsonl`` /
    ``.json`` / ``.parquet`` file, or a list of row dicts. A DatasetDict must have "train"."""
    import datasets

    if isinstance(source, datasets.DatasetDict):
        if "train" not in source:
            raise ValueError(f"DatasetDict without a 'train' split (splits: {list(source)})")
        return source["train"]
    if isinstance(source, datasets.Dataset):
        return source
    if isinstance(source, (list, tuple)):
        return datasets.Dataset.from_list(list(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_dir():
            return load_preference_dataset(datasets.load_from_disk(str(path)))
        if not path.is_file():
            raise FileNotFoundError(f"preference dataset not found: {path}")
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            return datasets.Dataset.from_json(str(path))
        if suffix == ".parquet":
            return datasets.Dataset.from_parquet(str(path))
        raise ValueError(f"unsupported preference dataset file {path} (use .jsonl, .json, "
                         ".parquet or a save_to_disk directory)")
    raise TypeError(f"cannot read a preference dataset from {type(source).__name__}")


def _is_messages(value: Any) -> bool:
    return (isinstance(value, list) and len(value) > 0
            and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in value))


def validate_preference_dataset(ds: Any) -> str:
    """Check ``ds`` is usable for DPO; returns its format, "conversational" or "text".

    Raises ``ValueError`` naming the problem: empty dataset, missing columns, mixed formats,
    an empty completion, or conversational completions that are not assistant turns.
    """
    if ds is None or len(ds) == 0:
        raise ValueError("the preference dataset is empty: DPO needs at least one "
                         "(prompt, chosen, rejected) pair")
    missing = [c for c in PREFERENCE_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"the preference dataset lacks column(s) {missing}; it needs {list(PREFERENCE_COLUMNS)} "
            f"(TRL preference format), it has {ds.column_names}"
        )
    row = ds[0]
    kinds = {c: ("conversational" if _is_messages(row[c]) else
                 "text" if isinstance(row[c], str) else type(row[c]).__name__)
             for c in PREFERENCE_COLUMNS}
    if len(set(kinds.values())) != 1 or next(iter(kinds.values())) not in ("conversational", "text"):
        raise ValueError(
            "prompt, chosen and rejected must all be strings or all be lists of "
            f"{{role, content}} messages; row 0 has {kinds}"
        )
    fmt = kinds["prompt"]
    for c in ("chosen", "rejected"):
        if fmt == "conversational":
            roles = [m["role"] for m in row[c]]
            if roles[-1] != "assistant":
                raise ValueError(f"row 0: {c} must end with an assistant message (roles {roles})")
        elif not row[c]:
            raise ValueError(f"row 0: {c} is empty")
    return fmt


def _sha256_rows(ds: Any, columns: Sequence[str]) -> str:
    h = hashlib.sha256()
    for row in ds.select_columns(list(columns)):
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def dataset_fingerprint(ds: Any) -> dict[str, Any]:
    """Content hashes of a preference dataset: ``training_sha256`` over the prompt/chosen/
    rejected columns (what the model sees; resume compares it), ``content_sha256`` over every
    column (metadata included), row order significant."""
    return {
        "rows": len(ds),
        "columns": list(ds.column_names),
        "training_sha256": _sha256_rows(ds, PREFERENCE_COLUMNS),
        "content_sha256": _sha256_rows(ds, ds.column_names),
    }


__all__ = [
    "PREFERENCE_COLUMNS",
    "dataset_fingerprint",
    "load_preference_dataset",
    "validate_preference_dataset",
]
