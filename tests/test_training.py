"""DPO training (aad_kit.training): outputs, adapter, reference model, resume, validation.

Everything runs on the tiny random Llama built locally (no downloads); each training is a
few optimizer steps of well under a second. The tiny model writes gibberish, so these tests
check plumbing and invariants, not learning quality.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest

from aad_kit.training import (
    DPOTrainingConfig,
    build_dpo_trainer,
    config_for_profile,
    dataset_fingerprint,
    load_preference_dataset,
    load_result,
    train_dpo,
    validate_preference_dataset,
)
from aad_kit.training import dpo as dpo_mod
from aad_kit.training import runner as runner_mod
from aad_kit.training.dpo import LOG_COLUMNS, resolve_dtype
from tests.llm_fixtures import llm_cache, tiny_model_dir  # noqa: F401 - pytest fixtures

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SYSTEM = "You write Python heuristics."


def _rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append({
            "prompt": [{"role": "system", "content": SYSTEM},
                       {"role": "user", "content": f"Design heuristic number {i} for bins."}],
            "chosen": [{"role": "assistant",
                        "content": f"Idea: best fit {i}\n```python\ndef f(x):\n    return x * {i}\n```"}],
            "rejected": [{"role": "assistant", "content": f"no idea {i}, sorry"}],
            "chosen_id": 2 * i,
            "rejected_id": 2 * i + 1,
            "scores": [1.0 - 0.1 * i, -5.0],
            "ranks": [0, 3],
            "strategy": "dar",
        })
    return rows


def _dataset(n: int = 6):
    import datasets

    return datasets.Dataset.from_list(_rows(n))


def _config(**kw) -> DPOTrainingConfig:
    base = dict(max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=1,
                max_length=128, learning_rate=5e-3, warmup_ratio=0.0, save_steps=1,
                lora_r=4, lora_alpha=8, seed=0, device="cpu", torch_threads=1)
    base.update(kw)
    return DPOTrainingConfig(**base)


@pytest.fixture(scope="module")
def pref_ds():
    return _dataset(6)


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, pref_ds):  # noqa: F811
    out = tmp_path_factory.mktemp("dpo") / "run"
    return train_dpo(pref_ds, tiny_model_dir, _config(), out, progress=False)


# ---------------------------------------------------------------------------- outputs


def test_two_steps_write_adapter_log_and_manifest(trained, pref_ds, tiny_model_dir):  # noqa: F811
    assert trained.global_step == 2
    assert not trained.already_complete and trained.resumed_from_step is None
    assert (trained.adapter_dir / "adapter_config.json").is_file()
    assert (trained.adapter_dir / "adapter_model.safetensors").is_file()

    log = [json.loads(x) for x in trained.log_jsonl.read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    for col in LOG_COLUMNS:
        assert col in log[0], col
    with open(trained.log_csv, newline="") as fh:
        header = next(csv.reader(fh))
    assert header[: len(LOG_COLUMNS)] == list(LOG_COLUMNS)
    # step 1: the adapter starts at B = 0, so policy == reference and the DPO loss is ln 2
    assert log[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert log[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert log[0]["step_time_s"] > 0

    m = trained.manifest()
    assert m["status"] == "complete" and m["stage"] == "dpo"
    assert m["dataset"]["training_sha256"] == dataset_fingerprint(pref_ds)["training_sha256"]
    assert m["dataset"]["rows"] == 6 and "scores" in m["dataset"]["columns"]
    record = json.loads((tiny_model_dir / "aad_kit_model.json").read_text())
    assert m["base_model"]["path"] == str(tiny_model_dir.resolve())
    assert m["base_model"]["weights_sha256"] == record["weights_sha256"]
    assert m["base_model"]["sha256_from"] == "aad_kit_model.json"
    assert m["config"]["beta"] == 0.1 and m["config"]["max_steps"] == 2
    assert m["packages"]["trl"] and m["packages"]["peft"] and m["packages"]["torch"]
    assert m["device"] == "cpu" and m["dtype"] == "float32"
    assert m["effective"]["gradient_checkpointing"] is False
    assert m["wall_time_s"] > 0 and m["adapter"]["sha256"]
    assert m["global_step"] == 2

    df = trained.log()
    assert list(df["step"]) == [1, 2]
    assert trained.sampler_spec == f"hf:{tiny_model_dir.resolve()}@adapter={trained.adapter_dir}"
    assert load_result(trained.out_dir).global_step == 2
    # one adapter hash: the manifest's is the one the generalisation study pins its answers to
    from aad_kit.evaluation.model_specs import spec_fingerprint
    from aad_kit.models import adapter_sha256

    assert m["adapter"]["sha256"] == adapter_sha256(trained.adapter_dir)
    assert spec_fingerprint(trained.sampler_spec)["adapter_sha256"] == m["adapter"]["sha256"]
    # the Trainer's training_args.bin records output_dir: not part of the model's hash
    from aad_kit.models import sha256_file

    assert (Path(trained.adapter_dir) / "training_args.bin").is_file()
    assert m["adapter"]["sha256"] == sha256_file(Path(trained.adapter_dir) / "adapter_model.safetensors")


def test_adapter_loads_with_stock_peft_and_changes_logits(trained, tiny_model_dir):  # noqa: F811
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tok("def heuristic(items):\n    return sorted(items)", return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        base_logits = base(ids).logits
    tuned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(trained.adapter_dir)).eval()
    with torch.no_grad():
        tuned_logits = tuned(ids).logits
        with tuned.disable_adapter():  # what DPO used as the reference
            ref_logits = tuned(ids).logits
    assert (tuned_logits - base_logits).abs().max().item() > 1e-4
    assert torch.allclose(ref_logits, base_logits, atol=1e-6)


def test_reference_is_the_adapter_disabled_model(pref_ds, tiny_model_dir, tmp_path):  # noqa: F811
    from accelerate.utils import is_peft_model

    trainer, setup = build_dpo_trainer(pref_ds, tiny_model_dir, _config(), tmp_path, progress=False)
    assert trainer.ref_model is None  # no second copy of the model
    assert is_peft_model(trainer.model)
    assert setup.device == "cpu" and setup.dtype == "float32"
    assert trainer.args.bf16 is False
    assert trainer.args.activation_checkpointing is False  # off on CPU by default
    assert trainer.processing_class.pad_token is not None
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


# ---------------------------------------------------------------------------- resume


def test_resume_continues_from_last_checkpoint_and_skips_finished(pref_ds, tiny_model_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    first = train_dpo(pref_ds, tiny_model_dir, _config(max_steps=2), out, progress=False)
    assert first.global_step == 2
    rows_before = [json.loads(x) for x in first.log_jsonl.read_text().splitlines()]

    second = train_dpo(pref_ds, tiny_model_dir, _config(max_steps=4), out, progress=False)
    assert second.resumed_from_step == 2 and second.global_step == 4
    rows = [json.loads(x) for x in second.log_jsonl.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # 3, 4 appended, no restart from 0
    assert rows[:2] == rows_before
    assert rows[2]["elapsed_s"] >= rows[1]["elapsed_s"]
    m = second.manifest()
    assert m["resumed_from_step"] == 2 and m["timing"]["steps_this_call"] == 2
    assert len(m["previous_runs"]) == 1

    adapter_mtime = (second.adapter_dir / "adapter_model.safetensors").stat().st_mtime_ns
    third = train_dpo(pref_ds, tiny_model_dir, _config(max_steps=4), out, progress=False)
    assert third.already_complete and third.global_step == 4
    assert (third.adapter_dir / "adapter_model.safetensors").stat().st_mtime_ns == adapter_mtime
    assert [json.loads(x)["step"] for x in third.log_jsonl.read_text().splitlines()] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="already holds a training at step 4"):
        train_dpo(pref_ds, tiny_model_dir, _config(max_steps=3), out, progress=False)


def test_interrupted_training_resumes_and_redoes_unsaved_steps(pref_ds, tiny_model_dir, tmp_path,  # noqa: F811
                                                                monkeypatch):
    out = tmp_path / "run"
    real = runner_mod._make_log_callback

    def interrupting(out_dir, rows, elapsed):
        cb = real(out_dir, rows, elapsed)
        on_log = cb.on_log

        def on_log_then_stop(args, state, control, logs=None, **kw):
            on_log(args, state, control, logs=logs, **kw)
            if state.global_step == 3:
                raise KeyboardInterrupt  # after step 3 is logged, before it is checkpointed
        cb.on_log = on_log_then_stop
        return cb

    monkeypatch.setattr(runner_mod, "_make_log_callback", interrupting)
    with pytest.raises(KeyboardInterrupt):
        train_dpo(pref_ds, tiny_model_dir, _config(max_steps=4, save_steps=2), out, progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "interrupted"
    assert [json.loads(x)["step"] for x in (out / "training_log.jsonl").read_text().splitlines()] == [1, 2, 3]

    monkeypatch.setattr(runner_mod, "_make_log_callback", real)
    res = train_dpo(pref_ds, tiny_model_dir, _config(max_steps=4, save_steps=2), out, progress=False)
    assert res.resumed_from_step == 2 and res.global_step == 4
    assert [r["step"] for r in dpo_mod.read_log(out)] == [1, 2, 3, 4]  # step 3 redone once


def test_resume_refuses_a_different_training_and_restart_starts_over(pref_ds, tiny_model_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    train_dpo(pref_ds, tiny_model_dir, _config(max_steps=1), out, progress=False)
    with pytest.raises(ValueError, match="learning_rate"):
        train_dpo(pref_ds, tiny_model_dir, _config(max_steps=2, learning_rate=1e-4), out, progress=False)
    with pytest.raises(ValueError, match="training_sha256"):
        train_dpo(_dataset(5), tiny_model_dir, _config(max_steps=2), out, progress=False)
    res = train_dpo(pref_ds, tiny_model_dir, _config(max_steps=2, learning_rate=1e-4), out,
                    resume=False, progress=False)
    assert res.resumed_from_step is None and res.global_step == 2
    assert [r["step"] for r in dpo_mod.read_log(out)] == [1, 2]


# ---------------------------------------------------------------------------- validation


def test_empty_dataset_is_rejected(tiny_model_dir, tmp_path):  # noqa: F811
    import datasets

    empty = datasets.Dataset.from_list(_rows(2)).select([])
    with pytest.raises(ValueError, match="empty"):
        train_dpo(empty, tiny_model_dir, _config(), tmp_path, progress=False)


def test_missing_columns_are_named(tiny_model_dir, tmp_path):  # noqa: F811
    ds = _dataset(3).remove_columns(["rejected"])
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['rejected'\]"):
        train_dpo(ds, tiny_model_dir, _config(), tmp_path, progress=False)


def test_mixed_formats_are_rejected():
    import datasets

    rows = [{"prompt": "plain text prompt", "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": "b"}]}]
    with pytest.raises(ValueError, match="all be strings or all be lists"):
        validate_preference_dataset(datasets.Dataset.from_list(rows))
    assert validate_preference_dataset(_dataset(1)) == "conversational"
    plain = datasets.Dataset.from_list([{"prompt": "p", "chosen": "c", "rejected": "r"}])
    assert validate_preference_dataset(plain) == "text"


def test_fewer_rows_than_batch_size_clamps_the_batch(tiny_model_dir, tmp_path):  # noqa: F811
    with pytest.warns(UserWarning, match="fewer than per_device_train_batch_size=4"):
        res = train_dpo(_dataset(3), tiny_model_dir, _config(per_device_train_batch_size=4,
                                                             max_steps=1), tmp_path, progress=False)
    m = res.manifest()
    assert m["effective"]["per_device_train_batch_size"] == 3
    assert m["effective"]["batch_size_clamped"] is True
    assert res.global_step == 1


def test_prompts_longer_than_max_length_give_a_clear_error(tiny_model_dir, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="raise max_length"):
        train_dpo(_dataset(2), tiny_model_dir, _config(max_length=8), tmp_path, progress=False)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="beta must be > 0"):
        DPOTrainingConfig(beta=0)
    with pytest.raises(ValueError, match="dtype must be"):
        DPOTrainingConfig(dtype="float16")
    with pytest.raises(ValueError, match=r"warmup_ratio.*lora_r"):
        DPOTrainingConfig(warmup_ratio=1.5, lora_r=0)
    cfg = DPOTrainingConfig()
    assert DPOTrainingConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown DPOTrainingConfig fields"):
        DPOTrainingConfig.from_dict({"bogus": 1})


def test_dtype_rule_and_profiles(monkeypatch):
    import torch

    cfg = DPOTrainingConfig()
    assert resolve_dtype(cfg, "cpu") == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype(cfg, "cuda") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype(cfg, "cuda") == "float32"
    assert resolve_dtype(cfg.replace(dtype="bfloat16"), "cpu") == "bfloat16"
    # the one rule (aad_kit.llm.device) for both purposes: sampling falls back to fp16, not fp32
    from aad_kit.llm.device import default_dtype

    assert default_dtype("cuda", "training") == "float32" and default_dtype("cuda", "sampling") == "float16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert default_dtype("cuda", "sampling") == default_dtype("cuda", "training") == "bfloat16"
    assert default_dtype("cpu", "sampling") == default_dtype("cpu", "training") == "float32"
    with pytest.raises(ValueError, match="purpose"):
        default_dtype("cpu", "inference")

    smoke = config_for_profile("smoke")
    from aad_kit.profiles import get_profile

    assert smoke.max_steps == get_profile("smoke").dpo_overrides["max_steps"]
    over = config_for_profile("smoke", max_steps=0, learning_rate=0.0, beta=0.5, seed=0)
    assert over.max_steps == smoke.max_steps and over.beta == 0.5
    assert over.learning_rate == smoke.learning_rate
    assert dpo_mod.base_model_for_profile("smoke") == "tiny"
    with pytest.raises(KeyError):
        config_for_profile("nope")


def test_dataset_sources(tmp_path):
    ds = _dataset(3)
    ds.save_to_disk(str(tmp_path / "pref"))
    ds.to_json(str(tmp_path / "pref.jsonl"))
    fp = dataset_fingerprint(ds)["training_sha256"]
    for src in (tmp_path / "pref", str(tmp_path / "pref.jsonl"), _rows(3)):
        assert dataset_fingerprint(load_preference_dataset(src))["training_sha256"] == fp
    with pytest.raises(FileNotFoundError):
        load_preference_dataset(tmp_path / "missing.jsonl")


def test_precomputed_reference_gives_the_same_first_loss(pref_ds, tiny_model_dir, tmp_path):  # noqa: F811
    res = train_dpo(pref_ds, tiny_model_dir, _config(max_steps=1, precompute_ref_log_probs=True),
                    tmp_path / "pre", progress=False)
    assert res.metrics["loss"] == pytest.approx(math.log(2), abs=1e-4)


def test_held_out_pairs_are_evaluated_every_eval_steps(pref_ds, tiny_model_dir, tmp_path):  # noqa: F811
    """Held-out preference accuracy per step: the pipeline's eval pairs come from settings the
    model is not trained on; the log gets eval rows at steps 2 and 4 and the manifest names
    the eval dataset."""
    eval_ds = _dataset(4).map(lambda r, i: {"chosen": [{"role": "assistant",
                                                        "content": f"```python\ndef g(y):\n    return {i}\n```"}]},
                              with_indices=True)
    res = train_dpo(pref_ds, tiny_model_dir, _config(max_steps=4, eval_steps=2, save_steps=2),
                    tmp_path / "ev", progress=False, eval_dataset=eval_ds)
    log = res.log()
    ev = log.dropna(subset=["eval_rewards/accuracies"])
    assert list(ev["step"]) == [2, 4]
    assert ev["eval_rewards/accuracies"].between(0, 1).all() and ev["eval_loss"].notna().all()
    assert log.dropna(subset=["loss"])["step"].tolist() == [1, 2, 3, 4]  # train rows kept
    m = res.manifest()
    assert m["eval_dataset"]["rows"] == 4 and m["identity"]["eval_dataset_sha256"]
    with pytest.raises(ValueError, match="eval_steps"):
        _config(eval_steps=0)
    # the same curves as TensorBoard events (on by default): train loss per step, held-out
    # preference accuracy per eval step, in the output's tensorboard/ directory
    from aad_kit.tracking import read_scalars

    assert m["tracking"] == {"report_to": ["tensorboard"], "tensorboard_dir": str(tmp_path / "ev" / "tensorboard")}
    tb = read_scalars(tmp_path / "ev" / "tensorboard")
    assert [s for s, _ in tb["train/loss"]] == [1, 2, 3, 4]
    assert [s for s, _ in tb["eval/rewards/accuracies"]] == [2, 4]
    assert [v for _, v in tb["eval/rewards/accuracies"]] == pytest.approx(list(ev["eval_rewards/accuracies"]))
