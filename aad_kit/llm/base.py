"""The one sampler interface every model backend implements.

Prompts go in as *user prompt strings* (built by :mod:`aad_kit.prompts`); each backend wraps
them with :data:`aad_kit.prompts.SYSTEM_PROMPT` through the model's chat template when it has
one, so that search-time prompts and DPO training prompts are the same conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class GenerationConfig:
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 512
    seed: int = 0  # same seed + same prompts + same model -> same completions (backend permitting)


def row_seed(seed: int, row: int) -> int:
    """The sampling seed of row ``row`` of a call made with ``GenerationConfig.seed = seed``.

    Every backend that takes per-request seeds uses it, so identical prompts in one call (i1
    prompts, or two parents drawn alike) still get different samples, and the same call is
    reproducible. A 31-bit value: servers and C libraries take it as a signed int.
    """
    import hashlib

    digest = hashlib.sha256(f"aad-kit-row-seed:{int(seed)}:{int(row)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    latency_s: float = 0.0  # wall time of the batch call this completion came from


@runtime_checkable
class Sampler(Protocol):
    """Prompts in, ``n`` completions per prompt out."""

    model_id: str

    def sample(
        self, prompts: Sequence[str], n: int = 1, config: GenerationConfig = GenerationConfig()
    ) -> list[list[Completion]]:
        """``result[i][j]`` is the j-th completion of ``prompts[i]``."""
        ...

    def info(self) -> dict[str, Any]:
        """What to record in a run manifest: backend, model id, weights sha256, adapter, ..."""
        ...
