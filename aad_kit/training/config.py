"""The DPO stage's configuration: :class:`DPOTrainingConfig` (validated, JSON round-trip),
the fields a resume may change (:data:`RESUMABLE_FIELDS`) and the per-profile values
(:func:`config_for_profile`; the table itself is :mod:`aad_kit.profiles`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

# Config fields that may change between a run and its resumption: how long to train, how
# often to log/save, and knobs that change speed but not the maths.
RESUMABLE_FIELDS = frozenset({
    "max_steps", "num_train_epochs", "save_steps", "save_total_limit", "logging_steps",
    "torch_threads", "gradient_checkpointing", "precompute_ref_log_probs", "share_prompt_prefix",
    "report_to",
})



@dataclass(frozen=True)
class DPOTrainingConfig:
    """Hyper-parameters and run settings of one DPO training (frozen; validated on creation).

    The paper (arXiv 2507.10614) fine-tunes Llama-3.2-1B/3.1-8B-Instruct with DPO on DAR pairs
    but the values below are not taken from it: where it gives no number, they are the usual
    LoRA-DPO choices (DPO paper / TRL ``beta = 0.1``; LoRA r=16, alpha=32 on all linear
    layers). Per-profile values (smoke / quick / full) come from :func:`config_for_profile`.
    """

    # --- DPO objective and optimiser
    beta: float = 0.1
    """KL strength of DPO (higher: stay closer to the reference). DPO paper and TRL: 0.1."""
    loss_type: str = "sigmoid"
    """TRL loss name; "sigmoid" is the original DPO loss."""
    learning_rate: float = 5e-5
    """AdamW peak LR. TRL's 1e-6 default is meant for full fine-tuning; a LoRA adapter
    needs a larger step (5e-6 .. 1e-4 are common) to move in a few hundred steps."""
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.1
    """Fraction of the optimizer steps spent in linear warm-up (transformers' warmup_steps<1)."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    num_train_epochs: float = 3.0
    """Passes over the pairs (used when ``max_steps`` is None)."""
    max_steps: int | None = None
    """Optimizer steps; overrides ``num_train_epochs`` when set (> 0)."""
    per_device_train_batch_size: int = 2
    """Preference *pairs* per micro-batch (each pair = a chosen and a rejected sequence)."""
    gradient_accumulation_steps: int = 4
    """Micro-batches per optimizer step (effective batch = batch x accumulation pairs)."""
    max_length: int = 1024
    """Tokens per prompt+completion sequence; longer ones are cut at the end ("keep_start");
    pairs whose prompt alone reaches it are dropped by TRL (a warning reports how many)."""

    # --- LoRA adapter
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    """Inactive while ``disable_dropout`` is on (TRL zeroes every dropout module)."""
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    """peft target: "all-linear" (every linear layer but the LM head) or module names."""
    disable_dropout: bool = True
    """TRL's default: no dropout anywhere, so policy and reference agree at step 0."""

    # --- bookkeeping
    seed: int = 0
    """Seeds adapter init, data order and everything else (transformers.set_seed)."""
    logging_steps: int = 1
    """Log (JSONL/CSV row) every this many optimizer steps; 1 gives per-step curves."""
    save_steps: int = 25
    """Checkpoint every this many optimizer steps (and always at the end), for resume."""
    eval_steps: int | None = None
    """Evaluate on the eval dataset (held-out pairs) every this many steps and at the end;
    None: no evaluation. The log then holds ``eval_rewards/accuracies`` etc. per eval step."""
    save_total_limit: int | None = 2
    """Newest checkpoints kept (None: all)."""
    report_to: str = "auto"
    """Trackers (:mod:`aad_kit.tracking`): "auto" (TensorBoard event files in the output's
    ``tensorboard/`` when the package is installed), "none", "tensorboard", "wandb" or a
    comma-separated list."""

    # --- device and speed (aad_kit.training.trainer's docstring; aad_kit.llm.device)
    device: str = "auto"
    """"auto" (cuda if available, else cpu), "cpu" or "cuda"."""
    dtype: str = "auto"
    """"auto": float32 on CPU, bfloat16 on a bf16-capable GPU. "float32" or "bfloat16"
    force one ("bfloat16" on CPU = fp32 weights under bf16 autocast, TRL's CPU default)."""
    gradient_checkpointing: bool | None = None
    """None: off on CPU (costs time, memory is not short), on on GPU (TRL's default)."""
    precompute_ref_log_probs: bool | None = None
    """Compute the reference log-probs of every pair once before training (a no-grad pass)
    instead of one reference forward per step. Steps get cheaper (SmolLM2-135M, DAR-like
    pairs, 1 thread: 21 vs 28 CPU-s) but the pass costs about one epoch of reference forwards
    up front (~3 s a pair) and is redone on every (re)start, so it pays off from about one
    epoch. None: on when the run covers at least one epoch of the pairs, else off."""
    torch_threads: int | None = None
    """CPU threads for torch during training; None: every core this process may use."""
    share_prompt_prefix: bool = True
    """Run each distinct prompt once per batch and only score completion positions through the
    LM head (:mod:`aad_kit.training.prefix_sharing`). Same loss and gradients up to float
    rounding; DAR pairs of one task share their prompt, so this removes most of a step's work.
    Inactive with gradient checkpointing (the manifest's ``effective.prompt_sharing`` says)."""

    def __post_init__(self) -> None:
        problems: list[str] = []

        def need(cond: bool, msg: str) -> None:
            if not cond:
                problems.append(msg)

        need(self.beta > 0, f"beta must be > 0 (got {self.beta})")
        need(self.learning_rate > 0, f"learning_rate must be > 0 (got {self.learning_rate})")
        need(0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        need(self.weight_decay >= 0, "weight_decay must be >= 0")
        need(self.max_grad_norm >= 0, "max_grad_norm must be >= 0 (0 disables clipping)")
        need(self.num_train_epochs > 0, f"num_train_epochs must be > 0 (got {self.num_train_epochs})")
        need(self.max_steps is None or self.max_steps >= 0,
             f"max_steps must be None or >= 0 (got {self.max_steps})")
        need(self.per_device_train_batch_size >= 1, "per_device_train_batch_size must be >= 1")
        need(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1")
        need(self.max_length >= 8, f"max_length must be >= 8 tokens (got {self.max_length})")
        need(self.lora_r >= 1, f"lora_r must be >= 1 (got {self.lora_r})")
        need(self.lora_alpha > 0, f"lora_alpha must be > 0 (got {self.lora_alpha})")
        need(0 <= self.lora_dropout < 1, f"lora_dropout must be in [0, 1) (got {self.lora_dropout})")
        need(bool(self.lora_target_modules), "lora_target_modules must not be empty")
        need(self.logging_steps >= 1, "logging_steps must be >= 1")
        need(self.save_steps >= 1, "save_steps must be >= 1")
        need(self.eval_steps is None or self.eval_steps >= 1, "eval_steps must be None or >= 1")
        need(self.save_total_limit is None or self.save_total_limit >= 1,
             "save_total_limit must be None or >= 1")
        need(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
             f"device must be auto, cpu or cuda (got {self.device!r})")
        need(self.dtype in ("auto", "float32", "bfloat16"),
             f"dtype must be auto, float32 or bfloat16 (got {self.dtype!r})")
        need(self.torch_threads is None or self.torch_threads >= 1, "torch_threads must be >= 1")
        try:
            from aad_kit.tracking import parse_report_to

            parse_report_to(self.report_to)
        except ValueError as err:
            problems.append(f"report_to: {err}")
        if problems:
            raise ValueError("invalid DPOTrainingConfig: " + "; ".join(problems))
        if isinstance(self.lora_target_modules, list):  # JSON round trip gives lists
            object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))

    def replace(self, **changes: Any) -> DPOTrainingConfig:
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(d["lora_target_modules"], tuple):
            d["lora_target_modules"] = list(d["lora_target_modules"])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DPOTrainingConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DPOTrainingConfig fields: {sorted(unknown)}")
        return cls(**dict(d))


def config_for_profile(profile: str, **overrides: Any) -> DPOTrainingConfig:
    """The :class:`DPOTrainingConfig` of a run profile (:func:`aad_kit.profiles.dpo_config`:
    the profile table lives there), with ``overrides`` applied; ``None``/``0`` overrides are
    ignored, so notebook parameters can use 0 for "the profile's value"."""
    from aad_kit.profiles import dpo_config

    return dpo_config(profile, **overrides)


def base_model_for_profile(profile: str) -> str:
    """The base model a profile trains when none is named: the profile's student model."""
    from aad_kit.profiles import get_profile

    return get_profile(profile).model


__all__ = ["RESUMABLE_FIELDS", "DPOTrainingConfig", "base_model_for_profile", "config_for_profile"]
