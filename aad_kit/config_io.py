"""JSON round trip of the kit's frozen dataclass configs.

Why one place: configs are stored in manifests and databases and compared on resume, so the
rule "tuples in the dataclass, lists in JSON, unknown keys ignored" must be the same for the
search configs, the evaluation grid and the teacher spec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def _as_lists(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_as_lists(x) for x in v]
    if isinstance(v, dict):
        return {k: _as_lists(x) for k, x in v.items()}
    return v


def _as_tuples(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_as_tuples(x) for x in v)
    return v


def config_to_dict(config: Any) -> dict[str, Any]:
    """``dataclasses.asdict`` with every tuple, at any depth, as a list (what JSON gives back)."""
    return {k: _as_lists(v) for k, v in dataclasses.asdict(config).items()}


def config_from_dict(cls: type[T], d: Mapping[str, Any], *, exclude: Iterable[str] = (),
                     **extra: Any) -> T:
    """``cls`` from a stored dict: keys ``cls`` does not have (or ``exclude``) are ignored,
    lists become tuples at any depth (mappings are passed as they are); ``extra`` is added."""
    names = {f.name for f in dataclasses.fields(cls)} - set(exclude)  # type: ignore[arg-type]
    kw = {k: _as_tuples(v) for k, v in d.items() if k in names}
    return cls(**kw, **extra)


__all__ = ["config_from_dict", "config_to_dict"]
