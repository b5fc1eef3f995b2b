"""Stage 5's DPO training of a run, as a command that ``accelerate launch`` can spread over GPUs.

Why a command: one process trains in the notebook; the paper trained on 4-8 GPUs. Here the
same inputs (the run's stage-4 pairs and held-out pairs, the student of stage 2, the profile's
DPO settings with the notebook's overrides) are resolved by :func:`stage_training`, the one
function notebook 05 uses too, so a training launched on N processes has the identity stage 5
expects. Afterwards ``aad-kit run`` finds it complete in ``RUN_DIR/dpo`` and reuses it.

    accelerate launch --multi_gpu --num_processes 8 -m aad_kit.training.launch runs/full --profile full
    aad-kit run --profile full --run-dir runs/full          # stage 5 reuses the adapter

Each process trains on its share of every batch (data parallel), so the effective batch is
``per_device_train_batch_size x gradient_accumulation_steps x processes`` and the same
``max_steps`` covers that many more pairs. Only rank 0 writes the manifest, log and adapter.
Tested: 2 CPU processes (``--multi_gpu`` without GPUs runs torch DDP over gloo). Not tested
here: GPUs, DeepSpeed and FSDP configurations (``accelerate config``); they are accelerate's.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aad_kit.training.config import DPOTrainingConfig


@dataclass(frozen=True)
class StageTraining:
    """What stage 5 trains: where the data and the model come from, the config, the outputs."""

    dataset_dir: Path
    heldout_dir: Path | None
    heldout_note: str  # why there are no held-out pairs, when there are none
    model: str
    config: DPOTrainingConfig
    out_dir: Path
    tensorboard_dir: Path


def stage_training(run_dir: str | os.PathLike[str], profile: str, *, dataset_path: str = "",
                   base_model: str = "", max_steps: int = 0, learning_rate: float = 0.0,
                   beta: float = 0.0, max_length: int = 0, batch_size: int = 0, lora_r: int = 0,
                   eval_steps: int = 0, seed: int = 0) -> StageTraining:
    """Stage 5's inputs for ``run_dir``; 0 / "" keep the profile's (or the run's) value."""
    from aad_kit import profiles
    from aad_kit.run_layout import MissingStageOutput, RunLayout

    p = profiles.get_profile(profile)
    layout = RunLayout.of(run_dir)
    data_dir = Path(dataset_path) if dataset_path else layout.output("04_dar_sampling", "pairs")
    heldout_dir, note = None, ""
    if not dataset_path:
        try:
            heldout_dir = layout.output("04_dar_sampling", "heldout_pairs")
        except MissingStageOutput as err:
            note = str(err)
    model = base_model or layout.outputs("02_candidate_generation").get("student_model") or p.model
    config = profiles.dpo_config(
        profile, max_steps=max_steps, learning_rate=learning_rate, beta=beta, max_length=max_length,
        per_device_train_batch_size=batch_size, lora_r=lora_r, lora_alpha=2 * lora_r if lora_r else 0,
        eval_steps=eval_steps, seed=seed,
    )
    return StageTraining(Path(data_dir), Path(heldout_dir) if heldout_dir else None, note, str(model),
                         config, layout.dpo, layout.tensorboard / "dpo")


def main(argv: list[str] | None = None) -> Any:
    from aad_kit.training.environment import is_main_process, world_size
    from aad_kit.training.runner import train_dpo

    parser = argparse.ArgumentParser(prog="python -m aad_kit.training.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="the run whose stage-4 pairs are trained on")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--dataset-path", default="", help="train on these pairs instead")
    parser.add_argument("--base-model", default="", help="default: the student of stage 2")
    for name, kind in (("max_steps", int), ("learning_rate", float), ("beta", float),
                       ("max_length", int), ("batch_size", int), ("lora_r", int),
                       ("eval_steps", int), ("seed", int)):
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=kind(0),
                            help="0: the profile's" if name != "seed" else None)
    parser.add_argument("--out-dir", default="", help="default: RUN_DIR/dpo (where stage 5 looks)")
    parser.add_argument("--no-resume", action="store_true", help="start over in the output directory")
    args = parser.parse_args(argv)
    st = stage_training(args.run_dir, args.profile, dataset_path=args.dataset_path,
                        base_model=args.base_model, max_steps=args.max_steps,
                        learning_rate=args.learning_rate, beta=args.beta, max_length=args.max_length,
                        batch_size=args.batch_size, lora_r=args.lora_r, eval_steps=args.eval_steps,
                        seed=args.seed)
    out = Path(args.out_dir) if args.out_dir else st.out_dir
    main_process = is_main_process()
    if main_process:
        print(f"[aad-kit] DPO on {world_size()} process(es): {st.dataset_dir} -> {out} "
              f"(model {st.model})", flush=True)
    result = train_dpo(str(st.dataset_dir), st.model, st.config, out, resume=not args.no_resume,
                       progress=main_process,
                       eval_dataset=str(st.heldout_dir) if st.heldout_dir else None,
                       tensorboard_dir=st.tensorboard_dir)
    if main_process:
        print(f"[aad-kit] adapter: {result.adapter_dir} ({result.global_step} steps)", flush=True)
    return result


if __name__ == "__main__":
    main()
