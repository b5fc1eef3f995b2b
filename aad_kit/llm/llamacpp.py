"""Backend ``llamacpp``: llama.cpp on a model's GGUF file, many sequences decoded at once.

Why this backend exists: on a CPU without AMX/AVX512-BF16 the packaged models' quantised
GGUF files decode 2-4x faster under llama.cpp than the fp32 checkpoint does under
transformers (figures and commands: ``benchmarks/RESULTS.md``), and that is where the kit
spends most of its time.

* Model: a registered name (its installed ``model.gguf``), or a path to a ``.gguf`` file or to
  a directory holding one. Prompts are formatted and tokenised with the model's Hugging Face
  tokenizer (the install directory's, else the one stored in the GGUF), so the token ids are
  exactly those the DPO trainer sees.
* LoRA: ``adapter_path`` is a PEFT adapter directory (what stage 5 writes); it is exported once
  to a GGUF LoRA file beside it (:func:`aad_kit.gguf_io.export_lora_gguf`) and applied by
  llama.cpp at its trained scale, so the tuned model samples through the same engine.
* Continuous batching: up to ``parallel`` rows decode together in one ``llama_decode`` call;
  a finished row's slot takes the next row at once. Prefill is shared: the KV cache of the
  last prompt is kept in a reserved sequence, and a new row copies the longest common prefix
  from it (n samples of one prompt prefill once; prompts sharing a task description reuse it).
* Seeds: row ``r`` of a call (prompt ``i``, sample ``j``, ``r = i * n + j``) samples with
  :func:`aad_kit.llm.base.row_seed` ``(config.seed, r)``: identical prompts in one call get
  different samples, and the same call gives the same text again.
* Stops: end-of-generation token, ``max_new_tokens`` (``finish_reason="length"``), and, with
  ``stop_at_fence`` (default), as soon as the first fenced code block of the answer closes —
  everything the parser reads is already there, and small models often ramble on after it.
* Threads: :func:`aad_kit.llm.hf.default_num_threads` unless ``num_threads`` says otherwise.
* ``ignore_eos`` (benchmarks only; default off, and no stage sets it): end-of-generation tokens
  get a logit bias of -inf, as llama.cpp's own ``--ignore-eos`` does and as ``min_new_tokens``
  does on the hf side, so every row runs to ``max_new_tokens`` (or the fence stop, when on)
  and engines compare at a fixed length (``benchmarks/sampler_speed.py``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aad_kit.llm.base import Completion, GenerationConfig, row_seed
from aad_kit.prompts import as_messages

_DEFAULT_CONFIG = GenerationConfig()
# A complete fenced block: an opening fence line, some body, a closing fence on its own line.
_CLOSED_FENCE = re.compile(r"```[^\n]*\n.*?\n[ \t]*```", re.S)


def llama_cpp_available() -> bool:
    """True when llama-cpp-python imports (it is compiled at install time; see README)."""
    try:
        import llama_cpp  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken build is as good as none
        return False
    return True


def cpu_has_amx() -> bool:
    """llama.cpp 0.3.36's AMX matmuls crash on some quantisations (llama.cpp #20824), so the
    repacked-weight buffers are turned off on AMX CPUs only; elsewhere they are the fast path."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return " amx_" in f.read()
    except OSError:
        return False


def fence_closed(text: str) -> bool:
    return _CLOSED_FENCE.search(text) is not None


@dataclass
class _Row:
    index: int  # row number in the call
    prompt: int  # prompt number in the call
    tokens: list[int]  # prompt token ids
    slot: int = -1
    pos: int = 0
    sampler: Any = None
    generated: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    started: float = 0.0


class LlamaCppSampler:
    """Sampler over llama.cpp; see the module docstring."""

    backend = "llamacpp"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        adapter_path: str | os.PathLike[str] | None = None,
        parallel: int = 8,
        n_ctx: int | None = None,
        num_threads: int | None = None,
        model_id: str | None = None,
        stop_at_fence: bool = True,
        ignore_eos: bool = False,
        progress: bool = False,
    ) -> None:
        import llama_cpp as lib

        from aad_kit import models as registry
        from aad_kit.llm.hf import default_num_threads

        if parallel < 1:
            raise ValueError("parallel must be >= 1")
        self.lib = lib
        self.parallel = int(parallel)
        self.stop_at_fence = bool(stop_at_fence)
        self.ignore_eos = bool(ignore_eos)
        name = str(model)
        self._record: dict[str, Any] | None = None
        if name in registry.REGISTRY:
            model_dir = registry.model_path(name, progress=progress, need=("gguf",))
            gguf_path = registry.gguf_file(model_dir)
            self._record = registry.read_record(model_dir)
            default_id = name
        else:
            p = Path(name).expanduser().resolve()
            if p.is_dir():
                model_dir, gguf_path = p, registry.gguf_file(p)
                self._record = registry.read_record(p)
                default_id = str((self._record or {}).get("name") or p.name)
            elif p.is_file() and p.suffix == ".gguf":
                model_dir, gguf_path, default_id = None, p, p.stem
            else:
                raise FileNotFoundError(
                    f"llamacpp backend: {name!r} is neither a registered model, a .gguf file "
                    "nor a directory holding model.gguf"
                )
        self.gguf_path = gguf_path
        self.model_dir = model_dir
        self.tokenizer = _load_tokenizer(model_dir, gguf_path)
        self.num_threads = int(num_threads) if num_threads else default_num_threads()

        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        _silence_llama_log(lib)
        lib.llama_backend_init()
        t0 = time.perf_counter()
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = 0
        self.extra_bufts = not cpu_has_amx()
        mparams.use_extra_bufts = self.extra_bufts
        self._model = lib.llama_model_load_from_file(str(gguf_path).encode(), mparams)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {gguf_path}")
        self._vocab = lib.llama_model_get_vocab(self._model)
        self._n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        self._eog_bias: Any = None  # ignore_eos: (llama_logit_bias * k) masking every EOG token
        if self.ignore_eos:
            eog = [t for t in range(self._n_vocab) if lib.llama_vocab_is_eog(self._vocab, t)]
            self._eog_bias = (lib.llama_logit_bias * len(eog))(
                *(lib.llama_logit_bias(t, float("-inf")) for t in eog))
        self.n_ctx_train = int(lib.llama_model_n_ctx_train(self._model))
        self.n_ctx = int(n_ctx) if n_ctx else min(self.n_ctx_train, 4096 * self.parallel, 32768)

        self.adapter_path = Path(adapter_path).expanduser().resolve() if adapter_path else None
        self.adapter_sha256: str | None = None
        self.adapter_gguf: Path | None = None
        self._adapter = None
        if self.adapter_path is not None:
            from aad_kit.gguf_io import export_lora_gguf
            from aad_kit.models import adapter_sha256

            if not self.adapter_path.is_dir():
                raise FileNotFoundError(f"adapter directory not found: {self.adapter_path}")
            self.adapter_gguf = export_lora_gguf(self.adapter_path, gguf_path)
            self._adapter = lib.llama_adapter_lora_init(self._model, str(self.adapter_gguf).encode())
            if not self._adapter:
                raise RuntimeError(f"llama.cpp could not load the LoRA adapter {self.adapter_gguf}")
            self.adapter_sha256 = adapter_sha256(self.adapter_path)
            default_id = f"{default_id}+{self.adapter_path.name}"
        self.model_id = model_id or default_id

        self._ctx = self._new_context()
        self._cache_seq = self.parallel  # the reserved sequence holding the last prompt's KV
        self._cache_tokens: list[int] = []
        self._batch = lib.llama_batch_init(max(512, self.parallel), 0, 2)
        self._piece = ctypes.create_string_buffer(256)
        self.load_seconds = time.perf_counter() - t0
        self._weights_sha256 = None

    # ------------------------------------------------------------------ setup

    def _new_context(self) -> Any:
        lib = self.lib
        p = lib.llama_context_default_params()
        p.n_ctx = self.n_ctx
        p.n_batch = 512
        p.n_ubatch = 512
        p.n_seq_max = self.parallel + 1
        p.n_threads = p.n_threads_batch = self.num_threads
        p.kv_unified = True  # sequences share cells: copying a prompt's KV is free
        ctx = lib.llama_init_from_model(self._model, p)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {self.n_ctx} tokens")
        if self._adapter is not None:
            adapters = (lib.llama_adapter_lora_p_ctypes * 1)(self._adapter)
            scales = (ctypes.c_float * 1)(1.0)
            if lib.llama_set_adapters_lora(ctx, adapters, 1, scales) != 0:
                raise RuntimeError("llama.cpp could not apply the LoRA adapter")
        return ctx

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def format_prompt(self, prompt: str) -> str:
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(
                as_messages(prompt), tokenize=False, add_generation_prompt=True
            )
        return prompt

    def _prompt_ids(self, prompt: str) -> list[int]:
        text = self.format_prompt(prompt)
        return list(self.tokenizer(text, add_special_tokens=not self.has_chat_template)["input_ids"])

    # ------------------------------------------------------------------ decoding primitives

    def _decode(self, entries: Sequence[tuple[int, int, Sequence[int], bool]]) -> None:
        """One ``llama_decode`` of ``(token, pos, seq_ids, want_logits)`` entries."""
        b = self._batch
        for i, (tok, pos, seqs, logits) in enumerate(entries):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = len(seqs)
            for k, s in enumerate(seqs):
                b.seq_id[i][k] = s
            b.logits[i] = logits
        b.n_tokens = len(entries)
        rc = self.lib.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} (context of {self.n_ctx} tokens full?)")

    def _new_sampler(self, config: GenerationConfig, seed: int) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if self._eog_bias is not None and len(self._eog_bias):  # ignore_eos; copied by llama.cpp
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_logit_bias(
                self._n_vocab, len(self._eog_bias), self._eog_bias))
        if config.temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        else:
            if config.top_p < 1.0:
                lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(float(config.top_p), 1))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(float(config.temperature)))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(int(seed) & 0xFFFFFFFF))
        return chain

    def _start_row(self, row: _Row, slot: int) -> int:
        """Put ``row``'s prompt into ``slot`` (reusing the cached prefix) and sample its first
        token; returns that token."""
        lib = self.lib
        mem = lib.llama_get_memory(self._ctx)
        toks = row.tokens
        common = 0
        for a, c in zip(toks, self._cache_tokens, strict=False):
            if a != c:
                break
            common += 1
        common = min(common, len(toks) - 1)  # the last prompt token is re-run for its logits
        lib.llama_memory_seq_rm(mem, slot, -1, -1)
        lib.llama_memory_seq_rm(mem, self._cache_seq, common, -1)
        if common:
            lib.llama_memory_seq_cp(mem, self._cache_seq, slot, 0, common)
        rest = list(range(common, len(toks)))
        chunk = self._batch_capacity()
        for start in range(0, len(rest), chunk):
            part = rest[start:start + chunk]
            self._decode([(toks[p], p, (slot, self._cache_seq), p == len(toks) - 1) for p in part])
        self._cache_tokens = list(toks)
        row.slot, row.pos = slot, len(toks)
        last_index = (len(rest) - 1) % chunk
        return int(lib.llama_sampler_sample(row.sampler, self._ctx, last_index))

    def _batch_capacity(self) -> int:
        return max(512, self.parallel)

    def _piece_bytes(self, token: int) -> bytes:
        n = self.lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        if n < 0:  # buffer too small
            self._piece = ctypes.create_string_buffer(-n + 1)
            n = self.lib.llama_token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        return self._piece.raw[:max(n, 0)]

    # ------------------------------------------------------------------ sampling

    def sample(
        self, prompts: Sequence[str], n: int = 1, config: GenerationConfig = _DEFAULT_CONFIG
    ) -> list[list[Completion]]:
        if n < 1:
            raise ValueError("n must be >= 1")
        prompts = list(prompts)
        results: list[list[Completion | None]] = [[None] * n for _ in prompts]
        if not prompts:
            return []
        ids = [self._prompt_ids(p) for p in prompts]
        max_new = int(config.max_new_tokens)
        longest = max(len(t) for t in ids)
        if longest + max_new > self.n_ctx:
            raise ValueError(
                f"prompt of {longest} tokens + max_new_tokens {max_new} exceed the llama.cpp "
                f"context of {self.n_ctx} tokens"
            )
        pending = deque(
            _Row(index=i * n + j, prompt=i, tokens=ids[i]) for i in range(len(prompts)) for j in range(n)
        )
        active: dict[int, _Row] = {}
        free = list(range(self.parallel))
        current: dict[int, int] = {}  # slot -> token to feed next
        t_call = time.perf_counter()
        lib = self.lib
        mem = lib.llama_get_memory(self._ctx)
        # Budget of KV cells: the cached prompt plus, per active row, its unshared tokens.
        try:
            while pending or active:
                while pending and free and self._fits(active, pending[0], max_new):
                    row = pending.popleft()
                    row.sampler = self._new_sampler(config, row_seed(config.seed, row.index))
                    row.started = time.perf_counter()
                    slot = free.pop(0)
                    tok = self._start_row(row, slot)
                    active[slot] = row
                    if self._accept(row, tok, max_new):
                        current[slot] = tok
                    else:
                        self._finish(row, results, free, active, current, mem, t_call)
                if not active:
                    if pending:  # nothing fits even alone: cannot happen after the check above
                        raise RuntimeError("llama.cpp context too small for one row")
                    break
                slots = sorted(current)
                self._decode([(current[s], active[s].pos, (s,), True) for s in slots])
                for i, s in enumerate(slots):
                    row = active[s]
                    row.pos += 1
                    tok = int(lib.llama_sampler_sample(row.sampler, self._ctx, i))
                    if self._accept(row, tok, max_new):
                        current[s] = tok
                    else:
                        self._finish(row, results, free, active, current, mem, t_call)
        finally:
            for row in list(active.values()) + list(pending):
                if row.sampler is not None:
                    lib.llama_sampler_free(row.sampler)
                    row.sampler = None
        return [[c for c in per if c is not None] for per in results]  # type: ignore[misc]

    def _fits(self, active: dict[int, _Row], row: _Row, max_new: int) -> bool:
        used = len(self._cache_tokens) + sum(len(r.tokens) + max_new for r in active.values())
        return used + len(row.tokens) + max_new <= self.n_ctx

    def _accept(self, row: _Row, tok: int, max_new: int) -> bool:
        """Record ``tok`` for ``row``; False when the row is finished."""
        if self.lib.llama_vocab_is_eog(self._vocab, tok):
            row.generated.append(tok)
            row.finish = "stop"  # type: ignore[attr-defined]
            row.eog = True  # type: ignore[attr-defined]
            return False
        row.generated.append(tok)
        row.text.extend(self._piece_bytes(tok))
        if self.stop_at_fence and fence_closed(row.text.decode("utf-8", "ignore")):
            row.finish = "stop"  # type: ignore[attr-defined]
            return False
        if len(row.generated) >= max_new:
            row.finish = "length"  # type: ignore[attr-defined]
            return False
        return True

    def _finish(self, row: _Row, results: list[list[Completion | None]], free: list[int],
                active: dict[int, _Row], current: dict[int, int], mem: Any, t_call: float) -> None:
        ids = row.generated[:-1] if getattr(row, "eog", False) else row.generated
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        results[row.prompt][row.index % len(results[row.prompt])] = Completion(
            text=text,
            prompt_tokens=len(row.tokens),
            completion_tokens=len(row.generated),
            finish_reason=getattr(row, "finish", "stop"),
            latency_s=time.perf_counter() - row.started,
        )
        self.lib.llama_sampler_free(row.sampler)
        row.sampler = None
        self.lib.llama_memory_seq_rm(mem, row.slot, -1, -1)
        active.pop(row.slot, None)
        current.pop(row.slot, None)
        free.append(row.slot)
        free.sort()

    # ------------------------------------------------------------------ manifest

    @property
    def weights_sha256(self) -> str | None:
        rec = self._record or {}
        if rec.get("gguf_sha256"):
            return str(rec["gguf_sha256"])
        if self._weights_sha256 is None:
            from aad_kit.models import sha256_file

            self._weights_sha256 = sha256_file(self.gguf_path)
        return self._weights_sha256

    def info(self) -> dict[str, Any]:
        from aad_kit.manifest import package_versions

        rec = self._record or {}
        return {
            "backend": self.backend,
            "model_id": self.model_id,
            "model_path": str(self.model_dir) if self.model_dir else None,
            "gguf_path": str(self.gguf_path),
            "weights_sha256": self.weights_sha256,
            "gguf_sha256": self.weights_sha256,
            "registry_name": rec.get("name"),
            "registry_source": rec.get("source"),
            "adapter_path": str(self.adapter_path) if self.adapter_path else None,
            "adapter_sha256": self.adapter_sha256,
            "adapter_gguf": str(self.adapter_gguf) if self.adapter_gguf else None,
            "parallel": self.parallel,
            "n_ctx": self.n_ctx,
            "num_threads": self.num_threads,
            "extra_bufts": self.extra_bufts,
            "stop_at_fence": self.stop_at_fence,
            "ignore_eos": self.ignore_eos,
            "chat_template": self.has_chat_template,
            "llama_cpp_python_version": package_versions(("llama-cpp-python",))["llama-cpp-python"],
        }

    def close(self) -> None:
        lib = self.lib
        if getattr(self, "_batch", None) is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            lib.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_adapter", None):
            lib.llama_adapter_lora_free(self._adapter)
            self._adapter = None
        if getattr(self, "_model", None):
            lib.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def __repr__(self) -> str:
        return f"LlamaCppSampler({self.model_id!r}, parallel={self.parallel})"


_LOG_CALLBACK: Any = None


def _silence_llama_log(lib: Any) -> None:
    """llama.cpp prints every load detail to stderr; keep errors only."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return

    @ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
    def _cb(level: int, text: bytes, _user: Any) -> None:  # pragma: no cover - C callback
        if level == 4 and text:  # GGML_LOG_LEVEL_ERROR
            os.write(2, text)

    _LOG_CALLBACK = _cb
    lib.llama_log_set(_cb, ctypes.c_void_p(0))


def _load_tokenizer(model_dir: Path | None, gguf_path: Path) -> Any:
    from transformers import AutoTokenizer

    if model_dir is not None and (model_dir / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(model_dir)
    else:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


__all__ = ["LlamaCppSampler", "llama_cpp_available", "fence_closed", "cpu_has_amx"]
