"""Held-out preference pairs: the same programs, preferred by their score on *other* settings.

Why: DPO's training accuracy says how well the model separates the pairs it trains on; the
paper's claim is that the preference generalises. The database's valid programs are re-scored
on held-out settings of the task (in the sandbox), and pairs are drawn from those scores with
the training strategy. A rising held-out accuracy during training means the model learned what
makes a program better, not which programs it was shown.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from aad_kit.preference.core import (
    PairConfig,
    PairSet,
    PreferenceDataError,
    _as_records,
    _candidate,
    _get,
)


def rescored_records(records: Sequence[Any], setting: str, sandbox: Any) -> list[dict[str, Any]]:
    """The valid programs of ``records`` (first of each exact code) with their score on
    ``setting``; programs that fail there are kept with that failure."""
    seen: set[str] = set()
    keep = []
    for rec in sorted(_as_records(records), key=lambda r: int(_get(r, "id"))):
        c = _candidate(rec)
        code = (c.code or "").strip()
        if c.status != "ok" or c.score is None or not code or code in seen:
            continue
        seen.add(code)
        keep.append(c)
    if not keep:
        return []
    results = sandbox.evaluate_many([(c.task, c.code, setting) for c in keep])
    return [
        {"id": c.id, "score": r.score, "status": r.status.value, "operator": c.operator,
         "code": c.code, "idea": c.idea, "raw_response": c.raw_response, "task": c.task,
         "setting": setting, "run_id": c.run_id, "duplicate_of": None}
        for c, r in zip(keep, results, strict=True)
    ]


def heldout_pair_set(records: Sequence[Any], settings: Sequence[str], sandbox: Any,
                     strategy: str = "dar", config: PairConfig | None = None,
                     n_pairs: int = 64) -> tuple[PairSet | None, list[dict[str, Any]], str]:
    """Pairs on the held-out ``settings`` (about ``n_pairs`` in all, split evenly), the
    re-scored records, and why there are none (empty when there are pairs)."""
    from aad_kit.preference.strategies import sample_pairs

    config = config or PairConfig()
    all_rows: list[dict[str, Any]] = []
    sets: list[PairSet] = []
    reasons = []
    per = max(1, n_pairs // max(1, len(settings)))
    for k, setting in enumerate(settings):
        rows = rescored_records(records, setting, sandbox)
        all_rows += rows
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sets.append(sample_pairs(rows, strategy, config.with_(n_pairs=per, seed=config.seed + 1 + k)))
        except PreferenceDataError as err:
            reasons.append(f"{setting}: {err}")
    if not sets:
        return None, all_rows, "; ".join(reasons) or "no held-out settings"
    merged = sets[0]
    for extra in sets[1:]:
        merged = PairSet(pairs=merged.pairs + extra.pairs, strategy=merged.strategy,
                         config=merged.config, pool=merged.pool, requested=merged.requested + extra.requested,
                         warnings=merged.warnings + extra.warnings)
    return merged, all_rows, ""


__all__ = ["heldout_pair_set", "rescored_records"]
