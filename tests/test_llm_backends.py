"""Model backends: hf (tiny local model, LoRA adapter), openai (real local HTTP server),
replay, and the make_sampler spec strings. No downloads; the tiny model is built locally."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from aad_kit.llm import (
    SPEC_FORMS,
    BackendError,
    BackendUnavailable,
    Completion,
    GenerationConfig,
    HFSampler,
    OpenAICompatSampler,
    ReplaySampler,
    Sampler,
    make_sampler,
)
from aad_kit.llm.base import row_seed
from aad_kit.models import sha256_file
from aad_kit.prompts import SYSTEM_PROMPT
from tests.llm_fixtures import (  # noqa: F401 - pytest fixtures
    fake_openai,
    free_port,
    llm_cache,
    tiny_lora_dir,
    tiny_model_dir,
    use_llm_cache,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = ["Write a function that packs items into bins.", "Sort a list, please."]


def texts(result: list[list[Completion]]) -> list[list[str]]:
    return [[c.text for c in row] for row in result]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> HFSampler:  # noqa: F811
    return HFSampler(tiny_model_dir, num_threads=1, batch_size=4)


# ---------------------------------------------------------------------------- hf backend


def test_hf_shapes_and_microbatches(tiny: HFSampler):
    cfg = GenerationConfig(max_new_tokens=6, seed=3)
    out = tiny.sample(PROMPTS, n=3, config=cfg)  # 6 rows -> micro-batches of 4 and 2
    assert len(out) == len(PROMPTS)
    assert all(len(row) == 3 for row in out)
    for row in out:
        for c in row:
            assert isinstance(c, Completion) and isinstance(c.text, str)
            assert c.prompt_tokens and c.prompt_tokens > 10  # system + user via the template
            assert 1 <= c.completion_tokens <= 6
            assert c.finish_reason in ("stop", "length")
            assert c.latency_s > 0
    # the two prompts have different lengths: left padding must not leak into counts
    assert out[0][0].prompt_tokens != out[1][0].prompt_tokens
    assert tiny.sample([], n=2) == []


def test_hf_same_seed_same_text_different_seed_differs(tiny: HFSampler):
    a = tiny.sample(PROMPTS, n=2, config=GenerationConfig(max_new_tokens=8, seed=11))
    b = tiny.sample(PROMPTS, n=2, config=GenerationConfig(max_new_tokens=8, seed=11))
    c = tiny.sample(PROMPTS, n=2, config=GenerationConfig(max_new_tokens=8, seed=12))
    assert texts(a) == texts(b)
    assert texts(a) != texts(c)
    # the n completions of one prompt are different samples, not copies
    assert a[0][0].text != a[0][1].text


def test_hf_greedy_ignores_seed(tiny: HFSampler):
    a = tiny.sample(PROMPTS[:1], config=GenerationConfig(temperature=0, max_new_tokens=5, seed=1))
    b = tiny.sample(PROMPTS[:1], config=GenerationConfig(temperature=0, max_new_tokens=5, seed=2))
    assert texts(a) == texts(b)


def test_hf_finish_reason_length(tiny: HFSampler):
    out = tiny.sample(PROMPTS, n=2, config=GenerationConfig(max_new_tokens=3, seed=0))
    for row in out:
        for c in row:
            assert c.finish_reason == "length"
            assert c.completion_tokens == 3


def test_hf_finish_reason_stop_when_eos(tiny: HFSampler, monkeypatch: pytest.MonkeyPatch):
    # White-box: declare every token an end-of-sequence token, so the first one stops.
    vocab = len(tiny.tokenizer)
    monkeypatch.setattr(tiny, "_eos_ids", set(range(vocab)))
    out = tiny.sample(PROMPTS[:1], n=2, config=GenerationConfig(max_new_tokens=5))
    for c in out[0]:
        assert c.finish_reason == "stop"
        assert c.completion_tokens == 1
        assert c.text == ""


def test_hf_tokenizer_setup_and_chat_template(tiny: HFSampler):
    tok = tiny.tokenizer
    assert tok.padding_side == "left"
    assert tok.pad_token is not None and tok.pad_token == tok.eos_token  # tiny has no pad
    text = tiny.format_prompt("USER-PROMPT")
    assert SYSTEM_PROMPT in text
    assert text.index(SYSTEM_PROMPT) < text.index("USER-PROMPT")
    assert text.rstrip().endswith("<|im_start|>assistant")


def test_hf_plain_prompt_without_chat_template(tiny_model_dir: Path, tmp_path: Path):  # noqa: F811
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "chat_template.jinja").unlink()
    cfg_path = plain / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template", None)
    cfg_path.write_text(json.dumps(cfg))
    s = HFSampler(plain, num_threads=1)
    assert not s.has_chat_template
    assert s.format_prompt("just this") == "just this"
    out = s.sample(["just this"], n=2, config=GenerationConfig(max_new_tokens=4))
    assert [len(r) for r in out] == [2]
    assert s.model_id == "tiny"  # the record travels with the copied directory


def test_hf_info(tiny: HFSampler, tiny_model_dir: Path):  # noqa: F811
    info = tiny.info()
    assert info["backend"] == "hf"
    assert info["model_id"] == "tiny"
    assert info["model_path"] == str(tiny_model_dir.resolve())
    record = json.loads((tiny_model_dir / "aad_kit_model.json").read_text())
    assert info["weights_sha256"] == record["weights_sha256"]
    assert info["weights_sha256"] == sha256_file(tiny_model_dir / "model.safetensors")
    assert info["adapter_path"] is None and info["adapter_sha256"] is None
    if torch.cuda.is_available():
        assert info["device"] == "cuda" and info["dtype"] in ("bfloat16", "float16")
        assert info["num_threads"] is None
    else:
        assert info["dtype"] == "float32" and info["device"] == "cpu"
        assert info["num_threads"] == 1
    json.dumps(info)  # manifest-ready
    assert isinstance(tiny, Sampler)


def test_hf_weights_hash_computed_without_record(tiny_model_dir: Path, tmp_path: Path):  # noqa: F811
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "aad_kit_model.json").unlink()
    s = HFSampler(bare, num_threads=1)
    assert s.model_id == "bare"
    assert s.info()["weights_sha256"] == sha256_file(bare / "model.safetensors")


def test_hf_stale_record_is_not_trusted(tiny_model_dir: Path, tmp_path: Path):  # noqa: F811
    """Weights rewritten after the record (e.g. a merged fine-tune saved over a copy) are
    hashed again rather than reported with the record's old digest."""
    import shutil

    from transformers import AutoModelForCausalLM

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    record_time = (copy / "aad_kit_model.json").stat().st_mtime
    model = AutoModelForCausalLM.from_pretrained(copy)
    with torch.no_grad():
        model.model.norm.weight.add_(1.0)
    model.save_pretrained(copy)
    os.utime(copy / "model.safetensors", (record_time + 5, record_time + 5))
    s = HFSampler(copy, num_threads=1)
    digest = s.info()["weights_sha256"]
    assert digest == sha256_file(copy / "model.safetensors")
    assert digest != sha256_file(tiny_model_dir / "model.safetensors")


def test_hf_lora_adapter(tiny: HFSampler, tiny_model_dir: Path, tiny_lora_dir: Path):  # noqa: F811
    tuned = HFSampler(tiny_model_dir, adapter_path=tiny_lora_dir, num_threads=1)
    info = tuned.info()
    assert info["adapter_path"] == str(tiny_lora_dir.resolve())
    assert info["adapter_sha256"] == sha256_file(tiny_lora_dir / "adapter_model.safetensors")
    assert info["adapter_merged"] is True
    assert info["weights_sha256"] == tiny.info()["weights_sha256"]  # base unchanged
    assert tuned.model_id == "tiny+adapter"
    cfg = GenerationConfig(temperature=0, max_new_tokens=10)
    assert texts(tuned.sample(PROMPTS, config=cfg)) != texts(tiny.sample(PROMPTS, config=cfg))
    unmerged = HFSampler(tiny_model_dir, adapter_path=tiny_lora_dir, merge_adapter=False,
                         num_threads=1)
    assert unmerged.info()["adapter_merged"] is False
    assert len(unmerged.sample(PROMPTS[:1], n=2, config=GenerationConfig(max_new_tokens=3))[0]) == 2


def test_hf_missing_adapter_is_clear(tiny_model_dir: Path, tmp_path: Path):  # noqa: F811
    with pytest.raises(FileNotFoundError, match="adapter"):
        HFSampler(tiny_model_dir, adapter_path=tmp_path / "nope", num_threads=1)


def test_hf_dtype_override(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    s = HFSampler(tiny_model_dir, dtype="bfloat16", num_threads=1)
    assert s.info()["dtype"] == "bfloat16"
    assert next(s.model.parameters()).dtype == torch.bfloat16
    cfg = GenerationConfig(max_new_tokens=4, seed=2)
    assert texts(s.sample(PROMPTS, n=2, config=cfg)) == texts(s.sample(PROMPTS, n=2, config=cfg))
    monkeypatch.setenv("AAD_KIT_HF_DTYPE", "float32")
    assert HFSampler(tiny_model_dir, num_threads=1).dtype == "float32"
    with pytest.raises(ValueError, match="dtype must be one of"):
        HFSampler(tiny_model_dir, dtype="int3")


def test_hf_thread_default(monkeypatch: pytest.MonkeyPatch):
    from aad_kit.llm.hf import default_num_threads

    monkeypatch.setenv("AAD_KIT_TORCH_THREADS", "3")
    assert default_num_threads() == 3
    monkeypatch.delenv("AAD_KIT_TORCH_THREADS")
    assert default_num_threads() >= 1


# ---------------------------------------------------------------------------- openai backend


def _client(fake, **kw) -> OpenAICompatSampler:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("max_backoff_s", 0.05)
    kw.setdefault("max_retries", 3)
    kw.setdefault("timeout_s", 10)
    return OpenAICompatSampler(fake.base_url, "test-model", **kw)


def test_openai_success_with_n(fake_openai, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    monkeypatch.setenv("AAD_TEST_KEY", "sk-secret")
    s = _client(fake_openai, api_key_env="AAD_TEST_KEY")
    cfg = GenerationConfig(temperature=0.7, top_p=0.9, max_new_tokens=33, seed=5)
    out = s.sample(PROMPTS, n=3, config=cfg)
    assert [len(r) for r in out] == [3, 3]
    for k, (prompt, row) in enumerate(zip(PROMPTS, out, strict=True)):
        seed = row_seed(5, k * 3)  # one request per prompt: the seed of its first row
        assert [c.text for c in row] == [f"{prompt} | seed={seed} | i={i}" for i in range(3)]
        assert all(c.finish_reason == "stop" and c.prompt_tokens == 11 for c in row)
        assert all(c.completion_tokens is None for c in row)  # usage is per request
    assert len(fake_openai.requests) == 2  # one request per prompt
    headers, body = fake_openai.requests[0]
    assert headers["Authorization"] == "Bearer sk-secret"
    assert body["model"] == "test-model"
    assert body["n"] == 3 and body["seed"] in (row_seed(5, 0), row_seed(5, 3))
    assert body["max_tokens"] == 33
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert body["messages"][1]["role"] == "user"
    info = s.info()
    assert info["backend"] == "openai" and info["model_id"] == "test-model"
    assert info["served_model"] == "test-model" and info["system_fingerprint"] == "fp_test"
    assert info["n_supported"] is True and info["api_key_set"] is True
    assert "sk-secret" not in json.dumps(info)
    assert isinstance(s, Sampler)


def test_openai_no_key_sends_no_auth_header(fake_openai, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = _client(fake_openai).sample(["hi"])
    assert out[0][0].completion_tokens == 7
    headers, body = fake_openai.requests[0]
    assert "Authorization" not in headers
    assert "n" not in body


def test_openai_server_ignoring_n_falls_back(fake_openai):  # noqa: F811
    fake_openai.honour_n = False
    s = _client(fake_openai)
    out = s.sample(["p"], n=3, config=GenerationConfig(seed=10))
    # the fill-up requests use row seeds too (rows 0, 1, 2 of the call), not seed + k
    assert [c.text for c in out[0]] == [f"p | seed={row_seed(10, r)} | i=0" for r in range(3)]
    assert s.n_supported is False
    assert [b.get("n", 1) for _, b in fake_openai.requests] == [3, 1, 1]
    s.sample(["q"], n=2)  # known now: no more n requests
    assert [b.get("n", 1) for _, b in fake_openai.requests[3:]] == [1, 1]


def test_openai_retries_503_then_succeeds(fake_openai):  # noqa: F811
    fake_openai.fail = [503, 503]
    out = _client(fake_openai, max_retries=3).sample(["p"])
    assert out[0][0].text.startswith("p |")
    assert len(fake_openai.requests) == 3


def test_openai_retries_429_with_retry_after(fake_openai):  # noqa: F811
    fake_openai.fail = [429]
    fake_openai.retry_after = "0"
    out = _client(fake_openai).sample(["p"])
    assert len(out[0]) == 1 and len(fake_openai.requests) == 2


def test_openai_persistent_5xx_is_unavailable(fake_openai):  # noqa: F811
    fake_openai.fail = [500] * 10
    with pytest.raises(BackendUnavailable, match="HTTP 500") as err:
        _client(fake_openai, max_retries=2).sample(["p"])
    assert fake_openai.base_url in str(err.value)
    assert len(fake_openai.requests) == 3


def test_openai_client_error_is_not_retried(fake_openai):  # noqa: F811
    fake_openai.fail = [400]
    with pytest.raises(BackendError, match="HTTP 400") as err:
        _client(fake_openai).sample(["p"])
    assert not isinstance(err.value, BackendUnavailable)
    assert len(fake_openai.requests) == 1


def test_openai_server_down():
    url = f"http://127.0.0.1:{free_port()}/v1"
    s = OpenAICompatSampler(url, "m", max_retries=2, backoff_s=0.01, timeout_s=2)
    t0 = time.perf_counter()
    with pytest.raises(BackendUnavailable) as err:
        s.sample(["p"])
    assert url in str(err.value) and "3 attempt" in str(err.value)
    assert time.perf_counter() - t0 < 5


def test_openai_length_and_order_under_concurrency(fake_openai):  # noqa: F811
    fake_openai.finish_reason = "length"
    prompts = [f"prompt {i}" for i in range(7)]
    out = _client(fake_openai, max_concurrency=3).sample(prompts, n=2)
    assert [r[0].text.split(" |")[0] for r in out] == prompts
    assert all(c.finish_reason == "length" for r in out for c in r)


# Issue 17: a search batch of i1 prompts is one prompt several times; with one seed per call a
# seed-honouring server (vLLM, SGLang, llama.cpp server) answered it with one text, four times.


@pytest.mark.parametrize("honour_n", [True, False])
@pytest.mark.parametrize("concurrency", [1, 4])
def test_openai_identical_prompts_get_distinct_answers(fake_openai, honour_n, concurrency):  # noqa: F811
    fake_openai.mode = "seeded"  # text = f(prompt, seed, choice index), like vLLM
    fake_openai.honour_n = honour_n
    s = _client(fake_openai, max_concurrency=concurrency)
    cfg = GenerationConfig(seed=7)
    out = s.sample(["same i1 prompt"] * 4, n=1, config=cfg)
    answers = [c.text for r in out for c in r]
    assert len(answers) == 4 and len(set(answers)) == 4
    assert sorted(b["seed"] for _, b in fake_openai.requests) == sorted(
        row_seed(7, r) for r in range(4))
    # n > 1 (and, where the server ignores n, its fill-up requests): still all distinct
    out = s.sample(["same"] * 3, n=2, config=cfg)
    answers = [c.text for r in out for c in r]
    assert [len(r) for r in out] == [2, 2, 2] and len(set(answers)) == 6
    if not honour_n:  # one request per row, each with its row's seed
        seeds = [b["seed"] for _, b in fake_openai.requests[4:]]
        assert {row_seed(7, r) for r in range(6)} <= set(seeds)


def test_openai_same_config_seed_reproduces_answers(fake_openai):  # noqa: F811
    fake_openai.mode = "seeded"
    prompts = ["same"] * 3 + ["other"]
    cfg = GenerationConfig(seed=11)
    first = texts(_client(fake_openai, max_concurrency=3).sample(prompts, n=2, config=cfg))
    again = texts(_client(fake_openai, max_concurrency=1).sample(prompts, n=2, config=cfg))
    assert first == again
    other = texts(_client(fake_openai).sample(prompts, n=2, config=GenerationConfig(seed=12)))
    assert not {t for r in other for t in r} & {t for r in first for t in r}


def test_openai_search_batch_of_i1_prompts_stores_no_duplicates(fake_openai, tmp_path: Path):  # noqa: F811
    """A real smoke search through the openai backend and the real sandbox: the i1 batch is
    four identical prompts, and dedup would mark any answer given twice."""
    from aad_kit.db import AlgorithmDB
    from aad_kit.sandbox import Sandbox, SandboxConfig
    from aad_kit.search import SearchConfig, run_search

    fake_openai.mode = "seeded"
    config = SearchConfig(task="admissible_set", setting="n12_w7", budget=8, batch_size=4,
                          init_samples=4, population_size=4, seed=1)
    sampler = make_sampler(f"openai:{fake_openai.base_url}#fake", max_retries=0)
    with AlgorithmDB(tmp_path / "a.sqlite") as db, \
            Sandbox(SandboxConfig(workers=1), cache=False) as sandbox:
        summary = run_search(config, sampler, db, sandbox, run_id="issue17", progress=False)
        records = db.records("issue17", samples_only=True)
    i1_prompts = {b["messages"][-1]["content"] for _, b in fake_openai.requests[:4]}
    assert len(i1_prompts) == 1  # the batch really was one prompt four times
    assert [r.operator for r in records[:4]] == ["i1"] * 4
    assert len(records) == 8 and all(r.status == "ok" and r.score is not None for r in records)
    assert summary.n_duplicates == 0 and summary.n_samples == 8
    assert all(r.duplicate_of is None for r in records)
    assert len({r.code_hash for r in records}) == 8


# ---------------------------------------------------------------------------- replay backend


def test_replay_cycles_in_order_and_resets():
    s = ReplaySampler(["a", "b", {"text": "c", "finish_reason": "length"}])
    out = s.sample(["x", "y"], n=2)
    assert texts(out) == [["a", "b"], ["c", "a"]]
    assert out[1][0].finish_reason == "length"
    assert texts(s.sample(["z"], n=2)) == [["b", "c"]]
    s.reset()
    assert texts(s.sample(["z"], n=1)) == [["a"]]
    assert isinstance(s, Sampler)


def test_replay_match_groups_and_file(tmp_path: Path):
    path = tmp_path / "completions.jsonl"
    lines = [
        "# stored answers",
        json.dumps({"match": "bin", "text": "BIN-1"}),
        json.dumps({"text": "ANY-1"}),
        "",
        json.dumps({"match": "bin", "text": "BIN-2"}),
        json.dumps({"match": "tsp", "text": "TSP-1", "extra": 1}),
    ]
    path.write_text("\n".join(lines) + "\n")
    runs = []
    for _ in range(2):  # two samplers on one file: identical sequences
        s = ReplaySampler(path)
        runs.append(texts(s.sample(["pack a bin", "route tsp", "other", "bin again"], n=2)))
    assert runs[0] == runs[1] == [["BIN-1", "BIN-2"], ["TSP-1", "TSP-1"], ["ANY-1", "ANY-1"],
                                  ["BIN-1", "BIN-2"]]
    info = s.info()
    assert info["backend"] == "replay" and info["records"] == 4
    assert info["source_sha256"] == sha256_file(path)
    assert info["match_keys"] == ["bin", "tsp"]
    assert s.model_id == "replay:completions.jsonl"


def test_replay_errors(tmp_path: Path):
    with pytest.raises(LookupError, match="no replay record matches"):
        ReplaySampler([{"match": "bin", "text": "x"}]).sample(["tsp"])
    with pytest.raises(ValueError, match="text"):
        ReplaySampler([{"match": "bin"}])
    with pytest.raises(ValueError, match="at least one"):
        ReplaySampler([])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        ReplaySampler(bad)


# ---------------------------------------------------------------------------- make_sampler


def test_make_sampler_registered_name(use_llm_cache, tiny_model_dir: Path,  # noqa: F811
                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AAD_KIT_ENGINE", "hf")  # the llama.cpp default: tests/test_llamacpp.py
    s = make_sampler("tiny", num_threads=1, batch_size=2)
    assert isinstance(s, HFSampler)
    assert s.model_id == "tiny" and s.batch_size == 2
    assert s.model_path == tiny_model_dir


def test_make_sampler_hf_dir_and_adapter(tiny_model_dir: Path, tiny_lora_dir: Path):  # noqa: F811
    s = make_sampler(f"hf:{tiny_model_dir}@adapter={tiny_lora_dir}", num_threads=1)
    assert isinstance(s, HFSampler)
    assert s.info()["adapter_path"] == str(tiny_lora_dir.resolve())
    plain = make_sampler(str(tiny_model_dir), num_threads=1)  # a bare existing directory
    assert isinstance(plain, HFSampler) and plain.adapter_path is None
    kw = make_sampler(f"hf:{tiny_model_dir}", adapter_path=tiny_lora_dir, num_threads=1)
    assert kw.info()["adapter_sha256"] == s.info()["adapter_sha256"]


def test_make_sampler_openai_and_replay(fake_openai, tmp_path: Path):  # noqa: F811
    s = make_sampler(f"openai:{fake_openai.base_url}#served-name", max_retries=0)
    assert isinstance(s, OpenAICompatSampler)
    assert s.model == "served-name" and s.url == fake_openai.base_url + "/chat/completions"
    assert s.sample(["hello"])[0][0].text.startswith("hello |")
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"text": "stored"}) + "\n")
    r = make_sampler(f"replay:{path}")
    assert isinstance(r, ReplaySampler) and texts(r.sample(["p"])) == [["stored"]]
    assert make_sampler(r) is r
    # the stages pass their batch size to every backend (stage 2 failed with a TypeError for
    # openai: and replay: specs): for a server it is the number of requests in flight
    s = make_sampler(f"openai:{fake_openai.base_url}#m", batch_size=8, device="cpu")
    assert s.max_concurrency == 8
    assert make_sampler(f"openai:{fake_openai.base_url}#m", batch_size=8, max_concurrency=2).max_concurrency == 2
    assert texts(make_sampler(f"replay:{path}", batch_size=4).sample(["p"])) == [["stored"]]


@pytest.mark.parametrize("spec", ["gpt-17", "hf:", "replay:", "nope:thing", ""])
def test_make_sampler_unknown_spec_lists_forms(spec: str):
    with pytest.raises(ValueError) as err:
        make_sampler(spec)
    msg = str(err.value)
    for form in ("tiny", "smollm2-135m", "hf:", "@adapter=", "openai:", "replay:"):
        assert form in msg
    assert len(SPEC_FORMS) >= 5


def test_make_sampler_bad_openai_spec():
    with pytest.raises(ValueError, match="openai:http"):
        make_sampler("openai:http://127.0.0.1:8000/v1")  # no model name
    with pytest.raises(ValueError, match="adapter"):
        make_sampler("tiny@adapter=")
