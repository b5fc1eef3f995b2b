"""The llama.cpp backend (aad_kit.llm.llamacpp) and the GGUF LoRA export (aad_kit.gguf_io).

On the tiny model, whose GGUF holds the checkpoint's exact fp32 weights, greedy decoding
under llama.cpp must match transformers token for token, with and without a LoRA adapter:
that pins the export's tensor layout (Q/K permutation, A/B shapes, alpha/r scale).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aad_kit.llm.base import GenerationConfig, row_seed
from aad_kit.llm.llamacpp import fence_closed
from tests.llm_fixtures import (  # noqa: F401 - pytest fixtures
    llm_cache,
    tiny_lora_dir,
    tiny_model_dir,
    use_llm_cache,
)

PROMPT = "Write the priority function for online bin packing."


def test_fence_closed() -> None:
    assert not fence_closed("Idea: x\n```python\ndef f():\n    return 1\n")
    assert fence_closed("Idea: x\n```python\ndef f():\n    return 1\n```")
    assert fence_closed("```\ncode\n  ```\nmore prose")
    assert not fence_closed("``` inline ``` only")
    assert not fence_closed("no code at all")


def test_row_seeds_differ_and_repeat() -> None:
    seeds = [row_seed(0, r) for r in range(64)]
    assert len(set(seeds)) == 64
    assert seeds == [row_seed(0, r) for r in range(64)]
    assert row_seed(1, 0) != row_seed(0, 0)
    assert all(0 <= s < 2**31 for s in seeds)


llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")


@pytest.fixture(scope="module")
def tiny_llama(llm_cache: Path):  # noqa: F811
    from aad_kit.llm.llamacpp import LlamaCppSampler

    s = LlamaCppSampler(llm_cache / "models" / "tiny", parallel=3, num_threads=1, n_ctx=4096)
    yield s
    s.close()


def _greedy(max_new: int = 12) -> GenerationConfig:
    return GenerationConfig(temperature=0.0, max_new_tokens=max_new, seed=0)


def _hf(model_dir: Path, adapter: Path | None = None):
    from aad_kit.llm.hf import HFSampler

    return HFSampler(model_dir, adapter_path=adapter, num_threads=1, batch_size=1)


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_greedy_matches_transformers(tiny_llama, tiny_model_dir: Path) -> None:  # noqa: F811
    hf = _hf(tiny_model_dir)
    a = tiny_llama.sample([PROMPT], 1, _greedy())[0][0]
    b = hf.sample([PROMPT], 1, _greedy())[0][0]
    assert a.prompt_tokens == b.prompt_tokens
    assert _ids(hf.tokenizer, a.text)[:8] == _ids(hf.tokenizer, b.text)[:8]
    assert a.completion_tokens == 12 and a.finish_reason == "length"


def test_lora_adapter_matches_transformers(tiny_model_dir: Path, tiny_lora_dir: Path,  # noqa: F811
                                           tmp_path: Path) -> None:
    import shutil

    from aad_kit.llm.llamacpp import LlamaCppSampler

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_lora_dir, adapter)  # the export writes beside the adapter
    before = sorted(p.name for p in adapter.iterdir())
    tuned = LlamaCppSampler(tiny_model_dir, adapter_path=adapter, parallel=1, num_threads=1,
                            n_ctx=2048)
    hf_tuned = _hf(tiny_model_dir, adapter)
    hf_base = _hf(tiny_model_dir)
    a = tuned.sample([PROMPT], 1, _greedy(16))[0][0]
    b = hf_tuned.sample([PROMPT], 1, _greedy(16))[0][0]
    base = hf_base.sample([PROMPT], 1, _greedy(16))[0][0]
    tok = hf_base.tokenizer
    assert _ids(tok, a.text)[:8] == _ids(tok, b.text)[:8]
    assert _ids(tok, base.text)[:8] != _ids(tok, b.text)[:8]  # the adapter changes outputs
    info = tuned.info()
    assert info["adapter_sha256"] == hf_tuned.info()["adapter_sha256"]
    assert Path(info["adapter_gguf"]).is_file() and tuned.model_id == "tiny+adapter"
    assert Path(info["adapter_gguf"]).parent == tmp_path  # beside, not inside, the adapter
    assert sorted(p.name for p in adapter.iterdir()) == before
    # the export is reused while the adapter is unchanged
    mtime = Path(info["adapter_gguf"]).stat().st_mtime_ns
    from aad_kit.gguf_io import export_lora_gguf

    assert export_lora_gguf(adapter, tuned.gguf_path).stat().st_mtime_ns == mtime
    tuned.close()


def test_identical_prompts_differ_and_calls_repeat(tiny_llama) -> None:
    cfg = GenerationConfig(temperature=1.0, top_p=1.0, max_new_tokens=10, seed=3)
    first = tiny_llama.sample([PROMPT, PROMPT], 2, cfg)
    texts = [c.text for per in first for c in per]
    assert len(texts) == 4 and len(set(texts)) == 4  # per-row seeds: four different samples
    again = tiny_llama.sample([PROMPT, PROMPT], 2, cfg)
    assert [c.text for per in again for c in per] == texts
    other = tiny_llama.sample([PROMPT, PROMPT], 2, GenerationConfig(
        temperature=1.0, top_p=1.0, max_new_tokens=10, seed=4))
    assert [c.text for per in other for c in per] != texts


def test_more_rows_than_slots(tiny_llama) -> None:
    """Five prompts x two samples through three slots: every row comes back, in order."""
    prompts = [f"{PROMPT} Variant {k}." for k in range(5)]
    out = tiny_llama.sample(prompts, 2, GenerationConfig(temperature=0.8, max_new_tokens=6, seed=1))
    assert [len(per) for per in out] == [2] * 5
    for per, p in zip(out, prompts, strict=True):
        assert all(c.prompt_tokens == len(_ids(tiny_llama.tokenizer, tiny_llama.format_prompt(p)))
                   for c in per)
        assert all(1 <= c.completion_tokens <= 6 for c in per)
    # greedy rows of one prompt are identical whichever slot ran them
    g = tiny_llama.sample(prompts[:2], 3, _greedy(6))
    assert all(len({c.text for c in per}) == 1 for per in g)


def test_context_too_small_is_a_clear_error(tiny_model_dir: Path) -> None:  # noqa: F811
    from aad_kit.llm.llamacpp import LlamaCppSampler

    s = LlamaCppSampler(tiny_model_dir, parallel=1, num_threads=1, n_ctx=256)
    with pytest.raises(ValueError, match="exceed the llama.cpp context"):
        s.sample([PROMPT * 20], 1, _greedy(200))
    s.close()


def test_registered_name_uses_default_engine(use_llm_cache: Path, monkeypatch) -> None:  # noqa: F811
    from aad_kit.llm import make_sampler
    from aad_kit.llm.hf import HFSampler
    from aad_kit.llm.llamacpp import LlamaCppSampler

    monkeypatch.setenv("AAD_KIT_ENGINE", "llamacpp")
    s = make_sampler("tiny", batch_size=2)
    assert isinstance(s, LlamaCppSampler) and s.parallel == 2
    assert s.info()["backend"] == "llamacpp" and s.info()["gguf_sha256"]
    s.close()
    # an explicit llamacpp: spec gets the stages' keyword arguments too (it raised TypeError
    # "unexpected keyword argument 'batch_size'" from stage 2)
    s = make_sampler("llamacpp:tiny", batch_size=3, device="cpu", dtype="float32", merge_adapter=False)
    assert isinstance(s, LlamaCppSampler) and s.parallel == 3
    s.close()
    s = make_sampler("llamacpp:tiny", batch_size=3, parallel=1)
    assert s.parallel == 1  # the backend's own name wins
    s.close()
    monkeypatch.setenv("AAD_KIT_ENGINE", "hf")
    assert isinstance(make_sampler("tiny"), HFSampler)
    monkeypatch.setenv("AAD_KIT_ENGINE", "vllm")
    with pytest.raises(ValueError, match="AAD_KIT_ENGINE"):
        make_sampler("tiny")
