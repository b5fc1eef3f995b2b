"""The models of the generalisation study: which ones to compare (:func:`resolve_models`: the
base model and, where there is one, base + the run's DPO adapter) and what pins down a model's
answers under its name (:func:`spec_fingerprint`, compared on resume).

The spec grammar and :func:`with_adapter` are :mod:`aad_kit.llm.spec`'s; the adapter hash is
:func:`aad_kit.models.adapter_sha256`, the same one the DPO manifest and the samplers' ``info()``
record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aad_kit.llm.spec import adapter_of, parse_spec, with_adapter
from aad_kit.models import WEIGHT_SUFFIXES, adapter_sha256, combined_sha256, sha256_file


def is_adapter_dir(path: str | os.PathLike[str] | None) -> bool:
    return bool(path) and (Path(path) / "adapter_config.json").is_file()  # type: ignore[arg-type]


def resolve_models(
    profile: str,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    base_model: str = "",
    adapter_dir: str | os.PathLike[str] | None = None,
    tuned_model: str = "",
) -> tuple[dict[str, str], str]:
    """``({"base": spec, "tuned": spec}, explanation)``; ``tuned`` is left out when there is
    no tuned model (no ``tuned_model``, no ``adapter_dir``, no adapter from the run's DPO stage).

    ``base_model`` empty: the profile's model. ``tuned_model`` (a full spec) wins over an
    adapter. An explicitly given ``adapter_dir`` must be a PEFT adapter directory.
    """
    from aad_kit.profiles import get_profile

    base = base_model.strip() or get_profile(profile).model
    models = {"base": base}
    if tuned_model.strip():
        models["tuned"] = tuned_model.strip()
        return models, f"base: {base}; tuned: {models['tuned']} (given)"
    if adapter_dir:
        if not is_adapter_dir(adapter_dir):
            raise FileNotFoundError(f"{adapter_dir} is not a LoRA adapter directory "
                                    "(no adapter_config.json)")
        models["tuned"] = with_adapter(base, adapter_dir)
        return models, f"base: {base}; tuned: base + adapter {adapter_dir}"
    from aad_kit.training.runner import run_adapter_dir

    default = run_adapter_dir(run_dir) if run_dir else None
    if default is not None and is_adapter_dir(default):
        models["tuned"] = with_adapter(base, default)
        return models, f"base: {base}; tuned: base + adapter {default} (from the run directory)"
    where = f"{default}" if default is not None else "<run_dir>/dpo/adapter (no run_dir given)"
    return models, (
        f"base: {base}. No tuned model: no tuned_model or adapter_dir was given and there is no "
        f"adapter at {where}. Only the base model is evaluated; the base-vs-tuned comparison is "
        "skipped. Run the DPO stage first, or pass adapter_dir / tuned_model."
    )


def spec_fingerprint(spec: str) -> dict[str, Any]:
    """The spec plus the sha256 of what it points at when that can change under one name
    (an adapter directory: :func:`aad_kit.models.adapter_sha256`; a replay file)."""
    fp: dict[str, Any] = {"spec": spec}
    adapter = adapter_of(spec)
    if adapter is not None and adapter.is_dir():
        fp["adapter_sha256"] = adapter_sha256(adapter)
    parsed = parse_spec(spec, strict=False)
    if parsed.scheme == "replay" and Path(parsed.target).expanduser().is_file():
        fp["replay_sha256"] = sha256_file(Path(parsed.target).expanduser())
    return fp


def _without_hashed_paths(fp: Mapping[str, Any]) -> dict[str, Any]:
    """``fp`` with the adapter / replay path in its spec replaced by the hash recorded for it."""
    out = dict(fp)
    parsed = parse_spec(str(out.get("spec", "")), strict=False)
    if parsed.adapter is not None and "adapter_sha256" in out:
        out["spec"] = str(dataclasses.replace(parsed, adapter=f"sha256:{out['adapter_sha256']}"))
    elif parsed.scheme == "replay" and "replay_sha256" in out:
        out["spec"] = "replay:sha256:" + str(out["replay_sha256"])
    return out


def fingerprints_match(stored: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether a run directory's recorded fingerprint describes the model ``current`` does.

    Older run directories recorded ``adapter_sha256`` under an earlier definition
    (:func:`_older_adapter_hashes`); such a record still matches when that old hash of the
    same directory agrees (the caller then records the current fingerprint).

    A path the fingerprint also hashes (the adapter directory, the replay file) may differ:
    a copied run directory moves its adapter, and its answers are still that adapter's."""
    if _without_hashed_paths(stored) == _without_hashed_paths(current):
        return True
    differs = {k for k in set(stored) | set(current) if stored.get(k) != current.get(k)}
    if not differs <= {"adapter_sha256", "spec"}:
        return False
    adapter = adapter_of(str(current.get("spec", "")))
    if adapter is None or not adapter.is_dir():
        return False
    old = dict(stored, adapter_sha256=current.get("adapter_sha256"))
    return (_without_hashed_paths(old) == _without_hashed_paths(current)
            and stored.get("adapter_sha256") in _older_adapter_hashes(adapter))


def _older_adapter_hashes(path: Path) -> set[str]:
    """What older run directories recorded as an adapter's hash (read only): first a hash of
    every file's name and sha256; then :func:`aad_kit.models.combined_sha256` of the weight
    files counting ``training_args.bin``, which holds the output directory and so made
    identical adapters differ."""
    files = sorted(q for q in path.iterdir() if q.is_file())
    every = hashlib.sha256()
    for p in files:
        every.update(f"{p.name}\0{sha256_file(p)}\n".encode())
    with_args = combined_sha256({p.name: sha256_file(p) for p in files
                                 if p.name.endswith(WEIGHT_SUFFIXES)})
    return {every.hexdigest()} | ({with_args} if with_args else set())


__all__ = ["fingerprints_match", "is_adapter_dir", "resolve_models", "spec_fingerprint",
           "with_adapter"]
