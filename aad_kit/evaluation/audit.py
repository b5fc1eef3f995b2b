"""What a tuned model's answers are made of: learning, or regurgitation of its training data?

Why: DPO on a database of programs can teach a model to write *those* programs. A reader can
only tell learning from copying when the share of verbatim copies is shown: an answer is a
copy when its normalised code (:func:`aad_kit.code.code_hash`: comments, docstrings and
formatting ignored) equals that of a program in the training pairs (or in the whole teacher
database, a wider net).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from aad_kit.code import code_hash


def hashes_of(codes: Iterable[str | None]) -> set[str]:
    return {code_hash(c) for c in codes if c}


def copy_audit(samples: pd.DataFrame, references: Mapping[str, set[str]], *, setting: str | None = None
               ) -> pd.DataFrame:
    """Per model: valid answers on ``setting`` (default: every setting, first per answer), and
    the share of them whose code hash is in each reference set (e.g. ``{"training pairs":
    ..., "teacher database": ...}``). The samples table of :mod:`aad_kit.evaluation.generalisation`."""
    df = samples[samples["status"] == "ok"]
    if setting is not None:
        df = df[df["setting"] == setting]
    df = df.drop_duplicates(["model", "task", "seed", "sample"])
    rows = []
    for model, g in df.groupby("model", sort=False):
        row: dict[str, Any] = {"model": model, "valid_answers": len(g),
                               "distinct_valid": int(g["code_hash"].nunique())}
        for name, ref in references.items():
            hit = g["code_hash"].isin(ref)
            row[f"copies of {name}"] = int(hit.sum())
            row[f"share copied from {name}"] = float(hit.mean()) if len(g) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["copy_audit", "hashes_of"]
