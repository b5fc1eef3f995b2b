"""Where and how a DPO training runs: device and dtype (the training purpose of the one rule
in :mod:`aad_kit.llm.device`), torch's thread count for the call, and quiet output."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aad_kit.llm.device import default_dtype
from aad_kit.llm.device import resolve_device as _resolve_device

if TYPE_CHECKING:  # pragma: no cover
    from aad_kit.training.config import DPOTrainingConfig


def world_size() -> int:
    """Processes training together: ``WORLD_SIZE`` as ``accelerate launch`` / ``torchrun`` set
    it (1 for a plain call)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def is_main_process() -> bool:
    """Whether this process writes the run's files (the manifest, the log): rank 0 only, so
    the processes of one multi-process training do not overwrite each other."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def resolve_device(config: DPOTrainingConfig) -> str:
    """``config.device`` resolved ("auto": cuda if available); a cuda device torch cannot
    see raises ``RuntimeError``."""
    return _resolve_device(config.device, check=True)


def resolve_dtype(config: DPOTrainingConfig, device: str) -> str:
    """The dtype rule (:func:`aad_kit.llm.device.default_dtype`, purpose "training"): CPU
    float32; GPU bfloat16 where supported, else float32. ``config.dtype`` other than
    "auto" wins."""
    if config.dtype != "auto":
        return config.dtype
    return default_dtype(device, "training")


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


__all__ = ["resolve_device", "resolve_dtype"]
