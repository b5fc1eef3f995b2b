"""Stage 5: DPO training of a LoRA adapter on DAR preference pairs (TRL ``DPOTrainer``).

Entry point: :func:`train_dpo`. It takes a preference dataset in TRL's format (``prompt`` /
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

How the training is set up (and why)
------------------------------------
* **Reference model** = the base model with the adapter disabled: ``peft_config`` +
  ``ref_model=None``, so no second copy of the model is held in memory. LoRA starts with
  ``B = 0``, so policy and reference agree exactly at step 0 (first loss = ln 2).
* **Tokenizer** goes in as ``processing_class``; ``pad_token = eos_token`` where missing;
  ``padding_side = "left"`` as TRL documents (its preference collator concatenates
  prompt + completion and pads on the right by itself, so training is not affected).
* **dtype rule**: on CPU everything runs in float32 (no autocast); on a CUDA GPU with bf16
  support the frozen base weights are loaded in bfloat16 and the step runs under bf16
  autocast (LoRA weights stay float32, peft's default); a GPU without bf16 falls back to
  float32 (fp16 would need loss scaling). TRL's own default is bf16 autocast everywhere, CPU
  included. On a CPU with AMX-BF16 that is faster (SmolLM2-135M: ~15 vs ~26 CPU-seconds per
  step, one thread), but DPO lives on *differences* of summed log-probs between policy and
  reference, and bf16 rounding swamps them early on: after one Adam-sized step the true
  log-ratios were ~0.005 nats, the bf16-autocast ones +-0.3..1.0 nats (and the step-2 loss
  0.79 instead of 0.48). On CPUs without native bf16 it is also slow. So float32 it is;
  ``dtype="bfloat16"`` opts in.
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

Small datasets: a dataset with fewer rows than ``per_device_train_batch_size`` is trained
with the batch size clamped to the number of rows (a warning says so, and the manifest's
``effective`` section records it) rather than rejected: DAR on a short search can yield only
a handful of pairs, and a smaller batch is the only sensible thing to do with them.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aad_kit.llm.hf import default_num_threads

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
ADAPTER_DIR = "adapter"
RUN_SUBDIR = "dpo"  # where the pipeline's DPO stage trains inside a run directory


def run_training_dir(run_dir: str | os.PathLike[str]) -> Path:
    """The DPO stage's output directory inside a pipeline run directory."""
    return Path(run_dir) / RUN_SUBDIR


def run_adapter_dir(run_dir: str | os.PathLike[str]) -> Path:
    """Where the pipeline's trained LoRA adapter lives (read by the generalisation stage)."""
    return run_training_dir(run_dir) / ADAPTER_DIR
CHECKPOINT_DIR = "checkpoints"
LOG_JSONL = "training_log.jsonl"
LOG_CSV = "training_log.csv"
MANIFEST = "manifest.json"

# Columns every log row carries (TRL's metric names), in CSV order; other logged keys follow.
LOG_COLUMNS = (
    "step", "epoch", "loss", "rewards/margins", "rewards/accuracies", "rewards/chosen",
    "rewards/rejected", "logps/chosen", "logps/rejected", "learning_rate", "grad_norm",
    "step_time_s", "elapsed_s",
)

# Config fields that may change between a run and its resumption: how long to train, how
# often to log/save, and knobs that change speed but not the maths.
RESUMABLE_FIELDS = frozenset({
    "max_steps", "num_train_epochs", "save_steps", "save_total_limit", "logging_steps",
    "torch_threads", "gradient_checkpointing", "precompute_ref_log_probs", "share_prompt_prefix",
})


# ---------------------------------------------------------------------------- config


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
    eval_steps: int | None = None
    """Evaluate on the eval dataset (held-out pairs) every this many steps and at the end;
    None: no evaluation. The log then holds ``eval_rewards/accuracies`` etc. per eval step."""
    """Checkpoint every this many optimizer steps (and always at the end), for resume."""
    save_total_limit: int | None = 2
    """Newest checkpoints kept (None: all)."""

    # --- device and speed (see the module docstring and measurements in the notes)
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


# ---------------------------------------------------------------------------- dataset


def load_preference_dataset(source: Any) -> Any:
    """A ``datasets.Dataset`` from a Dataset, a ``save_to_disk`` directory, a ``.jsonl`` /
    ``.json`` / ``.parquet`` file, or a list of row dicts. A DatasetDict must have "train"."""
    import datasets

    if isinstance(source, datasets.DatasetDict):
        if "train" not in source:
            raise ValueError(f"DatasetDict without a 'train' split (splits: {list(source)})")
        return source["train"]
    if isinstance(source, datasets.Dataset):
        return source
    if isinstance(source, (list, tuple)):
        return datasets.Dataset.from_list(list(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if path.is_dir():
            return load_preference_dataset(datasets.load_from_disk(str(path)))
        if not path.is_file():
            raise FileNotFoundError(f"preference dataset not found: {path}")
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".json"):
            return datasets.Dataset.from_json(str(path))
        if suffix == ".parquet":
            return datasets.Dataset.from_parquet(str(path))
        raise ValueError(f"unsupported preference dataset file {path} (use .jsonl, .json, "
                         ".parquet or a save_to_disk directory)")
    raise TypeError(f"cannot read a preference dataset from {type(source).__name__}")


def _is_messages(value: Any) -> bool:
    return (isinstance(value, list) and len(value) > 0
            and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in value))


def validate_preference_dataset(ds: Any) -> str:
    """Check ``ds`` is usable for DPO; returns its format, "conversational" or "text".

    Raises ``ValueError`` naming the problem: empty dataset, missing columns, mixed formats,
    an empty completion, or conversational completions that are not assistant turns.
    """
    if ds is None or len(ds) == 0:
        raise ValueError("the preference dataset is empty: DPO needs at least one "
                         "(prompt, chosen, rejected) pair")
    missing = [c for c in PREFERENCE_COLUMNS if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"the preference dataset lacks column(s) {missing}; it needs {list(PREFERENCE_COLUMNS)} "
            f"(TRL preference format), it has {ds.column_names}"
        )
    row = ds[0]
    kinds = {c: ("conversational" if _is_messages(row[c]) else
                 "text" if isinstance(row[c], str) else type(row[c]).__name__)
             for c in PREFERENCE_COLUMNS}
    if len(set(kinds.values())) != 1 or next(iter(kinds.values())) not in ("conversational", "text"):
        raise ValueError(
            "prompt, chosen and rejected must all be strings or all be lists of "
            f"{{role, content}} messages; row 0 has {kinds}"
        )
    fmt = kinds["prompt"]
    for c in ("chosen", "rejected"):
        if fmt == "conversational":
            roles = [m["role"] for m in row[c]]
            if roles[-1] != "assistant":
                raise ValueError(f"row 0: {c} must end with an assistant message (roles {roles})")
        elif not row[c]:
            raise ValueError(f"row 0: {c} is empty")
    return fmt


def _sha256_rows(ds: Any, columns: Sequence[str]) -> str:
    h = hashlib.sha256()
    for row in ds.select_columns(list(columns)):
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


def dataset_fingerprint(ds: Any) -> dict[str, Any]:
    """Content hashes of a preference dataset: ``training_sha256`` over the prompt/chosen/
    rejected columns (what the model sees; resume compares it), ``content_sha256`` over every
    column (metadata included), row order significant."""
    return {
        "rows": len(ds),
        "columns": list(ds.column_names),
        "training_sha256": _sha256_rows(ds, PREFERENCE_COLUMNS),
        "content_sha256": _sha256_rows(ds, ds.column_names),
    }


# ---------------------------------------------------------------------------- base model


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model: where it is loaded from and what is known about it."""

    source: str  # what from_pretrained gets: a local directory or a hub id
    path: Path | None  # local directory, when there is one
    name: str  # registry name, directory name or hub id
    weights_sha256: str | None
    record: dict[str, Any] | None  # aad_kit_model.json, when present

    def info(self) -> dict[str, Any]:
        rec = self.record or {}
        return {
            "source": self.source,
            "path": str(self.path) if self.path else None,
            "name": self.name,
            "weights_sha256": self.weights_sha256,
            "sha256_from": "aad_kit_model.json" if rec.get("weights_sha256") else
                           ("hashed" if self.weights_sha256 else None),
            "registry_source": rec.get("source"),
        }


def resolve_base_model(base_model: str | os.PathLike[str], progress: bool = True,
                       hash_limit_bytes: int = 2 << 30) -> BaseModel:
    """Resolve a registered name (installed on first use), a local directory or a hub id.

    The weights' sha256 comes from the directory's ``aad_kit_model.json`` when present; a
    local directory without one is hashed when its weights total under ``hash_limit_bytes``.
    """
    from aad_kit import models as registry

    name = str(base_model)
    path: Path | None
    if name in registry.REGISTRY:
        path = registry.model_path(name, progress=progress)
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser().resolve()
    else:
        return BaseModel(source=name, path=None, name=name, weights_sha256=None, record=None)
    record = registry.read_record(path)
    sha = record.get("weights_sha256") if record else None
    if sha is None:
        files = registry.weight_files(path)
        if files and sum(f.stat().st_size for f in files) <= hash_limit_bytes:
            sha = registry.combined_sha256(registry.hash_weights(path))
    label = str(record["name"]) if record and record.get("name") else path.name
    return BaseModel(source=str(path), path=path, name=label, weights_sha256=sha, record=record)


# ---------------------------------------------------------------------------- environment


def resolve_device(config: DPOTrainingConfig) -> str:
    import torch

    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={config.device!r} but torch sees no CUDA device")
    return config.device


def resolve_dtype(config: DPOTrainingConfig, device: str) -> str:
    """The dtype rule: CPU float32; GPU bfloat16 where supported, else float32."""
    import torch

    if config.dtype != "auto":
        return config.dtype
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """Without progress: no tqdm bars (transformers, datasets, TRL's precompute), no hub
    progress and transformers logging at error level. Restored afterwards."""
    if progress:
        yield
        return
    import datasets
    from transformers.utils import logging as hf_logging

    old_env = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    ds_bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if hf_bars:
            hf_logging.enable_progress_bar()
        if ds_bars:
            datasets.enable_progress_bars()
        if old_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_env


@contextlib.contextmanager
def _known_warnings() -> Iterator[None]:
    """Silence warnings that are not the user's to fix (library-internal deprecations)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
        warnings.filterwarnings("ignore", message=".*padding_free.*")
        yield


# ---------------------------------------------------------------------------- trainer


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
                  **trl_overrides: Any) -> Any:
    """TRL ``DPOConfig`` for ``config``; ``precompute``: the resolved
    :func:`resolve_precompute` (default: the config's value, None as off); ``trl_overrides``
    are passed through last (an escape hatch for experiments and profiling, not needed for
    normal runs)."""
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
        report_to="none",
        eval_strategy="steps" if config.eval_steps else "no",
        eval_steps=config.eval_steps,
        per_device_eval_batch_size=batch_size,
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
    args = make_dpo_args(config, output_dir, device=device, dtype=dtype,
                         gradient_checkpointing=gc_on, batch_size=batch, progress=progress,
                         precompute=precompute, **overrides)
    train_ds = ds.select_columns(list(PREFERENCE_COLUMNS))
    eval_ds = None
    if eval_dataset is not None and config.eval_steps:
        eval_ds = load_preference_dataset(eval_dataset)
        if validate_preference_dataset(eval_ds) != fmt:
            raise ValueError("the eval dataset must have the training dataset's format")
        eval_ds = eval_ds.select_columns(list(PREFERENCE_COLUMNS))
    elif config.eval_steps:
        notes.append("eval_steps is set but no eval dataset was given: no evaluation")
        args.eval_strategy = "no"
    from aad_kit.training.prefix_sharing import shared_prefix_trainer_class

    with _quiet(progress), _known_warnings():
        trainer = shared_prefix_trainer_class()(
            share_prompt_prefix=sharing,
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
        notes=notes,
    )
    return trainer, setup


# ---------------------------------------------------------------------------- log


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def read_log(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of ``out_dir/training_log.jsonl`` (empty list when absent)."""
    path = Path(out_dir) / LOG_JSONL
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def load_training_log(out_dir: str | os.PathLike[str]) -> Any:
    """The training log of ``out_dir`` as a pandas DataFrame (one row per logged step)."""
    import pandas as pd

    rows = read_log(out_dir)
    cols = list(LOG_COLUMNS) + sorted({k for r in rows for k in r} - set(LOG_COLUMNS))
    return pd.DataFrame(rows, columns=cols)


def _write_log(out: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite both log files from ``rows`` (atomic per file)."""
    tmp = out / (LOG_JSONL + ".tmp")
    tmp.write_text("".join(json.dumps(r, default=_json_default) + "\n" for r in rows), "utf-8")
    os.replace(tmp, out / LOG_JSONL)
    cols = list(LOG_COLUMNS) + sorted({k for r in rows for k in r} - set(LOG_COLUMNS))
    tmp = out / (LOG_CSV + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in cols})
    os.replace(tmp, out / LOG_CSV)


def _make_log_callback(out: Path, rows: list[dict[str, Any]], elapsed_before: float) -> Any:
    from transformers import TrainerCallback

    class _LogCallback(TrainerCallback):
        """Appends a row per logged step (TRL metrics + step time) to the JSONL/CSV log."""

        def __init__(self) -> None:
            self.t_start = time.perf_counter()
            self.t_step: float | None = None
            self.step_times: list[float] = []
            self.summary: dict[str, Any] = {}

        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001
            self.t_step = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            if self.t_step is not None:
                self.step_times.append(time.perf_counter() - self.t_step)

        def on_log(self, args, state, control, logs=None, **kw):  # noqa: ANN001
            logs = dict(logs or {})
            if any(k.startswith("eval_") for k in logs):  # an evaluation on the held-out pairs
                ev = {k: v for k, v in logs.items() if k.startswith("eval_")}
                same = [r for r in rows if r.get("step") == int(state.global_step)]
                if same:
                    same[-1].update(ev)
                else:
                    rows.append({"step": int(state.global_step), **ev})
                _write_log(out, rows)
                return
            if "loss" not in logs:  # the end-of-training summary (train_runtime, ...)
                if "train_runtime" in logs:
                    self.summary = logs
                return
            recent = self.step_times or [float("nan")]
            row = {
                "step": int(state.global_step),
                **{k: v for k, v in logs.items() if k != "step"},
                "step_time_s": round(sum(recent) / len(recent), 4),
                "elapsed_s": round(elapsed_before + time.perf_counter() - self.t_start, 3),
            }
            self.step_times = []
            rows.append(row)
            _write_log(out, rows)

    return _LogCallback()


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
        return f"hf:{self.base_model}@adapter={self.adapter_dir}"

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
) -> TrainingResult:
    """Train a LoRA adapter on ``base_model`` with DPO on ``dataset``; see the module docstring.

    ``eval_dataset``: preference pairs the model does not train on (the pipeline's: pairs from
    held-out settings), evaluated every ``config.eval_steps`` steps.

    ``dataset``: a ``datasets.Dataset`` (or a path / rows, see :func:`load_preference_dataset`)
    in TRL's preference format. ``base_model``: a registered name ("tiny", "smollm2-135m"),
    a local checkpoint directory or a hub id. ``resume``: continue an interrupted (or extend
    a finished) training in ``out_dir``; ``False`` starts over. ``progress``: show tqdm bars.
    ``callbacks``: extra ``transformers.TrainerCallback`` objects (e.g. a benchmark's timer).
    """
    t_call = time.perf_counter()
    config = config or DPOTrainingConfig()
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)

    ds = load_preference_dataset(dataset)
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
    _write_log(out, rows)
    elapsed_before = float(rows[-1]["elapsed_s"]) if rows else 0.0
    log_cb = _make_log_callback(out, rows, elapsed_before)

    import torch

    threads = config.torch_threads or default_num_threads()
    manifest: dict[str, Any] = {}
    with _torch_threads(threads if resolve_device(config) == "cpu" else None):
        trainer, setup = build_dpo_trainer(ds, base, config, out / CHECKPOINT_DIR,
                                           progress=progress, callbacks=[log_cb, *callbacks],
                                           eval_dataset=eval_dataset)
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
            previous_runs=(prior or {}).get("previous_runs", []) + (
                [{k: prior.get(k) for k in ("status", "global_step", "wall_time_s", "created_at")}]
                if prior else []),
        )
        manifest_path = out / MANIFEST
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
            _write_json(manifest_path, manifest)
            raise
        train_s = time.perf_counter() - t_train

    from aad_kit.models import combined_sha256, hash_weights

    step_times = [r["step_time_s"] for r in rows if isinstance(r.get("step_time_s"), (int, float))
                  and r.get("step", 0) > (resumed_from or 0)]
    final = {k: v for k, v in rows[-1].items()} if rows else {}
    wall = time.perf_counter() - t_call
    manifest.update(
        status="complete",
        global_step=int(trainer.state.global_step),
        adapter={"path": str(out / ADAPTER_DIR),
                 "sha256": combined_sha256(hash_weights(out / ADAPTER_DIR))},
        final_metrics=final,
        train_summary=dict(log_cb.summary),
        timing={
            "setup_s": setup.setup_s,
            "train_s": round(train_s, 3),
            "mean_step_s": round(sum(step_times) / len(step_times), 4) if step_times else None,
            "steps_this_call": int(trainer.state.global_step) - (resumed_from or 0),
        },
        wall_time_s=round(wall, 3),
        finished_at=_now(),
    )
    _write_json(manifest_path, manifest)
    global_step = int(trainer.state.global_step)
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
    "BaseModel",
    "CHECKPOINT_DIR",
    "DPOTrainingConfig",
    "LOG_COLUMNS",
    "LOG_CSV",
    "LOG_JSONL",
    "MANIFEST",
    "PREFERENCE_COLUMNS",
    "RESUMABLE_FIELDS",
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
    "train_dpo",
    "validate_preference_dataset",
]
