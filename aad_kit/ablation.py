"""The pair-strategy ablation judged by the tuned model: one branch run per strategy.

Why: notebook 04 compares DAR, its variant and the baselines by statistics of the pairs, which
say what the data look like, not what a model learns from them. This ablation trains and
evaluates the student on each strategy's pairs with everything else held fixed: a branch starts
from a copy of one finished run's stages 1-3 (the same database, scores and evaluation cache)
and runs stages 4-6 with the pipeline parameter ``strategy`` changed and nothing else. The base
model's and the teacher's evaluation answers are copied into the branch as well (same specs,
same seeds, hence the same answers), so each branch samples only its own tuned model, and
"tuned minus base" differs between branches only by the tuned model.

Layout: ``<run>/ablation/<strategy>/`` (:meth:`RunLayout.ablation_branch`) is an ordinary run
directory, resumable with ``aad-kit run --run-dir``; the comparison is written to
``<run>/tables/ablation.csv`` and ``<run>/figures/ablation.png``.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from aad_kit.evaluation import storage
from aad_kit.run_archive import copy_sqlite
from aad_kit.run_layout import STAGE_ORDER, RunLayout

SHARED_STAGES = STAGE_ORDER[:3]  # copied from the source run
BRANCH_STAGES = STAGE_ORDER[3:]  # run again in every branch
REUSED_MODELS = ("base", "teacher")  # evaluation answers that do not depend on the pairs
TABLE = "ablation"


class AblationError(RuntimeError):
    """The source run cannot be branched (a shared stage has not finished)."""


def source_strategy(run_dir: str | Path) -> str | None:
    """The pair strategy the run's stage 4 used (None before stage 4 ran)."""
    return RunLayout.of(run_dir).outputs("04_dar_sampling").get("strategy")


def make_branch(run_dir: str | Path, strategy: str) -> Path:
    """Create (or find) the branch of ``run_dir`` that re-runs stages 4-6 with ``strategy``.

    Idempotent: an existing branch is returned as it is, so an interrupted ablation resumes.
    Raises :class:`AblationError` when a shared stage of the source has not finished.
    """
    src = RunLayout.of(run_dir)
    dest = RunLayout(src.ablation_branch(strategy))
    if dest.manifest_path.is_file():
        return dest.root
    missing = [s for s in SHARED_STAGES if not src.done_marker(s).exists()]
    if missing:
        raise AblationError(f"{src.root} has not finished {missing}: run those stages first "
                            f"(aad-kit run --run-dir {src.root})")
    manifest = src.read_manifest()
    tmp = dest.root.with_name(dest.root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    part = RunLayout(tmp)
    part.done_marker(SHARED_STAGES[0]).parent.mkdir(parents=True)
    (tmp / "notebooks").mkdir()
    for stage in SHARED_STAGES:
        shutil.copy2(src.done_marker(stage), part.done_marker(stage))
        notebook = src.root / "notebooks" / f"{stage}.ipynb"
        if notebook.is_file():
            shutil.copy2(notebook, tmp / "notebooks" / notebook.name)
    for db in (src.database, src.eval_cache):
        if db.is_file():
            copy_sqlite(db, tmp / db.name)
    if src.database_export.is_file():
        shutil.copy2(src.database_export, part.database_export)
    for name in (storage.SAMPLES_CSV, storage.ANSWERS_JSONL, storage.CONFIG_JSON):
        if (src.root / name).is_file():
            shutil.copy2(src.root / name, tmp / name)
    if (tmp / storage.CONFIG_JSON).is_file():
        models = storage.stored_models(tmp)
        for model in sorted(set(models) - set(REUSED_MODELS)):
            storage.forget_model(tmp, model)
    params = {**(manifest.get("params") or {}), "strategy": strategy}
    stages = {k: v for k, v in (manifest.get("stages") or {}).items() if k in SHARED_STAGES}
    part.update_manifest(**{**manifest, "params": params, "stages": stages,
                            "branch_of": {"run": str(src.root), "strategy": strategy,
                                          "shared_stages": list(SHARED_STAGES)}})
    dest.root.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(dest.root)  # a branch appears whole or not at all
    return dest.root


def run_ablation(run_dir: str | Path, strategies: Sequence[str], *, verbosity: int = 1,
                 progress: bool = True) -> pd.DataFrame:
    """Run stages 4-6 of a branch per strategy (the source's own strategy is its row, not
    re-run), then write and return :func:`ablation_table`. A branch whose stage fails is
    reported and the others go on; its row then says which stages finished."""
    from aad_kit.pipeline import STAGES, StageFailed, notebook_parameters, run_pipeline
    from aad_kit.preference import STRATEGY_NAMES

    unknown = sorted(set(strategies) - set(STRATEGY_NAMES))
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {list(STRATEGY_NAMES)}")
    src = RunLayout.of(run_dir)
    profile = src.read_manifest().get("profile")
    if not profile:
        raise AblationError(f"{src.root} has no manifest: not a run directory")
    own = source_strategy(src.root)
    # the source's parameters of stages 1-3 (model, budget, ...) are in what those stages recorded
    declared = set().union(*(notebook_parameters(s) for s in STAGES if s.name in BRANCH_STAGES))
    for strategy in dict.fromkeys(strategies):
        if strategy == own:
            print(f"[aad-kit ablate] {strategy}: the source run itself")
            continue
        branch = make_branch(src.root, strategy)
        params = {k: v for k, v in (RunLayout.of(branch).read_manifest().get("params") or {}).items()
                  if k in declared}
        print(f"[aad-kit ablate] {strategy}: {branch}", flush=True)
        try:
            run_pipeline(profile=profile, run_dir=branch, params=params, stages=BRANCH_STAGES,
                         progress=progress, verbosity=verbosity)
        except StageFailed as err:
            print(f"[aad-kit ablate] {strategy}: {err}", flush=True)
    table = ablation_table(src.root)
    write_ablation(src.root, table)
    return table


def _branches(src: RunLayout) -> list[tuple[str, RunLayout]]:
    rows = []
    own = source_strategy(src.root)
    if own:
        rows.append((own, src))
    root = src.ablation
    if root.is_dir():
        for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".partial")):
            lay = RunLayout(d)
            strategy = (lay.read_manifest().get("branch_of") or {}).get("strategy")
            if strategy and strategy != own:
                rows.append((strategy, lay))
    return rows


def _last_heldout_accuracy(layout: RunLayout) -> float:
    from aad_kit.training.log import read_log

    values = [r["eval_rewards/accuracies"] for r in read_log(layout.dpo)
              if isinstance(r.get("eval_rewards/accuracies"), (int, float))]
    return float(values[-1]) if values else math.nan


def _pair_stats(layout: RunLayout, strategy: str) -> dict[str, Any]:
    path = layout.pairs_summary(strategy)
    if not path.is_file():
        return {}
    stats = json.loads(path.read_text(encoding="utf-8")).get("stats") or {}
    return {k: stats.get(k) for k in ("mean_gap", "distinct_chosen", "chosen_similarity")}


COMPARISON_COLUMNS = ("task", "setting", "role", "valid_rate_base", "valid_rate_tuned", "d_valid_rate",
                      "d_valid_rate_lo", "d_valid_rate_hi", "mean_score_base", "mean_score_tuned",
                      "d_mean_score", "d_mean_score_lo", "d_mean_score_hi")
VS_SOURCE_COLUMNS = ("d_valid_rate_vs_source", "d_valid_rate_vs_source_lo", "d_valid_rate_vs_source_hi",
                     "d_mean_score_vs_source", "d_mean_score_vs_source_lo", "d_mean_score_vs_source_hi")


def _tuned_vs_source(a: pd.DataFrame, lay: RunLayout) -> dict[tuple[str, str], dict[str, float]]:
    """This branch's tuned model minus the source run's (``a``: the source's samples), per
    (task, setting), with 95 % bootstrap intervals: the direct comparison of two strategies
    (same base, same grid)."""
    from aad_kit.evaluation.metrics import compare_models

    b = storage.load_samples(lay.root)
    if a.empty or b.empty:
        return {}
    both = pd.concat([a[a["model"] == "tuned"].assign(model="source"),
                      b[b["model"] == "tuned"].assign(model="branch")], ignore_index=True)
    diff = compare_models(both, "source", "branch")
    out = {}
    for _, r in diff.iterrows():
        out[(r["task"], r["setting"])] = {
            f"{m}_vs_source{sfx}": float(r[f"{m}{sfx}"])
            for m in ("d_valid_rate", "d_mean_score") for sfx in ("", "_lo", "_hi")}
    return out


def ablation_table(run_dir: str | Path) -> pd.DataFrame:
    """One row per (strategy, evaluated setting): the pairs (count, mean score gap, distinct
    chosen answers), the DPO run (steps, last held-out preference accuracy), the tuned-minus-
    base differences of stage 6 with their 95 % intervals, and for a branch its tuned model
    minus the source run's (``*_vs_source``). Strategies whose branch has not finished stage 6
    have one row saying how many of stages 4-6 are done."""
    src = RunLayout.of(run_dir)
    rows: list[dict[str, Any]] = []
    source_samples = storage.load_samples(src.root)  # read once, compared with every branch
    for strategy, lay in _branches(src):
        o4, o5 = lay.outputs("04_dar_sampling"), lay.outputs("05_dpo_training")
        done = [s for s in BRANCH_STAGES if lay.done_marker(s).exists()]
        head = {"strategy": strategy, "source": lay.root == src.root,
                "run_dir": lay.root.relative_to(src.root).as_posix() if lay.root != src.root else ".",
                "stages_done": len(done), "n_pairs": o4.get("n_pairs"), **_pair_stats(lay, strategy),
                "dpo_steps": o5.get("steps"), "heldout_pref_accuracy": _last_heldout_accuracy(lay)}
        path = lay.root / storage.COMPARISON_CSV
        if len(done) < len(BRANCH_STAGES) or not path.is_file():
            rows.append(head)
            continue
        vs = {} if lay.root == src.root else _tuned_vs_source(source_samples, lay)
        for _, r in pd.read_csv(path).iterrows():
            rows.append({**head, **{c: r.get(c) for c in COMPARISON_COLUMNS},
                         **vs.get((r["task"], r["setting"]), {})})
    columns = ["strategy", "source", "run_dir", "stages_done", "n_pairs", "mean_gap", "distinct_chosen",
               "chosen_similarity", "dpo_steps", "heldout_pref_accuracy", *COMPARISON_COLUMNS, *VS_SOURCE_COLUMNS]
    return pd.DataFrame(rows, columns=columns)


def write_ablation(run_dir: str | Path, table: pd.DataFrame) -> dict[str, Path]:
    """Save the table (``tables/ablation.csv``) and, when some strategy was evaluated, its
    figure (``figures/ablation.png``), and refresh the run's report; returns the paths written."""
    import matplotlib.pyplot as plt

    from aad_kit import plots
    from aad_kit.evaluation import plots as gen_plots
    from aad_kit.run_report import write_report

    layout = RunLayout.of(run_dir)
    layout.tables.mkdir(parents=True, exist_ok=True)
    table.to_csv(layout.table(TABLE), index=False)
    out = {"table": layout.table(TABLE)}
    if table["d_valid_rate"].notna().any():
        fig = gen_plots.ablation_forest(table)
        plots.save_figure(fig, str(layout.root), TABLE)
        plt.close(fig)
        out["figure"] = layout.figure(TABLE)
    write_report(layout.root)  # the run's one page includes the ablation
    return out


def ablation_cli(argv: Sequence[str]) -> int:
    """``aad-kit ablate RUN_DIR [--strategies ...]``."""
    import argparse

    from aad_kit.preference import STRATEGY_NAMES

    ap = argparse.ArgumentParser(
        prog="aad-kit ablate",
        description="train and evaluate the student on each pair strategy's pairs: branches of a "
                    "finished run that share its stages 1-3 (resumable; quick: about an hour per "
                    "strategy on 2 CPU cores)")
    ap.add_argument("run_dir", help="a run whose stages 1-3 have finished (usually a whole run)")
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGY_NAMES), choices=STRATEGY_NAMES,
                    help="default: all of them (the source run's own strategy is not re-run)")
    ap.add_argument("--table", action="store_true", help="only print the table of what has run")
    ap.add_argument("-q", "--quiet", action="store_true", help="stage starts and ends only")
    args = ap.parse_args(list(argv))
    try:
        if args.table:
            table = ablation_table(args.run_dir)
            write_ablation(args.run_dir, table)
        else:
            table = run_ablation(args.run_dir, args.strategies, verbosity=0 if args.quiet else 1)
    except (AblationError, ValueError) as err:
        print(f"aad-kit ablate: {err}")
        return 2
    train = table[(table["role"] == "train") | table["role"].isna()]
    cols = ["strategy", "stages_done", "n_pairs", "heldout_pref_accuracy", "valid_rate_tuned", "d_valid_rate",
            "d_valid_rate_lo", "d_valid_rate_hi", "mean_score_tuned", "d_mean_score", "d_mean_score_lo",
            "d_mean_score_hi", "d_mean_score_vs_source"]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(train[cols].round(3).to_string(index=False))
    print(f"[aad-kit ablate] table: {RunLayout.of(args.run_dir).table(TABLE)}")
    return 0


__all__ = ["AblationError", "BRANCH_STAGES", "SHARED_STAGES", "ablation_table", "make_branch",
           "run_ablation", "write_ablation"]
