"""The base model a DPO training adapts: a registered name (installed on first use), a local
checkpoint directory or a hub id, resolved to where it loads from and its weights' sha256."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model: where it is loaded from and what is known about it."""

    source: str  # what from_pretrained gets: a local directory or a hub id
    path: Path | None  # local directory, when there is one
    name: str  # registry name, directory name or hub id
    weights_sha256: str | None
    record: dict[str, Any] | None  # aad_kit_model.json, when present

    def info(self) -> dict[str, Any]:
        rec = self.record or {}
        return {
            "source": self.source,
            "path": str(self.path) if self.path else None,
            "name": self.name,
            "weights_sha256": self.weights_sha256,
            "sha256_from": "aad_kit_model.json" if rec.get("weights_sha256") else
                           ("hashed" if self.weights_sha256 else None),
            "registry_source": rec.get("source"),
        }


def resolve_base_model(base_model: str | os.PathLike[str], progress: bool = True,
                       hash_limit_bytes: int = 2 << 30) -> BaseModel:
    """Resolve a registered name (installed on first use), a local directory or a hub id.

    The weights' sha256 comes from the directory's ``aad_kit_model.json`` when present; a
    local directory without one is hashed when its weights total under ``hash_limit_bytes``.
    """
    from aad_kit import models as registry

    name = str(base_model)
    path: Path | None
    if name in registry.REGISTRY:
        path = registry.model_path(name, progress=progress)
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser().resolve()
    else:
        return BaseModel(source=name, path=None, name=name, weights_sha256=None, record=None)
    record = registry.read_record(path)
    sha = record.get("weights_sha256") if record else None
    if sha is None:
        files = registry.weight_files(path)
        if files and sum(f.stat().st_size for f in files) <= hash_limit_bytes:
            sha = registry.combined_sha256(registry.hash_weights(path))
    label = str(record["name"]) if record and record.get("name") else path.name
    return BaseModel(source=str(path), path=path, name=label, weights_sha256=sha, record=record)


__all__ = ["BaseModel", "resolve_base_model"]
