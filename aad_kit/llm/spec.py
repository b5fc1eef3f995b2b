"""The model spec grammar: one parser and one formatter for every stage's ``model`` strings.

A spec names a model and, optionally, a LoRA adapter on top of it::

    [SCHEME:]TARGET[@adapter=ADAPTER_DIR]

=============  ==============================================================  ============
scheme         target                                                          adapter
=============  ==============================================================  ============
``""``         a registered name (:mod:`aad_kit.models`) or a model directory  allowed
``hf``         a directory, a registered name or a hub id                      allowed
``llamacpp``   a registered name, a ``.gguf`` file or a directory holding one  allowed
``openai``     ``http://HOST:PORT/v1#MODEL_NAME``                              never
``replay``     a completions ``.jsonl`` file                                   never
=============  ==============================================================  ============

A prefix before ``:`` that is not one of these schemes is part of a bare target (so a path
with a colon stays a path). ``openai`` and ``replay`` targets are taken verbatim: an
``@adapter=`` in them is not split off (a remote model or stored answers take no adapter).

:func:`parse_spec` / :func:`format_spec` round-trip (``format_spec(parse_spec(s)) ==
s.strip()``); :func:`with_adapter` is the one way to put an adapter on a base model's spec.
:func:`aad_kit.llm.make_sampler` builds the model a spec names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ADAPTER_MARK = "@adapter="
SCHEMES = ("hf", "llamacpp", "openai", "replay")
ADAPTER_SCHEMES = ("", "hf", "llamacpp")  # the local models, which can carry a LoRA adapter


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``scheme`` ("" for a bare registered name / directory), ``target`` and
    ``adapter`` (None: no ``@adapter=`` part)."""

    scheme: str
    target: str
    adapter: str | None = None

    @property
    def local(self) -> bool:
        """A model loaded in this process (hf / llama.cpp / bare), not a server or replay."""
        return self.scheme in ADAPTER_SCHEMES

    def __str__(self) -> str:
        return format_spec(self)


def parse_spec(spec: str, *, strict: bool = True) -> ModelSpec:
    """Split ``spec`` into scheme, target and adapter (see the module docstring).

    ``strict``: a malformed adapter part (``MODEL@adapter=`` or ``@adapter=/path``) raises
    ``ValueError``; with ``strict=False`` the empty pieces are returned as they are.
    """
    text = str(spec).strip()
    scheme, sep, rest = text.partition(":")
    if not (sep and scheme in SCHEMES):
        scheme, rest = "", text
    if scheme not in ADAPTER_SCHEMES:
        return ModelSpec(scheme, rest, None)
    base, mark, adapter = rest.rpartition(ADAPTER_MARK)
    if not mark:
        return ModelSpec(scheme, rest, None)
    if strict and (not base or not adapter):
        raise ValueError(f"malformed adapter spec {rest!r}: use MODEL{ADAPTER_MARK}/path")
    return ModelSpec(scheme, base, adapter)


def format_spec(spec: ModelSpec | str, target: str | None = None,
                adapter: str | os.PathLike[str] | None = None) -> str:
    """The spec string of a :class:`ModelSpec`, or of ``(scheme, target, adapter)``."""
    if isinstance(spec, ModelSpec):
        scheme, target, adapter = spec.scheme, spec.target, spec.adapter
    else:
        scheme = spec
    if target is None:
        raise TypeError("format_spec needs a ModelSpec or (scheme, target[, adapter])")
    if adapter is not None and scheme not in ADAPTER_SCHEMES:
        raise ValueError(f"a {scheme}: model takes no adapter")
    head = f"{scheme}:{target}" if scheme else str(target)
    return head if adapter is None else f"{head}{ADAPTER_MARK}{adapter}"


def with_adapter(base_spec: str, adapter_dir: str | os.PathLike[str]) -> str:
    """The spec of ``base_spec`` plus a LoRA adapter (local models only; the adapter path is
    made absolute so the spec means the same from any working directory)."""
    parsed = parse_spec(base_spec)
    if not parsed.local:
        raise ValueError(f"an adapter applies to a local model, not to {str(base_spec).strip()!r}; "
                         "give the tuned model's own spec instead")
    if parsed.adapter is not None:
        raise ValueError(f"{str(base_spec).strip()!r} already has an adapter")
    return format_spec(parsed.scheme, parsed.target, str(Path(adapter_dir).expanduser().resolve()))


def adapter_of(spec: str) -> Path | None:
    """The adapter directory a spec names (None without one)."""
    parsed = parse_spec(spec, strict=False)
    return Path(parsed.adapter).expanduser() if parsed.adapter else None


__all__ = [
    "ADAPTER_MARK",
    "ADAPTER_SCHEMES",
    "SCHEMES",
    "ModelSpec",
    "adapter_of",
    "format_spec",
    "parse_spec",
    "with_adapter",
]
