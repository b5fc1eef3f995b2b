"""Check ``-p name=value`` against the stage notebooks' ``parameters`` cells before anything runs.

Why: a mistyped value (``-p budget=abc``) used to fail minutes later inside a stage with a
numpy TypeError, and an out-of-range one (``-p search_budget=-5``) ran on silently. Each
parameter's annotation (``budget: int = 0``) gives its type; a range is declared in its
comment as ``[min 0]`` (at least), ``[> 0]`` (above) or ``[0..1]`` (closed interval); no
``=`` sign: papermill drops a parameter line holding two of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_RANGE = re.compile(r"\[\s*(min|>)\s*(-?[0-9.]+)\s*\]|\[\s*(-?[0-9.]+)\s*\.\.\s*(-?[0-9.]+)\s*\]")
_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


class ParameterError(ValueError):
    """A pipeline parameter has the wrong type or is out of its declared range."""


def declared_range(help_text: str) -> tuple[str, float, float | None] | None:
    """``(">=" | ">" | "[]", low, high)`` from a parameter's comment, or None."""
    m = _RANGE.search(help_text or "")
    if not m:
        return None
    if m.group(1):
        return (">=" if m.group(1) == "min" else ">"), float(m.group(2)), None
    return "[]", float(m.group(3)), float(m.group(4))


def check_value(name: str, value: Any, declared: Mapping[str, Any], where: str) -> Any:
    """``value`` converted to the declared type (int -> float where a float is declared), or
    :class:`ParameterError` naming the parameter, the stage and what was expected."""
    type_name = str(declared.get("inferred_type_name") or "")
    want = _TYPES.get(type_name)
    if want is not None:
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ParameterError(
                f"parameter {name!r} of {where} must be {type_name} ({declared.get('help', '')}), "
                f"got {value!r} ({type(value).__name__})"
            )
    rng = declared_range(str(declared.get("help") or ""))
    if rng is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        op, lo, hi = rng
        bad = (op == ">=" and value < lo) or (op == ">" and value <= lo) or (
            op == "[]" and not (lo <= value <= (hi if hi is not None else lo)))
        if bad:
            want_txt = f"{op} {lo:g}" if op != "[]" else f"in [{lo:g}, {hi:g}]"
            raise ParameterError(f"parameter {name!r} of {where} must be {want_txt}, got {value!r}")
    return value


def check_parameters(params: Mapping[str, Any], declared_by_stage: Mapping[str, Mapping[str, Any]]
                     ) -> dict[str, Any]:
    """Every parameter checked against every stage that declares it; returns the converted
    values. Unknown names are the caller's concern (the pipeline reports them)."""
    out = dict(params)
    for name in params:
        for stage, declared in declared_by_stage.items():
            if name in declared:
                out[name] = check_value(name, out[name], declared[name], f"stage {stage}")
    return out


__all__ = ["ParameterError", "check_parameters", "check_value", "declared_range"]
