"""``make_sampler(spec)``: one entry point from a spec string to a :class:`Sampler`.

Accepted specs (keyword arguments go to the backend's constructor):

==========================================  ===============================================
``tiny``, ``qwen2.5-coder-0.5b``, ...        a model registered in :mod:`aad_kit.models`
                                             (installed into the cache on first use), on the
                                             default engine (:func:`default_engine`)
``llamacpp:NAME`` / ``llamacpp:/path``       llama.cpp on a registered model's GGUF, a
                                             ``.gguf`` file or a directory holding one
``hf:/path/to/dir``                          a local Hugging Face checkpoint directory
``hf:NAME``                                  a registered name, or a hub id where a hub is reachable
``...@adapter=/path/to/lora``                any hf form plus a PEFT LoRA adapter directory
                                             (or pass ``adapter_path=...``)
``openai:http://127.0.0.1:8000/v1#model``    an OpenAI-compatible server and its model name
``replay:/path/to/file.jsonl``               replay stored completions
``/path/to/dir``                             an existing directory: same as ``hf:/path/to/dir``
==========================================  ===============================================

The grammar (scheme, target, ``@adapter=``) is :mod:`aad_kit.llm.spec`'s, shared with every
other place that reads or writes a spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aad_kit.llm.base import Sampler
from aad_kit.llm.spec import ModelSpec, parse_spec

SPEC_FORMS = (
    "tiny | smollm2-135m | qwen2.5-coder-0.5b | qwen2.5-coder-1.5b (registered models: "
    "aad_kit.models; engine: $AAD_KIT_ENGINE or the fastest installed)",
    "llamacpp:REGISTERED_NAME  or  llamacpp:/path/to/model.gguf (also with @adapter=)",
    "hf:/path/to/model_dir  or  hf:REGISTERED_NAME  or  hf:HUB_ID (needs hub access)",
    "<any hf form>@adapter=/path/to/lora_adapter",
    "openai:http://HOST:PORT/v1#MODEL_NAME",
    "replay:/path/to/completions.jsonl",
    "/path/to/existing/model_dir",
)


ENGINES = ("llamacpp", "hf")


def default_engine() -> str:
    """The engine a registered model samples on: ``$AAD_KIT_ENGINE`` if set, else llama.cpp
    on a CPU-only machine where llama-cpp-python is installed (the fastest engine measured
    there, base and LoRA-tuned alike: ``benchmarks/RESULTS.md``), else hf (transformers;
    the GPU path)."""
    import os

    env = os.environ.get("AAD_KIT_ENGINE", "").strip()
    if env:
        if env not in ENGINES:
            raise ValueError(f"AAD_KIT_ENGINE must be one of {', '.join(ENGINES)}, got {env!r}")
        return env
    from aad_kit.llm.llamacpp import llama_cpp_available

    try:
        import torch

        if torch.cuda.is_available():
            return "hf"
    except ImportError:  # pragma: no cover - torch is a dependency of the llm extra
        pass
    return "llamacpp" if llama_cpp_available() else "hf"


def _split_adapter(parsed: ModelSpec, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The target of a parsed local spec, and the backend kwargs with its adapter in them."""
    if parsed.adapter is None:
        return parsed.target, kwargs
    if kwargs.get("adapter_path"):
        raise ValueError("adapter given twice (in the spec and as adapter_path=)")
    return parsed.target, {**kwargs, "adapter_path": parsed.adapter}


def _unknown(spec: str) -> ValueError:
    from aad_kit.models import MODEL_NAMES

    forms = "\n  ".join(SPEC_FORMS)
    return ValueError(
        f"unknown sampler spec {spec!r}. Registered models: {', '.join(MODEL_NAMES)}. "
        f"Accepted forms:\n  {forms}"
    )


def make_sampler(spec: str | Sampler, **kwargs: Any) -> Sampler:
    """Build the sampler ``spec`` names (see the module docstring for the forms)."""
    if not isinstance(spec, str):
        if isinstance(spec, Sampler):
            return spec
        raise TypeError(f"make_sampler needs a spec string or a Sampler, got {type(spec).__name__}")
    from aad_kit.models import REGISTRY

    spec = spec.strip()
    parsed = parse_spec(spec)  # the one spec grammar (aad_kit.llm.spec)
    scheme, rest = parsed.scheme, parsed.target
    if scheme == "hf":
        from aad_kit.llm.hf import HFSampler

        target, kw = _split_adapter(parsed, kwargs)
        if not target:
            raise _unknown(spec)
        return HFSampler(target, **kw)
    if scheme == "llamacpp":
        from aad_kit.llm.llamacpp import LlamaCppSampler

        target, kw = _split_adapter(parsed, kwargs)
        if not target:
            raise _unknown(spec)
        return LlamaCppSampler(target, **_backend_kwargs("llamacpp", kw))
    if scheme == "openai":
        from aad_kit.llm.openai_compat import OpenAICompatSampler

        url, _, model = rest.partition("#")
        model = model or kwargs.pop("model", "")
        if not url.startswith(("http://", "https://")) or not model:
            raise ValueError(
                f"bad openai spec {spec!r}: use openai:http://HOST:PORT/v1#MODEL_NAME"
            )
        return OpenAICompatSampler(url, model, **_backend_kwargs("openai", kwargs))
    if scheme == "replay":
        from aad_kit.llm.replay import ReplaySampler

        if not rest:
            raise _unknown(spec)
        kw = {k: v for k, v in kwargs.items() if k == "model_id"}  # nothing else applies to a replay
        return ReplaySampler(Path(rest).expanduser(), **kw)

    target, kw = _split_adapter(parsed, kwargs)
    if target in REGISTRY:
        if default_engine() == "llamacpp":
            from aad_kit.llm.llamacpp import LlamaCppSampler

            return LlamaCppSampler(target, **_backend_kwargs("llamacpp", kw))
        from aad_kit.llm.hf import HFSampler

        return HFSampler(target, **kw)
    if target and Path(target).expanduser().is_dir():
        from aad_kit.llm.hf import HFSampler

        return HFSampler(target, **kw)
    raise _unknown(spec)


# The stages pass the hf backend's keyword arguments to whatever backend a spec names: what
# each other backend calls them, and which mean nothing there (stage 2 failed with a TypeError
# for openai: specs, issue 17, and for explicit llamacpp: specs).
_RENAMED: dict[str, dict[str, str]] = {
    "llamacpp": {"batch_size": "parallel"},  # sequences decoded together
    "openai": {"batch_size": "max_concurrency"},  # requests kept in flight
}
_UNUSED: dict[str, frozenset[str]] = {
    "llamacpp": frozenset({"device", "dtype", "merge_adapter"}),
    "openai": frozenset({"device", "dtype", "merge_adapter", "progress"}),
}


def _backend_kwargs(backend: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` in ``backend``'s own names; a backend's own name, given too, wins."""
    kw = dict(kwargs)
    for generic, own in _RENAMED[backend].items():
        if generic in kw:
            kw.setdefault(own, kw.pop(generic))
    for name in _UNUSED[backend]:
        kw.pop(name, None)
    return kw


__all__ = ["ENGINES", "SPEC_FORMS", "default_engine", "make_sampler"]
