"""Backend ``hf``: a local transformers causal LM (optionally with a PEFT LoRA adapter).

* Model: a directory holding a Hugging Face checkpoint, a name registered in
  :mod:`aad_kit.models` (installed into the cache on first use), or — with hub access — a
  hub model id.
* Prompts are user prompts; they are wrapped as ``system`` (:data:`aad_kit.prompts.SYSTEM_PROMPT`)
  + ``user`` through the tokenizer's chat template when it has one, else used as plain text.
* Batched sampling with left padding (``pad = eos`` where the tokenizer has no pad token);
  ``n`` completions per prompt are repeated rows, split into micro-batches of at most
  ``batch_size`` rows.
* Seeded: ``torch.manual_seed(config.seed)`` once before the first micro-batch, so the same
  prompts, ``n``, config, ``batch_size`` and model give the same completions. Two calls with
  the same seed return the same text: callers wanting fresh samples vary ``config.seed``.
* Sampling uses only ``temperature`` and ``top_p`` (``top_k`` disabled), as the OpenAI API
  does; ``temperature == 0`` means greedy decoding.
* CPU threads: ``torch.set_num_threads`` is set to the cores this process may use unless
  ``num_threads`` (or ``$AAD_KIT_TORCH_THREADS``) says otherwise. Why: the kit exports
  ``OMP_NUM_THREADS=1`` for test runs and evaluator worker processes (so they do not
  oversubscribe the machine), and torch would inherit that and generate on one core; the
  search alternates sampling and evaluation, so while the model runs it should own the CPU.
  The setting is process-wide (torch has no per-model thread count).
* ``cuda`` when available (bf16 where supported, else fp16), else ``cpu`` in fp32: the
  sampling rule of :func:`aad_kit.llm.device.default_dtype`. ``dtype`` (or
  ``$AAD_KIT_HF_DTYPE``) overrides: on CPUs with AMX/AVX512-BF16 (recent Xeons)
  ``"bfloat16"`` sampled SmolLM2-135M about 1.8x faster at batch 8 than fp32 (2 cores,
  488-token prompt, 200 new tokens: 117.7 vs 64.7 tokens/s end to end; no gain at batch 1;
  ``benchmarks/sampling_engines.py``), at the cost of bf16 rounding; fp32 stays the default.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aad_kit.llm.base import Completion, GenerationConfig
from aad_kit.llm.device import default_dtype, default_num_threads, resolve_device
from aad_kit.prompts import as_messages

_DEFAULT_CONFIG = GenerationConfig()  # frozen: safe as a shared default
_DTYPES = ("float32", "bfloat16", "float16")


def _adapter_sha256(adapter_dir: Path) -> str | None:
    from aad_kit.models import adapter_sha256

    return adapter_sha256(adapter_dir)


@contextlib.contextmanager
def _quiet_loading(quiet: bool) -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bars (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if quiet and was:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was:
            hf_logging.enable_progress_bar()


class HFSampler:
    """Sampler over a local transformers causal LM; see the module docstring."""

    backend = "hf"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        adapter_path: str | os.PathLike[str] | None = None,
        batch_size: int = 8,
        device: str | None = None,
        dtype: str | None = None,
        num_threads: int | None = None,
        model_id: str | None = None,
        merge_adapter: bool = True,
        progress: bool = False,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from aad_kit import models as registry

        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.batch_size = int(batch_size)
        name = str(model)
        self._record: dict[str, Any] | None = None
        if name in registry.REGISTRY:
            path: Path | None = registry.model_path(name, progress=progress)
            default_id = name
        elif Path(name).expanduser().is_dir():
            path = Path(name).expanduser().resolve()
            default_id = path.name
        else:  # a hub id: works where the hub is reachable, fails clearly offline
            path = None
            default_id = name
        if path is not None:
            self._record = registry.read_record(path)
            if self._record and self._record.get("name"):
                default_id = str(self._record["name"])
        self.model_path = path
        self._source = str(path) if path is not None else name

        self.device = resolve_device(device or "auto")
        dtype = dtype or os.environ.get("AAD_KIT_HF_DTYPE") or None
        if dtype is not None and dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if dtype is None:  # the sampling rule of aad_kit.llm.device
            dtype = default_dtype(self.device, "sampling")
        self.dtype = dtype
        self.num_threads: int | None = None
        if self.device == "cpu":
            self.num_threads = int(num_threads) if num_threads else default_num_threads()
            torch.set_num_threads(self.num_threads)

        t0 = time.perf_counter()
        with _quiet_loading(not progress):
            tok, lm = self._load(AutoTokenizer, AutoModelForCausalLM, getattr(torch, dtype))
        self.tokenizer = tok

        self.adapter_path = Path(adapter_path).expanduser().resolve() if adapter_path else None
        self.adapter_sha256: str | None = None
        if self.adapter_path is not None:
            from peft import PeftModel

            if not self.adapter_path.is_dir():
                raise FileNotFoundError(f"adapter directory not found: {self.adapter_path}")
            with _quiet_loading(not progress), warnings.catch_warnings():
                # peft 0.21 calls a transformers alias deprecated in 5.x; not ours to fix
                warnings.filterwarnings("ignore", category=FutureWarning,
                                        message=".*is_gradient_checkpointing.*")
                lm = PeftModel.from_pretrained(lm, str(self.adapter_path))
                if merge_adapter:  # same outputs, no per-layer LoRA overhead while sampling
                    lm = lm.merge_and_unload()
            self.adapter_sha256 = _adapter_sha256(self.adapter_path)
            default_id = f"{default_id}+{self.adapter_path.name}"
        self.merged_adapter = bool(self.adapter_path and merge_adapter)
        lm.to(self.device)
        lm.eval()
        self.model = lm
        self.load_seconds = time.perf_counter() - t0
        self.model_id = model_id or default_id

        eos = lm.generation_config.eos_token_id
        if eos is None:
            eos = tok.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
        if tok.eos_token_id is not None:
            self._eos_ids.add(tok.eos_token_id)
        self._weights_sha256: str | None = (
            registry.recorded_weights_sha256(path) if path is not None else None
        )

    def _load(self, tok_cls: Any, lm_cls: Any, torch_dtype: Any) -> tuple[Any, Any]:
        tok = tok_cls.from_pretrained(self._source)
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok, lm_cls.from_pretrained(self._source, dtype=torch_dtype)

    # ------------------------------------------------------------------ prompts

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def format_prompt(self, prompt: str) -> str:
        """The exact text the model is given for user prompt ``prompt``."""
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(
                as_messages(prompt), tokenize=False, add_generation_prompt=True
            )
        return prompt

    # ------------------------------------------------------------------ sampling

    def sample(
        self, prompts: Sequence[str], n: int = 1, config: GenerationConfig = _DEFAULT_CONFIG
    ) -> list[list[Completion]]:
        import torch

        if n < 1:
            raise ValueError("n must be >= 1")
        prompts = list(prompts)
        results: list[list[Completion]] = [[] for _ in prompts]
        if not prompts:
            return results
        texts = [self.format_prompt(p) for p in prompts]
        rows = [i for i in range(len(prompts)) for _ in range(n)]  # prompt index per row

        tok = self.tokenizer
        do_sample = config.temperature > 0
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": int(config.max_new_tokens),
            "do_sample": do_sample,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": sorted(self._eos_ids) or None,
        }
        if do_sample:
            gen_kwargs.update(temperature=float(config.temperature), top_p=float(config.top_p),
                              top_k=0)
        else:  # greedy: clear sampling knobs a checkpoint's generation_config may set
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)

        torch.manual_seed(config.seed)
        for start in range(0, len(rows), self.batch_size):
            batch_rows = rows[start:start + self.batch_size]
            enc = tok([texts[i] for i in batch_rows], return_tensors="pt", padding=True,
                      add_special_tokens=not self.has_chat_template)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
            width = enc["input_ids"].shape[1]
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = self.model.generate(**enc, **gen_kwargs)
            latency = time.perf_counter() - t0
            for r, row_idx in enumerate(batch_rows):
                gen = out[r, width:].tolist()
                stop_at = next((k for k, t in enumerate(gen) if t in self._eos_ids), None)
                if stop_at is None:  # no eos: cut off by max_new_tokens (or the context)
                    ids, finish, n_tok = gen, "length", len(gen)
                else:
                    ids, finish, n_tok = gen[:stop_at], "stop", stop_at + 1
                results[row_idx].append(Completion(
                    text=tok.decode(ids, skip_special_tokens=True),
                    prompt_tokens=int(prompt_lens[r]),
                    completion_tokens=n_tok,
                    finish_reason=finish,
                    latency_s=latency,
                ))
        return results

    # ------------------------------------------------------------------ manifest

    @property
    def weights_sha256(self) -> str | None:
        """From the models registry record when known, else hashed once on first request."""
        if self._weights_sha256 is None and self.model_path is not None:
            from aad_kit.models import combined_sha256, hash_weights

            self._weights_sha256 = combined_sha256(hash_weights(self.model_path))
        return self._weights_sha256

    def info(self) -> dict[str, Any]:
        import transformers

        rec = self._record or {}
        return {
            "backend": self.backend,
            "model_id": self.model_id,
            "model_path": str(self.model_path) if self.model_path else None,
            "model_source": self._source,
            "weights_sha256": self.weights_sha256,
            "registry_name": rec.get("name"),
            "registry_source": rec.get("source"),
            "gguf_sha256": rec.get("gguf_sha256"),
            "adapter_path": str(self.adapter_path) if self.adapter_path else None,
            "adapter_sha256": self.adapter_sha256,
            "adapter_merged": self.merged_adapter,
            "dtype": self.dtype,
            "device": self.device,
            "num_threads": self.num_threads,
            "batch_size": self.batch_size,
            "chat_template": self.has_chat_template,
            "transformers_version": transformers.__version__,
        }

    def __repr__(self) -> str:
        return f"HFSampler({self.model_id!r}, device={self.device!r}, batch_size={self.batch_size})"
