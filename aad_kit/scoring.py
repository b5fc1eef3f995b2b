"""Stage 3 in library form: score a pool of candidate programs through the sandbox.

The pool today is the shipped baselines plus the hostile catalogue; the search stage feeds
generated programs through the same :func:`score_candidates`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from aad_kit.result import Status
from aad_kit.sandbox import Sandbox
from aad_kit.sandbox.hostile import hostile_candidates
from aad_kit.tasks import get_task


@dataclass(frozen=True)
class Candidate:
    task: str
    setting: str
    name: str
    kind: str  # "baseline" | "hostile" | "generated"
    code: str
    expected: Status | None = None  # known outcome (hostile programs); None: not known ahead


def baseline_candidates(task_settings: Mapping[str, Sequence[str]]) -> list[Candidate]:
    """Every shipped heuristic of each task on each of its listed settings."""
    out = []
    for task_name, settings in task_settings.items():
        for h in get_task(task_name).heuristics().values():
            # No expected status: a shipped heuristic can legitimately exceed a setting's time
            # budget (FunSearch's OR heuristic loops over bins in Python and needs ~70 s on
            # 5k Weibull items against a 30 s budget). The tables show it as a timeout.
            out += [Candidate(task_name, s, h.name, "baseline", h.code) for s in settings]
    return out


def hostile_pool(task_settings: Mapping[str, str]) -> list[Candidate]:
    """The hostile catalogue rendered for each task, on one setting per task."""
    return [
        Candidate(task_name, setting, h.name, "hostile", h.render(task_name), h.expected)
        for task_name, setting in task_settings.items()
        for h in hostile_candidates()
    ]


def run_cache_path(run_dir: str | Path | None) -> str | None:
    """The evaluation cache shared by all stages of one run directory (None: memory only)."""
    if not run_dir:
        return None
    from aad_kit.run_layout import RunLayout

    layout = RunLayout.of(run_dir)
    layout.root.mkdir(parents=True, exist_ok=True)
    return str(layout.eval_cache)


def score_candidates(
    candidates: Sequence[Candidate], sandbox: Sandbox, progress: bool = True
) -> pd.DataFrame:
    """Evaluate all candidates in parallel; one tidy row per candidate."""
    t0 = time.perf_counter()
    results = sandbox.evaluate_many(
        [(c.task, c.code, c.setting) for c in candidates], progress=progress
    )
    wall = time.perf_counter() - t0
    rows = []
    for c, r in zip(candidates, results, strict=True):
        rows.append({
            "task": c.task, "setting": c.setting, "name": c.name, "kind": c.kind,
            "expected": c.expected.value if c.expected else None,
            "status": r.status.value, "score": r.score, "metric": r.metric,
            "runtime_s": r.runtime_s, "cached": r.cached, "message": r.message[:200],
            "stdout_chars": len(r.stdout), "code_hash": r.code_hash,
        })
    df = pd.DataFrame(rows)
    df.attrs["wall_s"] = wall
    return df


def expectation_report(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose outcome differs from the expected status (empty means all as expected)."""
    known = df[df["expected"].notna()]
    return known[known["status"] != known["expected"]]


def summarize(df: pd.DataFrame, groups: Iterable[str] = ("task", "setting")) -> pd.DataFrame:
    """Per group: candidates, valid rate, best score, median evaluation time."""
    g = df.groupby(list(groups))
    return pd.DataFrame({
        "candidates": g.size(),
        "valid_rate": g["status"].apply(lambda s: float((s == "ok").mean())),
        "best_score": g["score"].max(),
        "median_eval_s": g["runtime_s"].median(),
    }).reset_index()
