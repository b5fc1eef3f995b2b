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
  (see :class:`FakeOpenAI` for the knobs; ``mode = "seeded"`` answers like a seed-honouring
  server with valid programs, :func:`seeded_answer`).
"""

from __future__ import annotations

import hashlib
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


def seeded_answer(prompt: str, seed: Any, index: int) -> str:
    """A model answer that depends only on (prompt, seed, choice index), as vLLM's does.

    A ```python block with ``priority(el, n, w)`` (``admissible_set``) whose docstring states
    the idea; its weights and an additive constant come from a hash of the triple, so the
    returned float depends on the seed and two different triples give different code.
    """
    digest = hashlib.sha256(f"{prompt}\x00{seed}\x00{index}".encode()).digest()
    h = int.from_bytes(digest[:8], "big")
    a, b, c = 1 + h % 3, 2 + (h >> 4) % 3, (h >> 8) % 3 - 1
    u = (h >> 11) / 2**53  # 53 random bits: distinct triples give distinct code
    return (
        "```python\n"
        "def priority(el, n, w):\n"
        f'    """Mix the entries modulo {b} with weight {a} and a small shift."""\n'
        f"    s = sum((x * {a}) % {b} for x in el)\n"
        f"    return float(s + {c} * el[0] - el[-1]) + {u!r} * 1e-6\n"
        "```"
    )


class FakeOpenAI:
    """A minimal OpenAI-compatible server.

    ``honour_n``: return ``n`` choices (else always one, like llama.cpp/Ollama).
    ``fail``: HTTP status codes to answer the next requests with, in order (then succeed).
    ``finish_reason``: what every choice reports.
    ``mode``: what each choice's text is.

    * ``"echo"`` (default): the user prompt, the seed and the choice index,
      ``"<prompt> | seed=<s> | i=<i>"``.
    * ``"seeded"``: like vLLM with a per-request seed, the text is a deterministic function of
      (prompt, seed, choice index) only (see :func:`seeded_answer`): identical seeds give
      identical answers. Each is a valid ``admissible_set`` program in the kit's answer format
      whose code (not just its docstring) depends on that triple, so search dedup catches any
      repeat.

    ``requests``: (headers, JSON body) of every request received, in order.
    """

    def __init__(self) -> None:
        self.honour_n = True
        self.mode = "echo"
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
                if fake.mode == "seeded":
                    contents = [seeded_answer(prompt, seed, i) for i in range(n)]
                else:
                    contents = [f"{prompt} | seed={seed} | i={i}" for i in range(n)]
                choices = [
                    {"index": i, "finish_reason": fake.finish_reason,
                     "message": {"role": "assistant", "content": content}}
                    for i, content in enumerate(contents)
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
    """An fp32 GGUF of the tiny model (the library's writer; kept here for older imports)."""
    from aad_kit.gguf_io import write_llama_gguf as write

    return write(model_dir, path)


def cvrp_answer(h: int) -> str:
    """A valid CVRP next-node rule whose weights come from ``h``: distance, demand and the
    pull back to the depot mixed differently, so different ``h`` give different scores."""
    a, b, c = (h % 7) / 4, (h // 7 % 5) / 5, (h // 35 % 3) / 3
    return (
        "```python\n"
        "import numpy as np\n\n\n"
        "def select_next_node(current_node, depot, unvisited_nodes, rest_capacity, demands, distance_matrix):\n"
        "    d = distance_matrix[current_node, unvisited_nodes]\n"
        "    back = distance_matrix[depot, unvisited_nodes]\n"
        f"    score = d - {a} * demands[unvisited_nodes] / (rest_capacity + 1) + {b} * back - {c} * d * back\n"
        "    return int(unvisited_nodes[np.argmin(score)])\n"
        "```\n"
    )


class CVRPFakeSampler:
    """Deterministic fake model answering every prompt with a valid CVRP rule
    (:func:`cvrp_answer`), for building a small CVRP teacher database without a model."""

    model_id = "fake/cvrp-weights-1"

    def sample(self, prompts, n=1, config=None):  # noqa: ANN001, ANN201
        from aad_kit.llm.base import Completion

        seed = getattr(config, "seed", 0)
        return [[Completion(text=cvrp_answer(int.from_bytes(hashlib.sha256(f"{p}|{seed}|{i}|{j}".encode())
                                                             .digest()[:8], "big")), completion_tokens=80)
                 for j in range(n)] for i, p in enumerate(prompts)]

    def info(self) -> dict[str, Any]:
        return {"backend": "fake", "model_id": self.model_id, "sha256": "0" * 64}
