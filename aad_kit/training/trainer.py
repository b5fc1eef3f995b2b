"""TRL's ``DPOTrainer`` with a LoRA adapter, built for one config: :func:`build_dpo_trainer`
(model + tokenizer loading, TRL arguments, prompt sharing, batch clamping) and the
:class:`TrainerSetup` it reports. Bookkeeping (resume, log, manifest) is
:mod:`aad_kit.training.runner`'s.

How the training is set up (and why)
------------------------------------
* **Reference model** = the base model with the adapter disabled: ``peft_config`` +
  ``ref_model=None``, so no second copy of the model is held in memory. LoRA starts with
  ``B = 0``, so policy and reference agree exactly at step 0 (first loss = ln 2).
* **Tokenizer** goes in as ``processing_class``; ``pad_token = eos_token`` where missing;
  ``padding_side = "left"`` as TRL documents (its preference collator concatenates
  prompt + completion and pads on the right by itself, so training is not affected).
* **dtype rule** (:func:`aad_kit.llm.device.default_dtype`, purpose "training", where the
  reasons are): on CPU everything runs in float32 (no autocast); on a CUDA GPU with bf16
  support the frozen base weights are loaded in bfloat16 and the step runs under bf16
  autocast (LoRA weights stay float32, peft's default); a GPU without bf16 falls back to
  float32. ``dtype="bfloat16"`` opts in on a CPU (TRL's own default, distorting DPO's small
  log-ratios there).
* **Speed** (issue 7; SmolLM2-135M, LoRA r=16 on all linear layers, batch 2, DAR-like pairs:
  the whole ~730-token ``i1`` prompt + ~325-token completions; ``benchmarks/dpo_step.py`` has
  the side-by-side table against a plain TRL script and ``benchmarks/RESULTS.md`` the figures):

  - ``share_prompt_prefix`` (on): TRL runs every row's prompt and scores every position
    through the LM head; here each distinct prompt runs once per batch and only completion
    positions are scored (:mod:`aad_kit.training.prefix_sharing`): 2 threads, 40.9 -> 13.0
    s/step, peak memory 15.6 -> 7.7 GiB, same loss and gradients up to float rounding (tests
    compare them).
  - ``precompute_ref_log_probs`` (auto): no reference forward per step (13.0 -> 9.2 s) for
    a pass of ~2 s per pair up front, redone on every (re)start; on when the run covers at
    least one epoch (the quick and full profiles do), where it has paid for itself.
  - held-out evaluation (``eval_steps``): the eval pairs' reference log-probs are computed
    once (the reference never changes) and the pairs are scored 8 at a time
    (:func:`eval_batch_size`), where TRL re-runs the reference at every evaluation in the
    training batch size; the metrics are the same up to float rounding (tests compare them).
  - gradient checkpointing costs ~10 % per step on CPU and saves memory that is not short
    there, and it disables prompt sharing, so ``None`` means *off on CPU, on on GPU*.
  - threads: all cores this process may use. On a machine busy with other work, 2 OpenMP
    threads on 2 cores can be *slower* than one (threads spin waiting for a descheduled
    peer: 68 s/step vs 26 s measured at load 4): set ``torch_threads=1`` (or
    ``$AAD_KIT_TORCH_THREADS``) there.
  - what is left (``benchmarks/dpo_profile.py``): the step is 1.75x its FLOP floor; matrix
    products run at the floor's rate, attention (~24 %), elementwise ops (~19 %) and the LM
    head's softmax make up the rest.
* **Dropout**: TRL's ``disable_dropout`` (kept on) zeroes every ``nn.Dropout`` — LoRA's too —
  so that the policy and reference log-probs agree; hence ``lora_dropout`` defaults to 0.
* **Padding-free batching** (``DPOConfig.padding_free``) is switched off inside TRL 1.16
  ("temporarily unavailable", it warns and falls back), and ``group_by_length`` no longer
  exists in transformers 5, so neither is offered here.

Small datasets: a dataset with fewer rows than ``per_device_train_batch_size`` is trained
with the batch size clamped to the number of rows (a warning says so, and the manifest's
``effective`` section records it) rather than rejected: DAR on a short search can yield only
a handful of pairs, and a smaller batch is the only sensible thing to do with them.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from aad_kit.llm.device import default_num_threads
from aad_kit.training.base_model import BaseModel, resolve_base_model
from aad_kit.training.config import DPOTrainingConfig
from aad_kit.training.data import (
    PREFERENCE_COLUMNS,
    load_preference_dataset,
    validate_preference_dataset,
)
from aad_kit.training.environment import _known_warnings, _quiet, resolve_device, resolve_dtype


@dataclass
class TrainerSetup:
    """What :func:`build_dpo_trainer` decided, for the manifest (and for profiling code)."""

    device: str
    dtype: str
    torch_threads: int | None
    gradient_checkpointing: bool
    per_device_train_batch_size: int
    batch_size_clamped: bool
    dataset_format: str
    rows: int
    rows_after_filter: int
    total_steps: int
    setup_s: float
    prompt_sharing: bool = False
    precompute_ref_log_probs: bool = False
    eval_batch_size: int | None = None  # pairs per held-out evaluation batch (None: no eval)
    eval_reference_precomputed: bool = False  # eval pairs' reference log-probs computed once
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_precompute(config: DPOTrainingConfig, rows: int, batch_size: int) -> bool:
    """Whether to precompute reference log-probs: as configured, or (None) when the planned
    optimizer steps visit at least as many pairs as there are (one epoch or more), which is
    where the up-front pass has paid for itself (measured; see the field's docstring)."""
    if config.precompute_ref_log_probs is not None:
        return bool(config.precompute_ref_log_probs)
    if config.max_steps:
        visits = config.max_steps * batch_size * config.gradient_accumulation_steps
        return visits >= rows
    return config.num_train_epochs >= 1


def eval_batch_size(eval_rows: int, train_batch: int, largest: int = 8) -> int:
    """Pairs per evaluation batch: the largest divisor of ``eval_rows`` from ``train_batch`` up
    to ``largest``, else ``train_batch``.

    Why: with prompt sharing one prompt pass serves the whole batch, so evaluating 8 pairs at
    a time costs far less per pair than the training batch of 2; and TRL averages its eval
    metrics over batches, so equal batches keep the held-out accuracy a plain mean over pairs.
    """
    for size in range(min(largest, eval_rows), train_batch - 1, -1):
        if eval_rows % size == 0:
            return size
    return train_batch


def make_lora_config(config: DPOTrainingConfig) -> Any:
    from peft import LoraConfig

    targets = config.lora_target_modules
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def make_dpo_args(config: DPOTrainingConfig, output_dir: str | os.PathLike[str], *,
                  device: str, dtype: str, gradient_checkpointing: bool, batch_size: int,
                  progress: bool = True, precompute: bool | None = None,
                  eval_batch: int | None = None,
                  report_to: Sequence[str] = (), **trl_overrides: Any) -> Any:
    """TRL ``DPOConfig`` for ``config``; ``precompute``: the resolved
    :func:`resolve_precompute` (default: the config's value, None as off);
    ``eval_batch``: pairs per evaluation batch (default: ``batch_size``);
    ``trl_overrides`` are passed through last (an escape hatch for experiments and profiling,
    not needed for normal runs)."""
    from trl import DPOConfig

    kw: dict[str, Any] = dict(
        output_dir=str(output_dir),
        beta=config.beta,
        loss_type=[config.loss_type],
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_ratio,  # < 1: a ratio of the total steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps if config.max_steps else -1,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        truncation_mode="keep_start",
        disable_dropout=config.disable_dropout,
        precompute_ref_log_probs=bool(config.precompute_ref_log_probs if precompute is None
                                      else precompute),
        # transformers 5 name (gradient_checkpointing is its deprecated alias)
        activation_checkpointing=gradient_checkpointing,
        bf16=dtype == "bfloat16",
        fp16=False,
        use_cpu=device == "cpu",
        seed=config.seed,
        data_seed=config.seed,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        report_to=list(report_to) or "none",  # TensorBoard: aad_kit.tracking.dpo_tracking's callback
        eval_strategy="steps" if config.eval_steps else "no",
        eval_steps=config.eval_steps,
        per_device_eval_batch_size=eval_batch or batch_size,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )
    kw.update(trl_overrides)
    return DPOConfig(**kw)


def build_dpo_trainer(
    dataset: Any,
    base_model: str | os.PathLike[str] | BaseModel,
    config: DPOTrainingConfig | None = None,
    output_dir: str | os.PathLike[str] = "dpo-checkpoints",
    *,
    progress: bool = True,
    callbacks: Sequence[Any] = (),
    trl_overrides: Mapping[str, Any] | None = None,
    eval_dataset: Any = None,
    report_to: Sequence[str] = (),
) -> tuple[Any, TrainerSetup]:
    """Load the base model + tokenizer and build TRL's ``DPOTrainer`` with a LoRA adapter.

    This is :func:`train_dpo` without the bookkeeping (no resume, log or manifest): useful to
    profile or compare single steps. Returns ``(trainer, setup)``. Thread count is *not*
    set here (the caller owns process-wide torch settings; :func:`train_dpo` sets it).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    config = config or DPOTrainingConfig()
    ds = load_preference_dataset(dataset)
    fmt = validate_preference_dataset(ds)
    base = base_model if isinstance(base_model, BaseModel) else resolve_base_model(base_model, progress)
    device = resolve_device(config)
    dtype = resolve_dtype(config, device)
    gc_on = (not device == "cpu") if config.gradient_checkpointing is None else config.gradient_checkpointing
    notes: list[str] = []

    batch = config.per_device_train_batch_size
    clamped = len(ds) < batch
    if clamped:
        msg = (f"the preference dataset has {len(ds)} row(s), fewer than "
               f"per_device_train_batch_size={batch}: training with batch size {len(ds)}")
        warnings.warn(msg, stacklevel=2)
        notes.append(msg)
        batch = len(ds)

    tok = AutoTokenizer.from_pretrained(base.source)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if fmt == "conversational" and not getattr(tok, "chat_template", None):
        raise ValueError(
            f"the dataset is conversational but the tokenizer of {base.name} has no chat template; "
            "use plain-string prompt/chosen/rejected or a model with a chat template"
        )
    # GPU + bf16: keep the frozen base in bf16 (half the memory); LoRA weights stay fp32.
    load_dtype = torch.bfloat16 if (dtype == "bfloat16" and device != "cpu") else torch.float32
    with _quiet(progress):
        model = AutoModelForCausalLM.from_pretrained(base.source, dtype=load_dtype)

    sharing = False
    if config.share_prompt_prefix:
        from aad_kit.training.prefix_sharing import supports_prefix_sharing

        sharing, why_not = supports_prefix_sharing(model)
        if sharing and gc_on:
            sharing, why_not = False, "gradient checkpointing is on"
        if not sharing:
            notes.append(f"prompt sharing off: {why_not}")
    precompute = resolve_precompute(config, len(ds), batch)
    overrides = dict(trl_overrides or {})
    if sharing and precompute:
        # one prompt pass serves the whole precompute batch: bigger batches are cheaper per pair
        overrides.setdefault("precompute_ref_batch_size", max(batch, 8))
    eval_ds = None
    if eval_dataset is not None and config.eval_steps:
        eval_ds = load_preference_dataset(eval_dataset)
        if validate_preference_dataset(eval_ds) != fmt:
            raise ValueError("the eval dataset must have the training dataset's format")
        eval_ds = eval_ds.select_columns(list(PREFERENCE_COLUMNS))
    eval_batch = eval_batch_size(len(eval_ds), batch) if eval_ds is not None and sharing else batch
    args = make_dpo_args(config, output_dir, device=device, dtype=dtype,
                         gradient_checkpointing=gc_on, batch_size=batch, progress=progress,
                         precompute=precompute, eval_batch=eval_batch, report_to=report_to,
                         **overrides)
    train_ds = ds.select_columns(list(PREFERENCE_COLUMNS))
    if config.eval_steps and eval_ds is None:
        notes.append("eval_steps is set but no eval dataset was given: no evaluation")
        args.eval_strategy = "no"
    from aad_kit.training.prefix_sharing import shared_prefix_trainer_class

    with _quiet(progress), _known_warnings():
        trainer = shared_prefix_trainer_class()(
            share_prompt_prefix=sharing,
            precompute_eval_ref=eval_ds is not None and not precompute,
            model=model,
            ref_model=None,  # with peft_config: the reference is the adapter-disabled model
            args=args,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tok,
            peft_config=make_lora_config(config),
            callbacks=list(callbacks),
        )
    if not progress:  # with disable_tqdm, transformers prints every log dict instead
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise ValueError(
            f"every pair's prompt is at least max_length={config.max_length} tokens long, so TRL "
            "dropped them all; raise max_length"
        )
    if kept < len(ds):
        msg = (f"{len(ds) - kept} of {len(ds)} pairs dropped: their prompt alone reaches "
               f"max_length={config.max_length} tokens")
        warnings.warn(msg, stacklevel=2)
        notes.append(msg)
    if config.max_steps:
        total = int(config.max_steps)
    else:
        batches = math.ceil(kept / batch)
        per_epoch = max(1, batches // config.gradient_accumulation_steps
                        + int(batches % config.gradient_accumulation_steps > 0))
        total = int(math.ceil(config.num_train_epochs * per_epoch))
    setup = TrainerSetup(
        device=device, dtype=dtype,
        torch_threads=(config.torch_threads or default_num_threads()) if device == "cpu" else None,
        gradient_checkpointing=gc_on, per_device_train_batch_size=batch,
        batch_size_clamped=clamped, dataset_format=fmt, rows=len(ds), rows_after_filter=kept,
        total_steps=total, setup_s=round(time.perf_counter() - t0, 3), prompt_sharing=sharing,
        precompute_ref_log_probs=precompute,
        eval_batch_size=eval_batch if eval_ds is not None else None,
        eval_reference_precomputed=eval_ds is not None and (
            precompute or bool(getattr(trainer, "_eval_ref_precomputed", False))),
        notes=notes,
    )
    return trainer, setup


__all__ = [
    "TrainerSetup",
    "build_dpo_trainer",
    "eval_batch_size",
    "make_dpo_args",
    "make_lora_config",
    "resolve_precompute",
]
