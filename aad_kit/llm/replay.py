"""Backend ``replay``: hand back stored completions, deterministically, without a model.

Used to make search runs and tests reproducible and fast. Records come from a JSONL file
(one JSON object per line) or a list; each record is

    {"text": "<completion>", "match": "<optional prompt substring>", "finish_reason": "stop"}

(a bare string is a record with only ``text``; other keys are ignored).

Which record answers a prompt: records are grouped by their ``match`` value. For each prompt
the first group (in order of first appearance) whose ``match`` occurs in the prompt is used;
if none does, the group of records without ``match``. Each group is a queue that cycles in
file order, with its position kept across calls, so the k-th completion asked of a group is
always the same record whatever the seeds, batch sizes or backends around it.
:meth:`ReplaySampler.reset` rewinds every group. Use ``match`` with an operator's prompt text
(e.g. a phrase only the i1 prompt contains) or a task name to serve different answers to
different prompts.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from aad_kit.llm.base import Completion, GenerationConfig

_DEFAULT_CONFIG = GenerationConfig()  # frozen: safe as a shared default


def load_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a replay JSONL file (blank lines and lines starting with ``#`` are skipped)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                records.append(json.loads(line))
            except ValueError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err})") from None
    return records


class ReplaySampler:
    """Replays stored completions; see the module docstring."""

    backend = "replay"

    def __init__(
        self,
        records: str | os.PathLike[str] | Iterable[dict[str, Any] | str],
        *,
        model_id: str | None = None,
    ) -> None:
        self.source: str | None = None
        self.source_sha256: str | None = None
        if isinstance(records, (str, os.PathLike)):
            path = Path(records)
            self.source = str(path)
            self.source_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
            raw: list[Any] = load_records(path)
            default_id = f"replay:{path.name}"
        else:
            raw = list(records)
            default_id = "replay"
        self.records: list[dict[str, Any]] = []
        for i, rec in enumerate(raw):
            if isinstance(rec, str):
                rec = {"text": rec}
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise ValueError(f"replay record {i} needs a string 'text': {str(rec)[:200]}")
            self.records.append(rec)
        if not self.records:
            raise ValueError("replay needs at least one record")
        self._groups: dict[str | None, list[dict[str, Any]]] = {}
        for rec in self.records:
            self._groups.setdefault(rec.get("match") or None, []).append(rec)
        self._cursor: dict[str | None, int] = dict.fromkeys(self._groups, 0)
        self.model_id = model_id or default_id

    def reset(self) -> None:
        """Rewind every group to its first record."""
        self._cursor = dict.fromkeys(self._groups, 0)

    def _group_for(self, prompt: str) -> str | None:
        for key in self._groups:
            if key is not None and key in prompt:
                return key
        if None in self._groups:
            return None
        raise LookupError(
            f"no replay record matches this prompt and none is unconditional "
            f"(match keys: {[k for k in self._groups if k is not None]}); prompt starts "
            f"{prompt[:120]!r}"
        )

    def sample(
        self, prompts: Sequence[str], n: int = 1, config: GenerationConfig = _DEFAULT_CONFIG
    ) -> list[list[Completion]]:
        """``config`` is ignored: replayed text does not depend on seeds or temperature."""
        if n < 1:
            raise ValueError("n must be >= 1")
        out: list[list[Completion]] = []
        for prompt in prompts:
            key = self._group_for(prompt)
            group = self._groups[key]
            row = []
            for _ in range(n):
                rec = group[self._cursor[key] % len(group)]
                self._cursor[key] += 1
                row.append(Completion(
                    text=rec["text"],
                    prompt_tokens=None,
                    completion_tokens=None,
                    finish_reason=rec.get("finish_reason", "stop"),
                    latency_s=0.0,
                ))
            out.append(row)
        return out

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model_id": self.model_id,
            "source": self.source,
            "source_sha256": self.source_sha256,
            "records": len(self.records),
            "match_keys": [k for k in self._groups if k is not None],
            "weights_sha256": None,
        }

    def __repr__(self) -> str:
        return f"ReplaySampler({self.model_id!r}, records={len(self.records)})"
