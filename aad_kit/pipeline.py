"""The papermill pipeline: executes the stage notebooks in order into a run directory.

A run directory holds the executed notebooks, every artifact the stages write, and
``manifest.json``. Each finished stage leaves ``stages/<stage>.done``; re-running the same
run directory skips finished stages, so an interrupted batch resumes where it stopped.
A failing stage stops the run with the notebook and the cell named.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aad_kit.manifest import base_manifest, now_iso
from aad_kit.parameters import check_parameters
from aad_kit.profiles import describe, get_profile
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


class StageFailed(RuntimeError):
    """A stage notebook raised; the message names the notebook, the cell and the error."""


def ensure_kernel() -> str:
    """Make sure a Jupyter kernel named ``aad-kit`` runs *this* interpreter; return its name."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
        if spec.argv and Path(spec.argv[0]).resolve() == Path(sys.executable).resolve():
            return KERNEL_NAME
    except NoSuchKernel:
        pass
    from ipykernel.kernelspec import install

    install(kernel_name=KERNEL_NAME, display_name="aad-kit", prefix=sys.prefix)
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


def run_pipeline(
    profile: str = "quick",
    run_dir: Path | str | None = None,
    params: Mapping[str, Any] | None = None,
    stages: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Execute the stage notebooks in order; returns the run directory.

    ``params`` are passed to every stage that declares them; a name no stage declares is an
    error (typos should not silently do nothing).
    """
    import papermill as pm

    get_profile(profile)  # validate early
    params = dict(params or {})
    selected = [s for s in STAGES if stages is None or s.name in stages]
    if stages is not None:
        unknown = set(stages) - {s.name for s in STAGES}
        if unknown:
            raise KeyError(f"unknown stage(s) {sorted(unknown)}; stages: {[s.name for s in STAGES]}")

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
    (run_path / "stages").mkdir(parents=True, exist_ok=True)
    (run_path / "notebooks").mkdir(exist_ok=True)
    layout = RunLayout.of(run_path)
    manifest = layout.read_manifest()
    if not manifest:
        manifest = layout.update_manifest(**base_manifest(profile=profile, params=params, stages={},
                                                          profile_settings=describe(profile)))
    if manifest.get("profile") != profile:
        raise ValueError(
            f"{run_path} was started with profile {manifest.get('profile')!r}, not {profile!r}"
        )
    kernel = ensure_kernel()

    for stage in selected:
        done = run_path / "stages" / f"{stage.name}.done"
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
        try:
            pm.execute_notebook(
                str(stage.notebook),
                str(out_nb),
                parameters=stage_params,
                kernel_name=kernel,
                cwd=str(run_path),
                progress_bar=progress,
            )
        except pm.PapermillExecutionError as err:
            raise StageFailed(
                f"stage {stage.name} ({stage.notebook.name}) failed in cell {err.cell_index} "
                f"({err.ename}: {err.evalue}); executed notebook: {out_nb}"
            ) from None
        elapsed = time.perf_counter() - t0
        stages_now = layout.read_manifest().get("stages") or {}
        entry = dict(stages_now.get(stage.name) or {})  # keeps the outputs the stage recorded
        entry.update(finished_at=now_iso(), wall_s=round(elapsed, 2), params=stage_params)
        layout.update_manifest(stages={**stages_now, stage.name: entry})
        done.write_text(now_iso())
        print(f"[aad-kit] {stage.name}: done in {elapsed:.1f} s", flush=True)
    return run_path
