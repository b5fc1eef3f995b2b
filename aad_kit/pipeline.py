"""The papermill pipeline: executes the stage notebooks in order into a run directory.

A run directory holds the executed notebooks, every artifact the stages write, and
``manifest.json``. Each finished stage leaves ``stages/<stage>.done``; re-running the same
run directory skips finished stages, so an interrupted batch resumes where it stopped.
A failing stage stops the run with the notebook and the cell named.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aad_kit.manifest import base_manifest, now_iso
from aad_kit.parameters import check_parameters
from aad_kit.profiles import describe, get_profile
from aad_kit.progress import ENV as PROGRESS_ENV
from aad_kit.progress import Follower
from aad_kit.run_layout import STAGE_ORDER, RunLayout

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
KERNEL_NAME = "aad-kit"


@dataclass(frozen=True)
class Stage:
    name: str  # also the notebook's file stem
    title: str

    @property
    def notebook(self) -> Path:
        return NOTEBOOK_DIR / f"{self.name}.ipynb"


# Stages in pipeline order; each reads the previous stages' artifacts from the run directory.
STAGES: tuple[Stage, ...] = (
    Stage("01_task_definition", "Tasks, settings and baseline heuristics"),
    Stage("02_candidate_generation", "EoH search with an LLM into the algorithm database"),
    Stage("03_evaluator_scoring", "Sandboxed scoring and failure taxonomy"),
    Stage("04_dar_sampling", "DAR preference pairs from the algorithm database"),
    Stage("05_dpo_training", "DPO with a LoRA adapter on the preference pairs"),
    Stage("06_generalisation", "Base vs fine-tuned model on training and held-out settings"),
)
assert tuple(s.name for s in STAGES) == STAGE_ORDER


def stage_summary(stage: str, layout: RunLayout) -> str:
    """One line of what a stage produced, from what it recorded in the manifest."""
    o = layout.outputs(stage)
    if stage in ("01_task_definition", "03_evaluator_scoring"):
        table = layout.table("baselines" if stage == "01_task_definition" else "scoring")
        if not table.is_file():
            return ""
        import pandas as pd

        df = pd.read_csv(table)
        counts = ", ".join(f"{k} {v}" for k, v in df["status"].value_counts().items())
        what = "shipped heuristics x settings" if stage == "01_task_definition" else "programs scored"
        return f"{len(df)} {what} over {df['task'].nunique()} tasks: {counts}"
    if stage == "02_candidate_generation":
        runs = len(o.get("teacher_runs") or [])
        own = o.get("search_runs") or []
        return (f"teacher database {o.get('teacher_db') or 'none'} ({runs} run(s)), "
                f"student's own search: {'yes' if own else 'none'}; {_database_line(layout)}")
    if stage == "04_dar_sampling":
        if o.get("pairs") is None:
            return f"no pairs: {o.get('why_pairs')}"
        return f"{o.get('n_pairs')} {o.get('strategy')} pairs, held-out pairs: {'yes' if o.get('heldout_pairs') else 'no'}"
    if stage == "05_dpo_training":
        return f"{o.get('steps')} DPO steps on {o.get('pairs')} pairs; adapter {o.get('adapter')}"
    if stage == "06_generalisation":
        primary = o.get("primary") or {}
        text = str(primary.get("text", "")).replace("**", "")
        return text[:300]
    return ""


def _database_line(layout: RunLayout) -> str:
    """Per setting of the algorithm database: samples, valid ones, best score against the seeds'."""
    from aad_kit.db import AlgorithmDB

    if not layout.database.is_file():
        return "no database"
    with AlgorithmDB(layout.database) as db:
        df = db.to_dataframe()
    parts, several_tasks = [], df["task"].nunique() > 1
    for (task, setting), group in df.groupby(["task", "setting"], dropna=False, sort=True):
        seeds, samples = group[group["operator"] == "seed"], group[group["operator"] != "seed"]
        valid = samples[samples["status"] == "ok"]
        part = f"{f'{task}/' if several_tasks else ''}{setting}: {len(samples)} samples, {len(valid)} valid"
        if not valid.empty:
            part += f", best {valid['score'].max():.6g}"
        if seeds["score"].notna().any():
            part += f" (seeds' best {seeds['score'].max():.6g})"
        parts.append(part)
    return "; ".join(parts) or "empty database"


class StageFailed(RuntimeError):
    """A stage notebook raised; the message names the notebook, the cell and the error."""


# The kernel's own log level: its one routine warning ("running over TCP without encryption"
# on a loopback socket) was printed at every stage and said nothing to a batch user.
KERNEL_LOG_FLAG = "--IPKernelApp.log_level=ERROR"


def _freeze_quietly(notebook: Path) -> None:
    """aad_kit.static_widgets on an executed stage notebook; never fails the stage over it."""
    from aad_kit.static_widgets import freeze_notebook_file

    try:
        freeze_notebook_file(notebook)
    except Exception as err:  # noqa: BLE001 - a snapshot is a convenience
        print(f"[aad-kit] note: could not snapshot the widgets of {notebook.name}: {err}", file=sys.stderr)


def ensure_kernel() -> str:
    """Make sure a Jupyter kernel named ``aad-kit`` runs *this* interpreter (quietly); return
    its name. Locked and atomic: parallel test workers start pipelines at the same time."""
    import fcntl

    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    def current() -> bool:
        try:
            spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        except (NoSuchKernel, ValueError):
            return False
        return bool(spec.argv) and Path(spec.argv[0]).resolve() == Path(sys.executable).resolve() \
            and KERNEL_LOG_FLAG in spec.argv

    if current():
        return KERNEL_NAME
    lock_path = Path(sys.prefix) / ".aad-kit-kernel.lock"
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            if not current():
                from ipykernel.kernelspec import install

                path = install(kernel_name=KERNEL_NAME, display_name="aad-kit (.venv)", prefix=sys.prefix)
                spec_file = Path(path) / "kernel.json"
                data = json.loads(spec_file.read_text())
                if KERNEL_LOG_FLAG not in data["argv"]:
                    data["argv"].append(KERNEL_LOG_FLAG)
                tmp = spec_file.with_name("kernel.json.tmp")
                tmp.write_text(json.dumps(data, indent=1))
                os.replace(tmp, spec_file)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return KERNEL_NAME


def notebook_parameters(stage: Stage) -> dict[str, Any]:
    """The parameters a stage notebook declares in its ``parameters`` cell."""
    import papermill as pm

    return dict(pm.inspect_notebook(str(stage.notebook)))


def new_run_dir(profile: str, root: Path | None = None) -> Path:
    root = root or REPO_ROOT / "runs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{stamp}-{profile}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = root / f"{stamp}-{profile}-{suffix}"
    return path


def _mark_not_done_from(layout: RunLayout, first: int, selected: set[str]) -> None:
    """Remove the done markers of stage ``first`` and every later one (a redo invalidates them)."""
    for name in STAGE_ORDER[first:]:
        marker = layout.done_marker(name)
        if not marker.exists():
            continue
        marker.unlink()
        if name in selected:
            print(f"[aad-kit] {name}: redo", flush=True)
        else:
            print(f"[aad-kit] {name}: marked not done (it used the redone stage's outputs; the next "
                  "`aad-kit run` on this directory executes it again)", flush=True)


def run_pipeline(
    profile: str = "quick",
    run_dir: Path | str | None = None,
    params: Mapping[str, Any] | None = None,
    stages: Sequence[str] | None = None,
    progress: bool = True,
    verbosity: int = 1,
    redo: bool = False,
) -> Path:
    """Execute the stage notebooks in order; returns the run directory.

    ``params`` are passed to every stage that declares them; a name no stage declares is an
    error (typos should not silently do nothing). ``verbosity``: 0 prints stage starts and
    ends only, 1 (default) also each long loop's progress line (search, DPO, evaluation) and
    a one-line summary per stage, 2 also streams every cell's output.

    ``redo`` re-executes the selected ``stages`` of a finished run (e.g. stage 6 with the
    same-budget search added) instead of skipping them, and marks every later stage not done,
    since its outputs were computed from the old ones. The notebooks still reuse what their
    files hold (stage 6's answers, stage 5's checkpoints), so a redo adds work rather than
    starting over; the manifest keeps each earlier execution's time and parameters.
    """
    import papermill as pm

    get_profile(profile)  # validate early
    params = dict(params or {})
    selected = [s for s in STAGES if stages is None or s.name in stages]
    if stages is not None:
        unknown = set(stages) - {s.name for s in STAGES}
        if unknown:
            raise KeyError(f"unknown stage(s) {sorted(unknown)}; stages: {[s.name for s in STAGES]}")
    if redo and not stages:
        raise ValueError("redo re-executes the stages named with --stage; name at least one")
    picked = [STAGE_ORDER.index(s.name) for s in selected]
    if redo:
        if picked != list(range(picked[0], picked[-1] + 1)):
            raise ValueError(f"redo of {[s.name for s in selected]} would run a stage on the outputs of an "
                             "earlier one it invalidates without re-running it; name consecutive stages")

    declared = {s.name: notebook_parameters(s) for s in selected}
    all_declared = set().union(*declared.values()) if declared else set()
    unknown_params = set(params) - all_declared
    if unknown_params:
        raise KeyError(
            f"parameter(s) {sorted(unknown_params)} are declared by no selected stage; "
            f"known: {sorted(all_declared - {'run_dir', 'profile'})}"
        )
    params = check_parameters(params, declared)  # wrong types / ranges fail here, not mid-run

    run_path = Path(run_dir) if run_dir else new_run_dir(profile)
    layout = RunLayout.of(run_path)
    layout.done_marker(STAGES[0].name).parent.mkdir(parents=True, exist_ok=True)
    (run_path / "notebooks").mkdir(exist_ok=True)
    manifest = layout.read_manifest()
    if not manifest:
        manifest = layout.update_manifest(**base_manifest(profile=profile, params=params, stages={},
                                                          profile_settings=describe(profile)))
    if manifest.get("profile") != profile:
        raise ValueError(
            f"{run_path} was started with profile {manifest.get('profile')!r}, not {profile!r}"
        )
    kernel = ensure_kernel()
    if redo:
        _mark_not_done_from(layout, picked[0], {s.name for s in selected})

    for stage in selected:
        done = layout.done_marker(stage.name)
        if done.exists():
            print(f"[aad-kit] {stage.name}: already done, skipping")
            continue
        stage_params = {
            k: v for k, v in {**params, "profile": profile, "run_dir": str(run_path.resolve())}.items()
            if k in declared[stage.name]
        }
        out_nb = run_path / "notebooks" / stage.notebook.name
        print(f"[aad-kit] {stage.name}: {stage.title} ...", flush=True)
        t0 = time.perf_counter()
        progress_file = (run_path / "progress.jsonl").resolve()  # the kernel runs in run_path
        previous = os.environ.get(PROGRESS_ENV)
        os.environ[PROGRESS_ENV] = str(progress_file)  # the kernel inherits it
        follower = Follower(progress_file) if verbosity >= 1 else contextlib.nullcontext()
        try:
            with follower:
                pm.execute_notebook(
                    str(stage.notebook),
                    str(out_nb),
                    parameters=stage_params,
                    kernel_name=kernel,
                    cwd=str(run_path),
                    progress_bar=progress and verbosity >= 1 and not sys.stderr.isatty(),
                    log_output=verbosity >= 2,
                    stdout_file=sys.stdout if verbosity >= 2 else None,
                    stderr_file=sys.stderr if verbosity >= 2 else None,
                )
        except pm.PapermillExecutionError as err:
            _freeze_quietly(out_nb)
            raise StageFailed(
                f"stage {stage.name} ({stage.notebook.name}) failed in cell {err.cell_index} "
                f"({err.ename}: {err.evalue}); executed notebook: {out_nb}"
            ) from None
        finally:
            if previous is None:
                os.environ.pop(PROGRESS_ENV, None)
            else:
                os.environ[PROGRESS_ENV] = previous
        _freeze_quietly(out_nb)  # widget outputs -> HTML snapshots a reader without a kernel sees
        elapsed = time.perf_counter() - t0
        stages_now = layout.read_manifest().get("stages") or {}
        entry = dict(stages_now.get(stage.name) or {})  # keeps the outputs the stage recorded
        if redo and "finished_at" in entry:  # audit trail: what the redone execution was
            earlier = {k: entry[k] for k in ("finished_at", "wall_s", "params") if k in entry}
            entry["earlier_executions"] = [*entry.get("earlier_executions", []), earlier]
        entry.update(finished_at=now_iso(), wall_s=round(elapsed, 2), params=stage_params)
        layout.update_manifest(stages={**stages_now, stage.name: entry})
        done.write_text(now_iso())
        from aad_kit.run_report import write_report

        write_report(run_path)  # the one page of the run, refreshed after every stage
        summary = stage_summary(stage.name, layout) if verbosity >= 1 else ""
        print(f"[aad-kit] {stage.name}: done in {elapsed:.1f} s" + (f" — {summary}" if summary else ""),
              flush=True)
    return run_path
