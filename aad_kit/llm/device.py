"""The one device / dtype / thread rule for everything that runs a torch model.

Two purposes share the device rule and differ in the dtype they pick on a GPU:

================  ===========  ==========================================  =================
purpose           CPU          CUDA GPU with bf16                          CUDA GPU without
================  ===========  ==========================================  =================
``"training"``    float32      bfloat16 (frozen base; LoRA stays float32)  float32
``"sampling"``    float32      bfloat16                                    float16
================  ===========  ==========================================  =================

Why they differ:

* **Training** (stage 5, :mod:`aad_kit.training`). DPO learns from *differences* of summed
  log-probs between the policy and the reference, and those are tiny at first: after one
  Adam-sized step the true log-ratios were ~0.005 nats, bf16-autocast ones +-0.3..1.0 nats
  (SmolLM2-135M; the step-2 loss 0.79 instead of 0.48). So the CPU trains in float32 even where
  bf16 would be faster (AMX-BF16: ~15 vs ~26 CPU-seconds a step; on CPUs without native bf16
  it is slower too), which TRL's own default (bf16 autocast everywhere) does not. A GPU with
  bf16 loads the frozen base weights in bfloat16 and steps under bf16 autocast; a GPU without
  bf16 falls back to float32, because fp16 would need loss scaling. ``dtype="bfloat16"`` in
  :class:`~aad_kit.training.DPOTrainingConfig` opts in on a CPU.
* **Sampling** (:class:`~aad_kit.llm.hf.HFSampler`). Generation has no gradients and no
  log-ratio to protect, so a GPU without bf16 samples in float16 (half the memory of float32,
  no loss to scale). The CPU stays float32: ``dtype="bfloat16"`` (or ``$AAD_KIT_HF_DTYPE``) on
  CPUs with AMX/AVX512-BF16 sampled SmolLM2-135M about 1.8x faster at batch 8, at the cost of
  bf16 rounding (``benchmarks/sampling_engines.py``).

Device: ``"auto"`` (or None) is ``cuda`` when torch sees a CUDA device, else ``cpu``.
Threads (:func:`default_num_threads`): every core this process may use, or
``$AAD_KIT_TORCH_THREADS``.
"""

from __future__ import annotations

import os

PURPOSES = ("training", "sampling")


def default_num_threads() -> int:
    """Cores this process may run on (affinity-aware), or ``$AAD_KIT_TORCH_THREADS``."""
    env = os.environ.get("AAD_KIT_TORCH_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def resolve_device(device: str | None = "auto", *, check: bool = False) -> str:
    """``"auto"``/None: cuda if available, else cpu; anything else is returned as given.
    ``check``: a ``cuda`` device torch cannot see raises ``RuntimeError`` (training's rule:
    fail before loading anything rather than on the first step)."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if check and device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but torch sees no CUDA device")
    return device


def default_dtype(device: str, purpose: str) -> str:
    """The dtype name for ``purpose`` ("training" or "sampling") on ``device``; the table
    and the reasons are in the module docstring."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    if not device.startswith("cuda"):
        return "float32"
    import torch

    if torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32" if purpose == "training" else "float16"


__all__ = ["PURPOSES", "default_dtype", "default_num_threads", "resolve_device"]
