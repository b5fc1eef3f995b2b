"""The optional same-budget search comparison: a short EoH search per model with the same
:class:`~aad_kit.search.SearchConfig` (only the sampler differs), and their best-so-far curves."""

from __future__ import annotations

import dataclasses
import gc
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from aad_kit.db import best_valid_so_far
from aad_kit.evaluation.storage import CURVES_CSV, SEARCH_DB, _write_atomic
from aad_kit.llm.base import Sampler
from aad_kit.tasks import get_task


def run_search_comparison(
    models: Mapping[str, str],
    search_config: Any,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    seeds: Sequence[int] = (0,),
    samplers: Mapping[str, Sampler] | None = None,
    sandbox: Any | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """A short EoH search per model with the *same* :class:`~aad_kit.search.SearchConfig`
    (only the sampler differs; one run per seed), and their best-so-far curves.

    Runs go to ``<run_dir>/generalisation_search.sqlite`` with run ids
    ``generalisation-<model>-<task>-<setting>-seed<seed>`` (so they resume like any search);
    the curves are returned and written to ``generalisation_search_curves.csv``.
    """
    import tempfile

    from aad_kit.db import AlgorithmDB
    from aad_kit.llm import make_sampler
    from aad_kit.search import run_search

    out = Path(run_dir) if run_dir else None
    tmp = None
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="aad-kit-gen-search-")
        db_path = Path(tmp.name) / SEARCH_DB
    else:
        out.mkdir(parents=True, exist_ok=True)
        db_path = out / SEARCH_DB
    own_sandbox = sandbox is None
    if own_sandbox:
        from aad_kit.sandbox import Sandbox, SandboxConfig
        from aad_kit.scoring import run_cache_path

        sandbox = Sandbox(SandboxConfig(cache_path=run_cache_path(out)))
    runs: dict[tuple[str, int], str] = {}
    try:
        with AlgorithmDB(db_path) as db:
            for name, spec in models.items():
                sampler = samplers[name] if samplers is not None and name in samplers else make_sampler(spec)
                try:
                    for s in seeds:
                        cfg = dataclasses.replace(search_config, seed=int(s))
                        run_id = f"generalisation-{name}-{get_task(cfg.task).name}-{cfg.setting}-seed{s}"
                        result = run_search(cfg, sampler, db, sandbox, run_id=run_id, progress=progress)
                        runs[(name, int(s))] = run_id
                        if progress:
                            print(f"[{name}] {result.summary()}")
                finally:
                    del sampler
                    gc.collect()
            curves = search_curves(db, runs)
    finally:
        if own_sandbox:
            sandbox.close()
        if tmp is not None:
            tmp.cleanup()
    if out is not None:
        _write_atomic(curves, out / CURVES_CSV)
    return curves


def search_curves(db: Any, runs: Mapping[tuple[str, int], str]) -> pd.DataFrame:
    """Best valid score after each LLM sample, per (model, seed) search run.

    ``best_so_far`` is NaN until the run's first valid sample; ``best_seed_heuristic`` is the
    best shipped heuristic the run started from (NaN without seeds), for reference.
    """
    frames = []
    for (name, seed), run_id in runs.items():
        df = db.to_dataframe(run_id)
        seeds_ok = df[(df["operator"] == "seed") & (df["status"] == "ok")]
        ref = float(seeds_ok["score"].max()) if len(seeds_ok) else math.nan
        llm = df[df["sample_index"].notna() & (df["sample_index"] >= 0)].sort_values("sample_index")
        score = llm["score"].where(llm["status"] == "ok").astype(float)
        frames.append(pd.DataFrame({
            "model": name, "seed": int(seed), "run_id": run_id,
            "sample_index": llm["sample_index"].astype(int).to_numpy(),
            "status": llm["status"].astype(str).to_numpy(),
            "score": score.to_numpy(),
            "best_so_far": best_valid_so_far(llm).to_numpy(),
            "best_seed_heuristic": ref,
        }))
    cols = ["model", "seed", "run_id", "sample_index", "status", "score", "best_so_far",
            "best_seed_heuristic"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def reference_curves(db: Any, run_ids: Sequence[str], budget: int, name: str) -> pd.DataFrame:
    """Best-so-far curves of searches run elsewhere (the shipped teacher database's own runs,
    which stage 2 copied into the run's database), cut to the comparison's ``budget``; ``seed``
    is the run's position in ``run_ids``. A reference under its own ``name``: those runs had
    their own configuration (population, batch size, token limit), so it is not a same-budget
    search of the same kind."""
    curves = search_curves(db, {(name, i): run_id for i, run_id in enumerate(run_ids)})
    return curves[curves["sample_index"] < budget].reset_index(drop=True)


def search_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, seed) search: its LLM samples, valid samples, final best score and
    the first sample whose score beat the best heuristic the search started from (NaN: none
    did), the numbers the same-budget comparison reports next to its curves."""
    cols = ["model", "seed", "samples", "valid", "final_best", "best_seed_heuristic", "first_sample_above_seed"]
    rows = []
    for (model, seed), run in curves.groupby(["model", "seed"], sort=False):
        run = run.sort_values("sample_index")
        ref = float(run["best_seed_heuristic"].iloc[0])
        above = run.loc[run["score"] > ref, "sample_index"]  # NaN scores and a NaN ref: never above
        rows.append({"model": model, "seed": int(seed), "samples": len(run),
                     "valid": int((run["status"] == "ok").sum()),
                     "final_best": float(run["best_so_far"].iloc[-1]),
                     "best_seed_heuristic": ref,
                     "first_sample_above_seed": float(above.min()) if len(above) else math.nan})
    return pd.DataFrame(rows, columns=cols)


__all__ = ["reference_curves", "run_search_comparison", "search_curves", "search_summary"]
