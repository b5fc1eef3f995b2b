"""Shared fixtures for model-backend tests (import the ones you use into a test module).

* ``llm_cache`` (session): a private ``AAD_KIT_CACHE``-style root with the tiny model built
  in ``<root>/models/tiny`` (a few seconds, once per test process). Tests never touch the
  user's ``~/.cache/aad-kit``.
* ``tiny_model_dir`` (session): that model's directory.
* ``use_llm_cache``: points ``$AAD_KIT_CACHE`` at ``llm_cache`` for one test, so registered
  names (``"tiny"``) resolve to the prebuilt model.
* ``tiny_lora_dir`` (session): a PEFT LoRA adapter saved for the tiny model, with
  non-zero weights (``init_lora_weights=False``) so it really changes outputs.
* ``fake_openai``: a real HTTP server on 127.0.0.1 speaking ``/v1/chat/completions``
  (see :class:`FakeOpenAI` for the knobs).
"""

from __future__ import annotations

import json
import socket
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def llm_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aad_kit.models import install_model

    root = tmp_path_factory.mktemp("aad_kit_cache")
    install_model("tiny", cache_dir=root / "models", progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_model_dir(llm_cache: Path) -> Path:
    return llm_cache / "models" / "tiny"


@pytest.fixture
def use_llm_cache(llm_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AAD_KIT_CACHE", str(llm_cache))
    return llm_cache


@pytest.fixture(scope="session")
def tiny_lora_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("tiny_lora") / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # peft vs transformers 5
        torch.manual_seed(1)
        peft_model = get_peft_model(base, LoraConfig(
            r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"],
            init_lora_weights=False, task_type="CAUSAL_LM",
        ))
    peft_model.save_pretrained(out)
    return out


def free_port() -> int:
    """A port nothing listens on (bound and released; fine for a test)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeOpenAI:
    """A minimal OpenAI-compatible server.

    ``honour_n``: return ``n`` choices (else always one, like llama.cpp/Ollama).
    ``fail``: HTTP status codes to answer the next requests with, in order (then succeed).
    ``finish_reason``: what every choice reports. Each choice's text echoes the user prompt,
    the seed and the choice index: ``"<prompt> | seed=<s> | i=<i>"``.
    ``requests``: (headers, JSON body) of every request received, in order.
    """

    def __init__(self) -> None:
        self.honour_n = True
        self.fail: list[int] = []
        self.retry_after: str | None = None
        self.finish_reason = "stop"
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, code: int, payload: dict[str, Any], headers: dict | None = None):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.requests.append((dict(self.headers), body))
                    code = fake.fail.pop(0) if fake.fail else 200
                if self.path != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if code != 200:
                    extra = {"Retry-After": fake.retry_after} if fake.retry_after else None
                    self._send(code, {"error": {"message": f"status {code}"}}, extra)
                    return
                prompt = body["messages"][-1]["content"]
                n = int(body.get("n", 1)) if fake.honour_n else 1
                seed = body.get("seed")
                choices = [
                    {"index": i, "finish_reason": fake.finish_reason,
                     "message": {"role": "assistant",
                                 "content": f"{prompt} | seed={seed} | i={i}"}}
                    for i in range(n)
                ]
                self._send(200, {
                    "id": "cmpl-test", "object": "chat.completion", "model": body.get("model"),
                    "system_fingerprint": "fp_test", "choices": choices,
                    "usage": {"prompt_tokens": 11, "completion_tokens": 7 * n,
                              "total_tokens": 11 + 7 * n},
                })

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    try:
        yield server
    finally:
        server.close()


def write_llama_gguf(model_dir: Path, path: Path) -> Path:
    """Write an fp32 GGUF of a saved Llama checkpoint + byte-level BPE tokenizer (the tiny
    model), the way llama.cpp's converter lays it out (Q/K rows permuted, gpt2 tokenizer
    metadata, chat template). Lets tests run the GGUF -> checkpoint route without downloads."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    vocab = dict(tok["model"]["vocab"])
    for added in tok["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {a["content"] for a in tok["added_tokens"] if a["special"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    n_head, n_kv, hidden = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    rope = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 1e4)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(hidden // n_head)
    w.add_rope_freq_base(float(rope))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])  # 3 = control
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg["bos_token_id"])
    w.add_eos_token_id(cfg["eos_token_id"])
    w.add_chat_template((model_dir / "chat_template.jinja").read_text())

    def permute(x: Any, heads: int) -> Any:  # llama.cpp's Q/K row order
        return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(
            x.shape)

    sd = load_file(model_dir / "model.safetensors")
    names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    for i in range(cfg["num_hidden_layers"]):
        for hf_name, gguf_name in names.items():
            x = sd[f"model.layers.{i}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                x = permute(x, n_head)
            elif gguf_name == "attn_k":
                x = permute(x, n_kv)
            w.add_tensor(f"blk.{i}.{gguf_name}.weight", np.ascontiguousarray(x))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
