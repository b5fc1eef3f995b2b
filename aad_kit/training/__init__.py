"""Stage 5: preference fine-tuning (DPO with a LoRA adapter). :mod:`aad_kit.training.dpo` maps
the modules (config, data, base_model, environment, trainer, log, runner).

Heavy imports (torch, transformers, TRL, peft) happen inside the functions, so importing this
package is cheap.
"""

from __future__ import annotations

from aad_kit.training.config import (
    RESUMABLE_FIELDS,
    DPOTrainingConfig,
    base_model_for_profile,
    config_for_profile,
)
from aad_kit.training.data import (
    dataset_fingerprint,
    load_preference_dataset,
    validate_preference_dataset,
)
from aad_kit.training.log import load_training_log
from aad_kit.training.runner import (
    TrainingResult,
    load_result,
    run_adapter_dir,
    run_training_dir,
    train_dpo,
)
from aad_kit.training.trainer import build_dpo_trainer

__all__ = [
    "RESUMABLE_FIELDS",
    "DPOTrainingConfig",
    "TrainingResult",
    "base_model_for_profile",
    "build_dpo_trainer",
    "config_for_profile",
    "dataset_fingerprint",
    "load_preference_dataset",
    "load_result",
    "load_training_log",
    "run_adapter_dir",
    "run_training_dir",
    "train_dpo",
    "validate_preference_dataset",
]
