"""Model backends behind one interface (:class:`aad_kit.llm.base.Sampler`).

* ``hf`` — :class:`~aad_kit.llm.hf.HFSampler`: a local transformers model (+ LoRA adapter).
* ``openai`` — :class:`~aad_kit.llm.openai_compat.OpenAICompatSampler`: vLLM, Ollama,
  llama.cpp server or any OpenAI-compatible endpoint.
* ``replay`` — :class:`~aad_kit.llm.replay.ReplaySampler`: stored completions, no model.

:func:`make_sampler` turns a spec string (``"tiny"``, ``"hf:/dir@adapter=/lora"``,
``"openai:http://127.0.0.1:8000/v1#model"``, ``"replay:file.jsonl"``) into one of them.
Importing this package does not import torch; constructing an ``HFSampler`` does.
"""

from __future__ import annotations

from aad_kit.llm.base import Completion, GenerationConfig, Sampler
from aad_kit.llm.factory import SPEC_FORMS, make_sampler
from aad_kit.llm.hf import HFSampler
from aad_kit.llm.openai_compat import BackendError, BackendUnavailable, OpenAICompatSampler
from aad_kit.llm.replay import ReplaySampler

__all__ = [
    "Sampler",
    "GenerationConfig",
    "Completion",
    "make_sampler",
    "SPEC_FORMS",
    "HFSampler",
    "OpenAICompatSampler",
    "ReplaySampler",
    "BackendError",
    "BackendUnavailable",
]
