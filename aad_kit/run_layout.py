"""One run directory, every artifact named once, and what each stage handed on.

Why: stages run in separate kernels (papermill) and must not guess where the previous stage
put its output, or whether it produced any. Each stage *records* its outputs in the run's
``manifest.json`` (``stages.<name>.outputs``); the next stage *reads* that record through
:meth:`RunLayout.output`, which says which stage to run, or why that stage produced nothing,
instead of failing on a missing path.

Artifacts (relative to the run directory)::

    manifest.json                 profile, parameters, machine, per-stage timings and outputs
    algorithms.sqlite             the algorithm database (teacher runs imported + own search)
    algorithms.jsonl              its export
    eval_cache.sqlite             sandbox result cache of the run
    figures/<name>.png            every saved figure
    tables/<name>.csv             every saved table
    preference/pairs_<strategy>/  training pairs (datasets.save_to_disk) + .jsonl + .summary.json
    preference/heldout_pairs/     pairs from held-out settings (DPO's held-out accuracy)
    dpo/                          adapter/, checkpoints/, training_log.*, manifest.json
    tensorboard/search/<run id>/  TensorBoard events of each search (aad_kit.tracking)
    tensorboard/dpo/              TensorBoard events of the DPO training
    generalisation_*              the evaluation study's tables (aad_kit.evaluation)
    ablation/<strategy>/          a branch run: stages 1-3 copied, 4-6 with that pair strategy
                                  (aad_kit.ablation; the comparison: tables/ablation.csv)

``aad-kit pack`` (:mod:`aad_kit.run_archive`) moves a run between machines without dpo/checkpoints/
(and without dpo/adapter/ unless asked).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGE_ORDER = ("01_task_definition", "02_candidate_generation", "03_evaluator_scoring",
               "04_dar_sampling", "05_dpo_training", "06_generalisation")


class MissingStageOutput(RuntimeError):
    """A stage needs what an earlier stage did not record (not run, or produced nothing)."""


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory and its manifest's stage records."""

    root: Path

    @classmethod
    def of(cls, run_dir: str | os.PathLike[str] | None) -> RunLayout:
        return cls(Path(run_dir or ".").expanduser().resolve())

    # ------------------------------------------------------------------ named artifacts
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    def done_marker(self, stage: str) -> Path:
        """The file whose presence says ``stage`` finished (the pipeline skips it on resume)."""
        if stage not in STAGE_ORDER:
            raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_ORDER)}")
        return self.root / "stages" / f"{stage}.done"

    @property
    def database(self) -> Path:
        return self.root / "algorithms.sqlite"

    @property
    def database_export(self) -> Path:
        return self.root / "algorithms.jsonl"

    @property
    def eval_cache(self) -> Path:
        return self.root / "eval_cache.sqlite"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def preference(self) -> Path:
        return self.root / "preference"

    def pairs(self, strategy: str) -> Path:
        return self.preference / f"pairs_{strategy}"

    def pairs_summary(self, strategy: str) -> Path:
        return self.preference / f"pairs_{strategy}.summary.json"

    @property
    def heldout_pairs(self) -> Path:
        return self.preference / "heldout_pairs"

    @property
    def ablation(self) -> Path:
        return self.root / "ablation"

    def ablation_branch(self, strategy: str) -> Path:
        """The run that repeats stages 4-6 of this one with another pair strategy."""
        return self.ablation / strategy

    @property
    def dpo(self) -> Path:
        return self.root / "dpo"

    @property
    def adapter(self) -> Path:
        return self.dpo / "adapter"

    def figure(self, name: str) -> Path:
        return self.figures / f"{name}.png"

    def table(self, name: str) -> Path:
        return self.tables / f"{name}.csv"

    # ------------------------------------------------------------------ the manifest
    def read_manifest(self) -> dict[str, Any]:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        with open(self.root / ".manifest.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def update_manifest(self, **changes: Any) -> dict[str, Any]:
        """Merge ``changes`` into the manifest (top level) under a lock; returns it."""
        with self._locked():
            m = self.read_manifest()
            m.update(changes)
            self._write(m)
            return m

    def _write(self, m: dict[str, Any]) -> None:
        tmp = self.manifest_path.with_name("manifest.json.tmp")
        tmp.write_text(json.dumps(m, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.manifest_path)

    def record(self, stage: str, **outputs: Any) -> None:
        """Record what ``stage`` produced (paths are stored relative to the run directory).

        A value of ``None`` records that the stage ran and produced nothing for that key; add
        ``why_<key>="..."`` to say why, so the stage that needs it can tell the user."""
        if stage not in STAGE_ORDER:
            raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_ORDER)}")
        with self._locked():
            m = self.read_manifest()
            entry = m.setdefault("stages", {}).setdefault(stage, {})
            entry.setdefault("outputs", {}).update({k: self._rel(v) for k, v in outputs.items()})
            self._write(m)

    def outputs(self, stage: str) -> dict[str, Any]:
        return dict(((self.read_manifest().get("stages") or {}).get(stage) or {}).get("outputs") or {})

    def output(self, stage: str, key: str, *, path: bool = True) -> Any:
        """What ``stage`` recorded under ``key``: a path (resolved), or the value itself.

        Raises :class:`MissingStageOutput` naming the stage when it was not run, or when it
        ran and produced nothing for ``key`` (with the reason it recorded)."""
        outs = self.outputs(stage)
        if key not in outs:
            raise MissingStageOutput(
                f"{self.root} has no '{key}' from stage {stage}: run that stage first "
                f"(aad-kit run --run-dir {self.root} --stage {stage})"
            )
        value = outs[key]
        if value is None:
            why = outs.get(f"why_{key}") or "no reason recorded"
            raise MissingStageOutput(f"stage {stage} ran but produced no '{key}': {why}")
        return self.root / value if path and isinstance(value, str) else value

    def _rel(self, value: Any) -> Any:
        if isinstance(value, Path):
            try:
                return value.resolve().relative_to(self.root).as_posix()
            except ValueError:
                return str(value.resolve())
        return value


__all__ = ["MissingStageOutput", "RunLayout", "STAGE_ORDER"]
