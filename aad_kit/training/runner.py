"""Stage 5's entry point, :func:`train_dpo`: a LoRA adapter trained with DPO, resumably, with
its log and manifest; and reading a finished training back (:func:`load_result`).

:func:`train_dpo` takes a preference dataset in TRL's format (``prompt`` /
``chosen`` / ``rejected``; conversational — ``prompt`` = ``[system, user]`` messages,
``chosen``/``rejected`` = ``[assistant]`` — or plain strings; extra metadata columns such as
``chosen_id``, ``scores``, ``strategy`` are ignored for training but hashed into the manifest),
a base model (a name registered in :mod:`aad_kit.models`, a local checkpoint directory, or a
hub id where a hub is reachable) and a :class:`DPOTrainingConfig`, and writes into ``out_dir``::

    out_dir/
      adapter/              the trained LoRA adapter (+ tokenizer); stock peft loads it:
                            PeftModel.from_pretrained(base_model, "out_dir/adapter")
      checkpoints/          Trainer checkpoints (adapter + optimizer + scheduler + RNG state)
      training_log.jsonl    one row per logged optimizer step (see LOG_COLUMNS)
      training_log.csv      the same rows as CSV (rewritten after every logged step)
      manifest.json         dataset sha256, base model path + sha256, config, versions,
                            device, dtype, threads, wall time, status, final metrics

The pieces: :mod:`~aad_kit.training.config` (the config), :mod:`~aad_kit.training.data` (the
dataset), :mod:`~aad_kit.training.base_model`, :mod:`~aad_kit.training.environment` (device,
dtype, threads), :mod:`~aad_kit.training.trainer` (TRL's trainer and why it is set up so) and
:mod:`~aad_kit.training.log`.

Resume
------
With ``resume=True`` (the default) a call on an ``out_dir`` that already holds a training

* returns at once if that training is complete with the same dataset, base model and config
  (``TrainingResult.already_complete``);
* otherwise continues from the newest checkpoint in ``out_dir/checkpoints`` (Trainer's
  ``resume_from_checkpoint``: adapter, optimizer, scheduler, RNG and data order restored), as
  long as only :data:`RESUMABLE_FIELDS` (run length, checkpoint/log cadence, speed knobs)
  differ. So an interrupted run picks up where its last checkpoint was, and a finished run can
  be *extended* by raising ``max_steps`` / ``num_train_epochs``. Note that the learning-rate
  schedule of an extended run is the new one from the resume point on. Log rows after the
  checkpoint step (from an interrupted run) are dropped before the resumed steps are appended.
* refuses (``ValueError``) when dataset, base model or another config field differ — use a
  new ``out_dir`` or ``resume=False``, which deletes this module's outputs in ``out_dir``
  (adapter, checkpoints, logs, manifest; nothing else) and trains from scratch.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aad_kit.llm.device import default_num_threads
from aad_kit.llm.spec import format_spec
from aad_kit.training.base_model import resolve_base_model
from aad_kit.training.config import RESUMABLE_FIELDS, DPOTrainingConfig
from aad_kit.training.data import (
    dataset_fingerprint,
    load_preference_dataset,
    validate_preference_dataset,
)
from aad_kit.training.environment import (
    _known_warnings,
    _quiet,
    _torch_threads,
    is_main_process,
    resolve_device,
    world_size,
)
from aad_kit.training.log import (
    LOG_CSV,
    LOG_JSONL,
    _json_default,
    _make_log_callback,
    _write_log,
    load_training_log,
    read_log,
)
from aad_kit.training.trainer import build_dpo_trainer

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
MANIFEST = "manifest.json"
RUN_SUBDIR = "dpo"  # where the pipeline's DPO stage trains inside a run directory


def run_training_dir(run_dir: str | os.PathLike[str]) -> Path:
    """The DPO stage's output directory inside a pipeline run directory."""
    return Path(run_dir) / RUN_SUBDIR


def run_adapter_dir(run_dir: str | os.PathLike[str]) -> Path:
    """Where the pipeline's trained LoRA adapter lives (read by the generalisation stage)."""
    return run_training_dir(run_dir) / ADAPTER_DIR


# ---------------------------------------------------------------------------- result


@dataclass(frozen=True)
class TrainingResult:
    """What :func:`train_dpo` produced (all paths inside ``out_dir``)."""

    out_dir: Path
    adapter_dir: Path
    base_model: str  # what the adapter applies to: a local directory or a hub id
    log_jsonl: Path
    log_csv: Path
    manifest_path: Path
    global_step: int
    resumed_from_step: int | None  # checkpoint step this call resumed from (None: fresh)
    already_complete: bool  # True: nothing trained, the same training was complete already
    wall_time_s: float  # this call
    metrics: dict[str, Any]  # the last logged step's metrics

    @property
    def sampler_spec(self) -> str:
        """A :func:`aad_kit.llm.make_sampler` spec for base model + this adapter."""
        return format_spec("hf", self.base_model, str(self.adapter_dir))

    def log(self) -> Any:
        """The training log as a pandas DataFrame."""
        return load_training_log(self.out_dir)

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        return json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_result(out_dir: str | os.PathLike[str]) -> TrainingResult:
    """The :class:`TrainingResult` of a complete training in ``out_dir``."""
    out = Path(out_dir)
    m = read_manifest(out)
    if not m or m.get("status") != "complete":
        raise FileNotFoundError(f"{out} holds no complete DPO training (manifest status: "
                                f"{(m or {}).get('status')})")
    return _result_from_manifest(out, m, already_complete=True, wall=0.0, resumed=None)


def _result_from_manifest(out: Path, m: dict[str, Any], *, already_complete: bool,
                          wall: float, resumed: int | None) -> TrainingResult:
    return TrainingResult(
        out_dir=out,
        adapter_dir=out / ADAPTER_DIR,
        base_model=m["base_model"]["source"],
        log_jsonl=out / LOG_JSONL,
        log_csv=out / LOG_CSV,
        manifest_path=out / MANIFEST,
        global_step=int(m.get("global_step", 0)),
        resumed_from_step=resumed,
        already_complete=already_complete,
        wall_time_s=wall,
        metrics=dict(m.get("final_metrics") or {}),
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    d = out / CHECKPOINT_DIR
    found = []
    if d.is_dir():
        for p in d.iterdir():
            if p.is_dir() and p.name.startswith("checkpoint-") and p.name[11:].isdigit():
                if (p / "trainer_state.json").is_file():  # complete checkpoints only
                    found.append((int(p.name[11:]), p))
    return sorted(found)


def _clear_outputs(out: Path) -> None:
    for name in (ADAPTER_DIR, CHECKPOINT_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (LOG_JSONL, LOG_CSV, MANIFEST):
        (out / name).unlink(missing_ok=True)


def _core(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The part of an identity that must match for a resume."""
    cfg = {k: v for k, v in identity["config"].items() if k not in RESUMABLE_FIELDS}
    return {**identity, "config": cfg}


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} -> {vb!r}")
    return out


# ---------------------------------------------------------------------------- train


def train_dpo(
    dataset: Any,
    base_model: str | os.PathLike[str],
    config: DPOTrainingConfig | None = None,
    out_dir: str | os.PathLike[str] = "dpo",
    resume: bool = True,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    eval_dataset: Any = None,
    tensorboard_dir: str | os.PathLike[str] | None = None,
) -> TrainingResult:
    """Train a LoRA adapter on ``base_model`` with DPO on ``dataset``; see the module docstring.

    ``eval_dataset``: preference pairs the model does not train on (the pipeline's: pairs from
    held-out settings), evaluated every ``config.eval_steps`` steps.

    ``dataset``: a ``datasets.Dataset`` (or a path / rows, see :func:`load_preference_dataset`)
    in TRL's preference format. ``base_model``: a registered name ("tiny", "smollm2-135m"),
    a local checkpoint directory or a hub id. ``resume``: continue an interrupted (or extend
    a finished) training in ``out_dir``; ``False`` starts over. ``progress``: show tqdm bars.
    ``callbacks``: extra ``transformers.TrainerCallback`` objects (e.g. a benchmark's timer).
    ``tensorboard_dir``: where TensorBoard event files go when ``config.report_to`` asks for
    them (default ``out_dir/tensorboard``).
    """
    t_call = time.perf_counter()
    config = config or DPOTrainingConfig()
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)

    ds = load_preference_dataset(dataset)
    processes, main = world_size(), is_main_process()
    if processes > 1 and not ds.cache_files:
        raise ValueError(
            f"a training on {processes} processes needs its preference pairs on disk (a "
            "save_to_disk directory or a .jsonl/.parquet file, e.g. the run's stage-4 pairs), not an "
            "in-memory Dataset: each process prepares the data and they share its cache files"
        )
    fmt = validate_preference_dataset(ds)
    data_info = dataset_fingerprint(ds)
    base = resolve_base_model(base_model, progress=progress)
    eval_info = dataset_fingerprint(load_preference_dataset(eval_dataset)) if eval_dataset is not None else None
    identity = {
        "dataset_training_sha256": data_info["training_sha256"],
        "eval_dataset_sha256": eval_info["training_sha256"] if eval_info else None,
        "base_model": {"source": base.source, "weights_sha256": base.weights_sha256},
        "config": config.to_dict(),
    }

    prior = read_manifest(out)
    if not resume:
        if main:
            _clear_outputs(out)
        prior = None
    resumed_from: int | None = None
    ckpt: Path | None = None
    if prior is not None or _checkpoints(out):
        if prior is None:
            raise ValueError(f"{out} has checkpoints but no {MANIFEST}: cannot tell what they "
                             "belong to; use another out_dir or resume=False")
        diffs = _diff(_core(prior.get("identity", {})), _core(identity))
        if diffs:
            raise ValueError(
                f"{out} holds a different DPO training ({'; '.join(diffs)}); use another "
                "out_dir, or resume=False to delete it and start over"
            )
        if (prior.get("status") == "complete" and prior.get("identity") == identity
                and (out / ADAPTER_DIR).is_dir()):
            return _result_from_manifest(out, prior, already_complete=True,
                                         wall=time.perf_counter() - t_call, resumed=None)
        found = _checkpoints(out)
        if found:
            resumed_from, ckpt = found[-1]
            if config.max_steps and resumed_from > config.max_steps:
                raise ValueError(
                    f"{out} already holds a training at step {resumed_from} > max_steps="
                    f"{config.max_steps}; use another out_dir or resume=False"
                )

    # Keep the log rows up to the resume point (a run interrupted after its last checkpoint
    # logged steps that are about to be redone).
    rows = [r for r in read_log(out) if resumed_from is not None and r.get("step", 0) <= resumed_from]
    if main:
        _write_log(out, rows)
    elapsed_before = float(rows[-1]["elapsed_s"]) if rows else 0.0
    log_cb = _make_log_callback(out, rows, elapsed_before)

    import torch

    threads = config.torch_threads or default_num_threads()
    manifest: dict[str, Any] = {}
    from aad_kit.tracking import dpo_tracking

    track_cbs, report_to, tracking = dpo_tracking(config.report_to, tensorboard_dir or out / "tensorboard")
    with _torch_threads(threads if resolve_device(config) == "cpu" else None):
        trainer, setup = build_dpo_trainer(ds, base, config, out / CHECKPOINT_DIR,
                                           progress=progress, callbacks=[log_cb, *track_cbs, *callbacks],
                                           eval_dataset=eval_dataset, report_to=report_to)
        if resumed_from is not None and resumed_from > setup.total_steps:
            raise ValueError(
                f"{out} already holds a training at step {resumed_from}, beyond this config's "
                f"{setup.total_steps} steps; use another out_dir or resume=False"
            )
        from aad_kit.manifest import base_manifest

        manifest = base_manifest(
            stage="dpo",
            status="running",
            identity=identity,
            dataset=data_info,
            eval_dataset=eval_info,
            dataset_format=fmt,
            base_model=base.info(),
            config=config.to_dict(),
            effective=setup.to_dict(),
            device=setup.device,
            dtype=setup.dtype,
            torch_threads=setup.torch_threads,
            torch_version=torch.__version__,
            resumed_from_step=resumed_from,
            world_size=processes,
            tracking=tracking,
            previous_runs=(prior or {}).get("previous_runs", []) + (
                [{k: prior.get(k) for k in ("status", "global_step", "wall_time_s", "created_at")}]
                if prior else []),
        )
        manifest_path = out / MANIFEST
        if main:
            _write_json(manifest_path, manifest)
        t_train = time.perf_counter()
        try:
            with _quiet(progress), _known_warnings():
                trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
                trainer.save_model(str(out / ADAPTER_DIR))
        except BaseException as err:
            manifest.update(status="interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                            error=f"{type(err).__name__}: {err}",
                            global_step=int(trainer.state.global_step),
                            wall_time_s=round(time.perf_counter() - t_call, 3))
            if main:
                _write_json(manifest_path, manifest)
            raise
        train_s = time.perf_counter() - t_train

    from aad_kit.models import adapter_sha256

    global_step = int(trainer.state.global_step)
    wall = time.perf_counter() - t_call
    final: dict[str, Any] = {}
    if main:  # rank 0 saved the adapter; it alone completes the manifest
        step_times = [r["step_time_s"] for r in rows if isinstance(r.get("step_time_s"), (int, float))
                      and r.get("step", 0) > (resumed_from or 0)]
        final = dict(rows[-1]) if rows else {}
        manifest.update(
            status="complete",
            global_step=global_step,
            adapter={"path": str(out / ADAPTER_DIR),
                     "sha256": adapter_sha256(out / ADAPTER_DIR)},
            final_metrics=final,
            train_summary=dict(log_cb.summary),
            timing={
                "setup_s": setup.setup_s,
                "train_s": round(train_s, 3),
                "mean_step_s": round(sum(step_times) / len(step_times), 4) if step_times else None,
                "steps_this_call": global_step - (resumed_from or 0),
            },
            wall_time_s=round(wall, 3),
            finished_at=_now(),
        )
        _write_json(manifest_path, manifest)
    del trainer
    import gc

    gc.collect()
    return TrainingResult(
        out_dir=out, adapter_dir=out / ADAPTER_DIR, base_model=base.source,
        log_jsonl=out / LOG_JSONL, log_csv=out / LOG_CSV, manifest_path=manifest_path,
        global_step=global_step, resumed_from_step=resumed_from, already_complete=False,
        wall_time_s=round(wall, 3), metrics=final,
    )


def _now() -> str:
    from aad_kit.manifest import now_iso

    return now_iso()


__all__ = [
    "ADAPTER_DIR",
    "CHECKPOINT_DIR",
    "MANIFEST",
    "RUN_SUBDIR",
    "TrainingResult",
    "load_result",
    "read_manifest",
    "run_adapter_dir",
    "run_training_dir",
    "train_dpo",
]
