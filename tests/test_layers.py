"""The package's layers: one model-spec grammar, dependency direction, old import paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aad_kit.llm.spec import ModelSpec, adapter_of, format_spec, parse_spec, with_adapter

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- spec grammar
@pytest.mark.parametrize("spec, parsed", [
    ("tiny", ModelSpec("", "tiny")),
    ("tiny@adapter=/a/b", ModelSpec("", "tiny", "/a/b")),
    ("hf:/m", ModelSpec("hf", "/m")),
    ("hf:/m@adapter=/a", ModelSpec("hf", "/m", "/a")),
    ("llamacpp:smollm2-135m@adapter=/a", ModelSpec("llamacpp", "smollm2-135m", "/a")),
    ("openai:http://h:8000/v1#m", ModelSpec("openai", "http://h:8000/v1#m")),
    ("replay:/x/answers.jsonl", ModelSpec("replay", "/x/answers.jsonl")),
    ("/dir/with:colon", ModelSpec("", "/dir/with:colon")),  # not a scheme: a bare target
    ("nope:thing", ModelSpec("", "nope:thing")),
])
def test_parse_and_format_round_trip(spec, parsed):
    assert parse_spec(spec) == parsed
    assert format_spec(parsed) == str(parsed) == spec
    assert parse_spec(f"  {spec}\n") == parsed


def test_malformed_adapters_and_with_adapter(tmp_path):
    for bad in ("tiny@adapter=", "@adapter=/a", "hf:/m@adapter="):
        with pytest.raises(ValueError, match="malformed adapter spec"):
            parse_spec(bad)
    assert parse_spec("tiny@adapter=", strict=False) == ModelSpec("", "tiny", "")
    assert with_adapter("tiny", tmp_path) == f"tiny@adapter={tmp_path.resolve()}"
    assert with_adapter(" hf:/m ", "rel") == f"hf:/m@adapter={Path('rel').resolve()}"
    for remote in ("openai:http://h/v1#m", "replay:/x.jsonl"):
        with pytest.raises(ValueError, match="local model"):
            with_adapter(remote, tmp_path)
    with pytest.raises(ValueError, match="already has an adapter"):
        with_adapter("tiny@adapter=/a", tmp_path)
    assert adapter_of("hf:/m@adapter=/a") == Path("/a") and adapter_of("tiny") is None
    with pytest.raises(ValueError, match="no adapter"):
        format_spec("openai", "http://h/v1#m", "/a")


def test_every_consumer_reads_the_same_grammar(tmp_path):
    """The generalisation facade's with_adapter is the spec module's; the chat-template check
    and make_sampler split the adapter off the same way."""
    from aad_kit.evaluation import generalisation as gen
    from aad_kit.llm import make_sampler
    from aad_kit.preference import model_uses_chat_template

    assert gen.with_adapter is with_adapter
    (tmp_path / "tokenizer_config.json").write_text('{"chat_template": ""}')
    assert model_uses_chat_template(f"hf:{tmp_path}@adapter=/nowhere") is False
    assert model_uses_chat_template(f"{tmp_path}@adapter=/nowhere") is False
    assert model_uses_chat_template("openai:http://h/v1#m") is True
    with pytest.raises(ValueError, match="malformed adapter spec"):
        make_sampler("tiny@adapter=")
    with pytest.raises(ValueError, match="adapter given twice"):
        make_sampler(f"hf:{tmp_path}@adapter=/a", adapter_path="/b")


# ---------------------------------------------------------------------------- dependencies
def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return set(out.split())


def test_tasks_do_not_import_the_sandbox():
    loaded = _modules_after("import aad_kit.tasks\nfrom aad_kit.tasks import get_task\n"
                            "[get_task(n) for n in aad_kit.tasks.TASK_NAMES]")
    assert not {m for m in loaded if m.startswith("aad_kit.sandbox")}


def test_the_worker_side_does_not_load_the_pool():
    """What a worker or a one-shot candidate interpreter imports: not the pool or its cache
    (the package __init__ is lazy; no sys.modules workaround is needed)."""
    loaded = _modules_after("import aad_kit.sandbox.worker, aad_kit.sandbox.guard")
    assert "aad_kit.sandbox.worker" in loaded
    assert not {"aad_kit.sandbox.pool", "aad_kit.sandbox.cache", "sqlite3"} & loaded
    loaded = _modules_after("from aad_kit.sandbox import Sandbox, evaluate")
    assert "aad_kit.sandbox.pool" in loaded


def test_importing_the_training_and_evaluation_packages_is_cheap():
    loaded = _modules_after("import aad_kit.training, aad_kit.training.dpo, aad_kit.llm.device")
    assert "torch" not in loaded and "transformers" not in loaded


# ---------------------------------------------------------------------------- old paths
def test_old_import_paths_still_work():
    from aad_kit.evaluation import generalisation as gen
    from aad_kit.preference import core, dar, paper_dar
    from aad_kit.training import dpo

    for name in dpo.__all__:
        assert getattr(dpo, name) is not None, name
    for name in gen.__all__:
        assert getattr(gen, name) is not None, name
    for name in ("Candidate", "Pair", "PairConfig", "PairSet", "Pool", "PreferenceDataError",
                 "build_pool", "make_pair", "finish", "_as_records", "_candidate", "_get"):
        assert getattr(dar, name) is getattr(core, name), name
    assert paper_dar.PairSet is core.PairSet
    from aad_kit.llm.hf import default_num_threads
    from aad_kit.sandbox import DEFAULT_ALLOWED_IMPORTS, ResultCache, check_code, sandbox_info

    assert callable(default_num_threads) and callable(check_code) and callable(sandbox_info)
    assert DEFAULT_ALLOWED_IMPORTS and ResultCache
    import aad_kit.sandbox as sb

    with pytest.raises(AttributeError):
        sb.no_such_name  # noqa: B018
    assert "evaluate" in dir(sb)
