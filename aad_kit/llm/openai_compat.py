"""Backend ``openai``: any OpenAI-compatible ``/chat/completions`` endpoint.

Works with vLLM (``vllm serve``), Ollama (``http://localhost:11434/v1``), the llama.cpp
server and hosted APIs. Standard library only (``urllib``), no ``openai`` package.

* ``base_url`` is the API root, e.g. ``http://127.0.0.1:8000/v1``; requests go to
  ``<base_url>/chat/completions``. ``model`` is the served model name.
* The API key is read from the environment variable ``api_key_env`` (default
  ``OPENAI_API_KEY``); local servers usually need none, and then no ``Authorization`` header
  is sent. The key is never recorded in :meth:`info`.
* Messages are ``system`` (:data:`aad_kit.prompts.SYSTEM_PROMPT`) + ``user`` (the prompt).
* Seeds: row ``r`` of a call (prompt ``i``, sample ``j``, ``r = i * n + j``, as in the
  llama.cpp backend) has seed :func:`aad_kit.llm.base.row_seed` ``(config.seed, r)``. Each
  request sends the seed of its first row, so identical prompts in one call (i1 prompts, or
  parents drawn alike) are sent with different seeds, and seed-honouring servers (vLLM,
  SGLang, the llama.cpp server) do not return one answer several times; the same call with the
  same ``config.seed`` sends the same seeds again.
* ``n`` completions per prompt are asked for in one request (seed of row ``i * n``; the
  server tells its choices apart). Servers that ignore ``n`` (llama.cpp, Ollama) return one
  choice; the sampler notices, then fills up with one request per completion, the ``j``-th
  with the seed of row ``i * n + j``.
* ``temperature``, ``top_p``, ``max_tokens`` (= ``max_new_tokens``) and ``seed`` are passed.
  Whether the same seed reproduces text is up to the server (vLLM: yes, per request).
* Retries with exponential backoff (``backoff_s * 2**attempt``, capped; ``Retry-After``
  honoured) on HTTP 429, 5xx, connection errors and timeouts. When the server still cannot be
  reached or keeps failing, :class:`BackendUnavailable` is raised naming the URL. Other HTTP
  errors (400, 401, 404: bad request, key or model name) raise :class:`BackendError` at once.
* Prompts are sent concurrently (``max_concurrency`` requests in flight), results keep order.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aad_kit.llm.base import Completion, GenerationConfig, row_seed
from aad_kit.prompts import as_messages

_DEFAULT_CONFIG = GenerationConfig()  # frozen: safe as a shared default


class BackendError(RuntimeError):
    """A model backend failed in a way retrying will not fix (bad request, bad reply)."""


class BackendUnavailable(BackendError):
    """The backend could not be reached, or kept failing, after all retries."""


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _finish_reason(raw: Any) -> str:
    if raw == "length":
        return "length"
    if raw in (None, "stop", "eos", "tool_calls", "function_call"):
        return "stop"
    return "error"  # e.g. "content_filter"


class OpenAICompatSampler:
    """Sampler over an OpenAI-compatible chat-completions server; see the module docstring."""

    backend = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 300.0,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_concurrency: int = 4,
        use_n: bool = True,
        extra_body: dict[str, Any] | None = None,
        model_id: str | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required (e.g. http://127.0.0.1:8000/v1)")
        if not model:
            raise ValueError("model is required (the served model name)")
        base = base_url.rstrip("/")
        self.url = base if base.endswith("/chat/completions") else base + "/chat/completions"
        self.base_url = base
        self.model = model
        self.model_id = model_id or model
        self.api_key_env = api_key_env
        self._api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_concurrency = max(1, int(max_concurrency))
        self.extra_body = dict(extra_body or {})
        # None: not known yet; False: the server ignores n (seen once), so ask one at a time.
        self.n_supported: bool | None = None if use_n else False
        self._served: dict[str, Any] = {}
        self._lock = threading.Lock()
        # Never send requests for a local server through a proxy from the environment.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(self.url) else []
        self._opener = urllib.request.build_opener(*handlers)

    # ------------------------------------------------------------------ HTTP

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self.backoff_s * (2 ** attempt)
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        return min(delay, self.max_backoff_s)

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": "aad-kit"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        last = ""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            retry_after = None
            req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with self._opener.open(req, timeout=self.timeout_s) as resp:
                    raw = resp.read()
                try:
                    return json.loads(raw)
                except ValueError as err:
                    raise BackendError(
                        f"{self.url} returned a reply that is not JSON: {raw[:300]!r}"
                    ) from err
            except urllib.error.HTTPError as err:
                detail = err.read()[:500].decode("utf-8", "replace")
                if err.code != 429 and not 500 <= err.code < 600:
                    raise BackendError(f"{self.url} returned HTTP {err.code}: {detail}") from err
                last = f"HTTP {err.code}: {detail}"
                retry_after = err.headers.get("Retry-After") if err.headers else None
            except (urllib.error.URLError, ConnectionError, TimeoutError,
                    http.client.HTTPException, OSError) as err:
                reason = getattr(err, "reason", err)
                last = f"{type(reason).__name__}: {reason}"
            if attempt + 1 < attempts:
                time.sleep(self._delay(attempt, retry_after))
        raise BackendUnavailable(
            f"OpenAI-compatible server at {self.url} is unavailable after {attempts} "
            f"attempt(s): {last}. Is the server running and is the base URL right?"
        )

    # ------------------------------------------------------------------ sampling

    def _payload(self, prompt: str, n: int, config: GenerationConfig, seed: int) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": as_messages(prompt),
            "temperature": float(config.temperature),
            "top_p": float(config.top_p),
            "max_tokens": int(config.max_new_tokens),
            "seed": int(seed),
            **self.extra_body,
        }
        if n > 1:
            payload["n"] = n
        return payload

    def _sample_one(
        self, index: int, prompt: str, n: int, config: GenerationConfig
    ) -> list[Completion]:
        """The ``n`` completions of prompt ``index`` of the call (rows ``index * n + j``)."""
        out: list[Completion] = []
        while len(out) < n:
            remaining = n - len(out)
            ask = remaining if self.n_supported is not False else 1
            seed = row_seed(config.seed, index * n + len(out))
            t0 = time.perf_counter()
            reply = self._post(self._payload(prompt, ask, config, seed))
            latency = time.perf_counter() - t0
            choices = reply.get("choices") if isinstance(reply, dict) else None
            if not choices:
                raise BackendError(f"{self.url} returned no choices: {str(reply)[:300]}")
            if ask > 1:
                with self._lock:
                    self.n_supported = len(choices) >= ask
            with self._lock:
                for key in ("model", "system_fingerprint"):
                    if reply.get(key):
                        self._served[key] = reply[key]
            usage = reply.get("usage") or {}
            single = len(choices) == 1
            for choice in sorted(choices, key=lambda c: c.get("index", 0))[:remaining]:
                message = choice.get("message") or {}
                out.append(Completion(
                    text=message.get("content") or "",
                    prompt_tokens=usage.get("prompt_tokens"),
                    completion_tokens=usage.get("completion_tokens") if single else None,
                    finish_reason=_finish_reason(choice.get("finish_reason")),
                    latency_s=latency,
                ))
        return out

    def sample(
        self, prompts: Sequence[str], n: int = 1, config: GenerationConfig = _DEFAULT_CONFIG
    ) -> list[list[Completion]]:
        if n < 1:
            raise ValueError("n must be >= 1")
        prompts = list(prompts)
        if len(prompts) <= 1 or self.max_concurrency == 1:
            return [self._sample_one(i, p, n, config) for i, p in enumerate(prompts)]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(prompts))) as pool:
            return list(pool.map(lambda ip: self._sample_one(*ip, n, config), enumerate(prompts)))

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model_id": self.model_id,
            "model": self.model,
            "base_url": self.base_url,
            "url": self.url,
            "served_model": self._served.get("model"),
            "system_fingerprint": self._served.get("system_fingerprint"),
            "api_key_env": self.api_key_env,
            "api_key_set": bool(self._api_key),
            "n_supported": self.n_supported,
            "max_concurrency": self.max_concurrency,
            "weights_sha256": None,  # not knowable through the API
        }

    def __repr__(self) -> str:
        return f"OpenAICompatSampler({self.base_url!r}, model={self.model!r})"
