"""Stage 5: DPO training of a LoRA adapter on DAR preference pairs (TRL ``DPOTrainer``).

This module is the stage's facade: every name it always had is importable from here. The
code lives in one module per job:

* :mod:`aad_kit.training.config`: :class:`DPOTrainingConfig`, :data:`RESUMABLE_FIELDS`, the
  per-profile configs;
* :mod:`aad_kit.training.data`: loading, validating and hashing preference datasets;
* :mod:`aad_kit.training.base_model`: resolving the base model (name, directory, hub id);
* :mod:`aad_kit.training.environment`: device, dtype (the rule of :mod:`aad_kit.llm.device`),
  threads, quiet output;
* :mod:`aad_kit.training.trainer`: TRL's trainer with a LoRA adapter, and why it is set up so;
* :mod:`aad_kit.training.log`: the per-step training log (JSONL + CSV);
* :mod:`aad_kit.training.runner`: :func:`train_dpo`: outputs, resume, manifest, results.

Why CPU training is float32 (bf16 autocast distorts DPO's small policy/reference
log-ratios): :mod:`aad_kit.llm.device`.
"""

from __future__ import annotations

from aad_kit.llm.device import default_num_threads
from aad_kit.training.base_model import BaseModel, resolve_base_model
from aad_kit.training.config import (
    RESUMABLE_FIELDS,
    DPOTrainingConfig,
    base_model_for_profile,
    config_for_profile,
)
from aad_kit.training.data import (
    PREFERENCE_COLUMNS,
    dataset_fingerprint,
    load_preference_dataset,
    validate_preference_dataset,
)
from aad_kit.training.environment import resolve_device, resolve_dtype
from aad_kit.training.log import LOG_COLUMNS, LOG_CSV, LOG_JSONL, load_training_log, read_log
from aad_kit.training.runner import (
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    MANIFEST,
    RUN_SUBDIR,
    TrainingResult,
    load_result,
    read_manifest,
    run_adapter_dir,
    run_training_dir,
    train_dpo,
)
from aad_kit.training.trainer import (
    TrainerSetup,
    build_dpo_trainer,
    make_dpo_args,
    make_lora_config,
    resolve_precompute,
)

__all__ = [
    "ADAPTER_DIR",
    "BaseModel",
    "CHECKPOINT_DIR",
    "DPOTrainingConfig",
    "LOG_COLUMNS",
    "LOG_CSV",
    "LOG_JSONL",
    "MANIFEST",
    "PREFERENCE_COLUMNS",
    "RESUMABLE_FIELDS",
    "RUN_SUBDIR",
    "TrainerSetup",
    "TrainingResult",
    "base_model_for_profile",
    "build_dpo_trainer",
    "config_for_profile",
    "dataset_fingerprint",
    "default_num_threads",
    "load_preference_dataset",
    "load_result",
    "load_training_log",
    "make_dpo_args",
    "make_lora_config",
    "read_log",
    "read_manifest",
    "resolve_base_model",
    "resolve_precompute",
    "resolve_device",
    "resolve_dtype",
    "run_adapter_dir",
    "run_training_dir",
    "train_dpo",
    "validate_preference_dataset",
]
