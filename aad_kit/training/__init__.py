"""Stage 5: preference fine-tuning (DPO with a LoRA adapter). See :mod:`aad_kit.training.dpo`.

Heavy imports (torch, transformers, TRL, peft) happen inside the functions, so importing this
package is cheap.
"""

from __future__ import annotations

from aad_kit.training.dpo import (
    RESUMABLE_FIELDS,
    DPOTrainingConfig,
    TrainingResult,
    base_model_for_profile,
    build_dpo_trainer,
    config_for_profile,
    dataset_fingerprint,
    load_preference_dataset,
    load_result,
    load_training_log,
    run_adapter_dir,
    run_training_dir,
    train_dpo,
    validate_preference_dataset,
)

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
