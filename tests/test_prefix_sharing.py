"""Prompt sharing in DPO (aad_kit.training.prefix_sharing): same loss, metrics and gradients as
TRL's unpatched forward, less work, and a safe fallback when its assumptions do not hold.

The LoRA ``B`` matrices are set to random non-zero values before comparing, so policy and
reference differ (at step 0 they agree exactly and the gradient of ``A`` is zero).
"""

from __future__ import annotations

import math
import os
import warnings

import pytest

from aad_kit.training import DPOTrainingConfig, build_dpo_trainer, train_dpo
from tests.llm_fixtures import llm_cache, tiny_model_dir  # noqa: F401 - pytest fixtures

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")

SYSTEM = "You write Python heuristics."
LONG_PROMPT = ("Design a priority function for online bin packing. " * 12).strip()


def _row(i: int, prompt: str) -> dict:
    return {
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant",
                    "content": f"Idea: best fit {i}\n```python\ndef f(x):\n    return x * {i}"
                               + " + 1" * (i % 4) + "\n```"}],
        "rejected": [{"role": "assistant", "content": f"no idea {i}" + ", sorry" * (i % 3)}],
    }


def _dataset(prompts: list[str]):
    import datasets

    return datasets.Dataset.from_list([_row(i, p) for i, p in enumerate(prompts)])


def _config(**kw) -> DPOTrainingConfig:
    base = dict(max_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                max_length=512, learning_rate=5e-3, warmup_ratio=0.0, save_steps=10,
                lora_r=4, lora_alpha=8, seed=0, device="cpu", torch_threads=1)
    base.update(kw)
    return DPOTrainingConfig(**base)


def _loss_and_grads(ds, model_dir, tmp_path, **config):
    """First micro-batch's loss, TRL metrics and LoRA gradients, with LoRA B randomised."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer, setup = build_dpo_trainer(ds, model_dir, _config(**config), tmp_path,
                                           progress=False)
    gen = torch.Generator().manual_seed(1)
    for name, p in trainer.model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.05
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters()
             if p.grad is not None}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return float(loss.detach()), grads, metrics, setup, getattr(trainer, "prefix_stats", None)


def _assert_same(a, b):
    loss_a, grads_a, metrics_a, *_ = a
    loss_b, grads_b, metrics_b, *_ = b
    assert loss_b == pytest.approx(loss_a, abs=2e-5)
    assert loss_a != pytest.approx(math.log(2), abs=1e-4)  # policy != reference: a real test
    assert set(grads_a) == set(grads_b) and len(grads_a) > 0
    for name, g in grads_a.items():
        scale = float(g.abs().max()) + 1e-12
        assert float((g - grads_b[name]).abs().max()) / scale < 1e-3, name
    assert any(float(g.abs().max()) > 0 for n, g in grads_a.items() if "lora_A" in n)
    assert set(metrics_a) == set(metrics_b)
    for key, value in metrics_a.items():
        assert metrics_b[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize("prompts", [
    [LONG_PROMPT] * 4,  # DAR: one prompt for the whole batch
    [LONG_PROMPT, "Short task.", LONG_PROMPT, "Short task."],  # two prompts, two groups
    [f"Task number {i}: {LONG_PROMPT[: 40 + 30 * i]}" for i in range(4)],  # nothing to share
], ids=["one-prompt", "two-prompts", "distinct-prompts"])
def test_sharing_gives_the_same_loss_metrics_and_gradients(prompts, tiny_model_dir, tmp_path):  # noqa: F811
    ds = _dataset(prompts)
    plain = _loss_and_grads(ds, tiny_model_dir, tmp_path / "a", share_prompt_prefix=False)
    shared = _loss_and_grads(ds, tiny_model_dir, tmp_path / "b", share_prompt_prefix=True)
    assert plain[3].prompt_sharing is False and shared[3].prompt_sharing is True
    _assert_same(plain, shared)
    stats = shared[4]
    assert stats.fallback_calls == 0 and stats.calls == 2  # policy + reference forward
    assert stats.prompts_run == 2 * len(set(prompts))
    assert stats.head_positions_run < stats.head_positions_unshared
    if len(set(prompts)) < len(prompts):
        assert stats.tokens_run < 0.8 * stats.tokens_unshared


def test_truncated_completions_give_the_same_loss(tiny_model_dir, tmp_path):  # noqa: F811
    from transformers import AutoTokenizer

    ds = _dataset([LONG_PROMPT] * 4)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt_len = len(tok.apply_chat_template(ds[0]["prompt"], add_generation_prompt=True,
                                             return_dict=True)["input_ids"])
    cut = prompt_len + 3  # every completion cut to a few tokens by max_length
    plain = _loss_and_grads(ds, tiny_model_dir, tmp_path / "a", share_prompt_prefix=False,
                            max_length=cut)
    shared = _loss_and_grads(ds, tiny_model_dir, tmp_path / "b", max_length=cut)
    _assert_same(plain, shared)


def test_forward_falls_back_where_its_assumptions_fail(tiny_model_dir, tmp_path):  # noqa: F811
    from aad_kit.training.prefix_sharing import is_right_padded

    ds = _dataset([LONG_PROMPT] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer, _ = build_dpo_trainer(ds, tiny_model_dir, _config(), tmp_path, progress=False)
    stats = trainer.prefix_stats
    batch = next(iter(trainer.get_train_dataloader()))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = ids.masked_fill(batch["completion_mask"] == 0, -100)
    inner = trainer.model.get_base_model()
    with torch.no_grad():
        shared = inner(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        # left padding: the same rows flushed right-to-left must be scored by TRL's forward
        left_ids, left_mask, left_labels = (torch.stack([t.roll(int((m == 0).sum())) for t, m in
                                                         zip(x, mask, strict=True)]) for x in (ids, mask, labels))
        assert is_right_padded(mask) and not is_right_padded(left_mask)
        before = stats.fallback_calls
        left = inner(input_ids=left_ids, attention_mask=left_mask, labels=left_labels,
                     fused_lm_head=True)
    assert stats.fallback_calls == before + 1
    assert "not right-padded" in stats.fallback_reasons
    assert torch.allclose(shared.log_probs.sum(1), left.log_probs.sum(1), atol=1e-3)
    # unfused calls (generation, TRL's return_outputs) are TRL's untouched forward
    with torch.no_grad():
        out = inner(input_ids=ids[:1], attention_mask=mask[:1])
    assert out.logits.shape[-1] == inner.config.vocab_size


def test_non_contiguous_labels_are_scored_exactly(tiny_model_dir, tmp_path):  # noqa: F811
    from aad_kit.training.prefix_sharing import shared_prefix_forward

    ds = _dataset([LONG_PROMPT] * 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer, _ = build_dpo_trainer(ds, tiny_model_dir, _config(share_prompt_prefix=False),
                                       tmp_path, progress=False)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    labels = ids.masked_fill(batch["completion_mask"] == 0, -100)
    labels[0, 5:9] = ids[0, 5:9]  # a labelled island inside the prompt of row 0
    inner = trainer.model.get_base_model()
    with torch.no_grad():
        ref = inner(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        got = shared_prefix_forward(inner, ids, mask, labels, outputs=("log_probs", "entropy"))
    assert torch.allclose(ref.log_probs, got.log_probs, atol=1e-4)
    assert torch.allclose(ref.entropy, got.entropy, atol=1e-4)


def test_training_with_sharing_records_it_and_matches_precompute(tiny_model_dir, tmp_path):  # noqa: F811
    ds = _dataset([LONG_PROMPT] * 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = train_dpo(ds, tiny_model_dir, _config(max_steps=2, share_prompt_prefix=False),
                          tmp_path / "plain", progress=False)
        shared = train_dpo(ds, tiny_model_dir, _config(max_steps=2), tmp_path / "shared",
                           progress=False)
        pre = train_dpo(ds, tiny_model_dir, _config(max_steps=2, precompute_ref_log_probs=True),
                        tmp_path / "pre", progress=False)
    assert shared.manifest()["effective"]["prompt_sharing"] is True
    assert plain.manifest()["effective"]["prompt_sharing"] is False
    for other in (shared, pre):
        for row_a, row_b in zip(plain.log().to_dict("records"), other.log().to_dict("records"), strict=True):
            assert row_b["loss"] == pytest.approx(row_a["loss"], abs=1e-4)
            assert row_b["rewards/margins"] == pytest.approx(row_a["rewards/margins"], abs=1e-4)


def test_gradient_checkpointing_turns_sharing_off(tiny_model_dir, tmp_path):  # noqa: F811
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, setup = build_dpo_trainer(_dataset([LONG_PROMPT] * 2), tiny_model_dir,
                                     _config(gradient_checkpointing=True), tmp_path,
                                     progress=False)
    assert setup.prompt_sharing is False
    assert any("gradient checkpointing" in n for n in setup.notes)


def test_precompute_turns_on_from_one_epoch():
    from aad_kit.training import config_for_profile
    from aad_kit.training.dpo import resolve_precompute

    cfg = DPOTrainingConfig(max_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=1)
    assert resolve_precompute(cfg, rows=4, batch_size=2) is True  # 4 pair visits = 1 epoch
    assert resolve_precompute(cfg, rows=5, batch_size=2) is False
    assert resolve_precompute(cfg.replace(precompute_ref_log_probs=False), 1, 2) is False
    assert resolve_precompute(DPOTrainingConfig(num_train_epochs=0.5), 100, 2) is False
    assert resolve_precompute(DPOTrainingConfig(num_train_epochs=3), 100, 2) is True
    quick = config_for_profile("quick")  # 8 steps x batch 2 over DAR's few pairs
    assert quick.share_prompt_prefix is True and resolve_precompute(quick, 8, 2) is True


def test_trl_chunked_head_path_gives_the_same_results(tiny_model_dir, tmp_path, monkeypatch):  # noqa: F811
    """Large batches (logits over 2 GiB) and GPUs use TRL's chunked kernel instead of full
    logits: both heads must agree."""
    from aad_kit.training import prefix_sharing

    ds = _dataset([LONG_PROMPT] * 4)
    plain = _loss_and_grads(ds, tiny_model_dir, tmp_path / "a", share_prompt_prefix=False)
    monkeypatch.setattr(prefix_sharing, "_PLAIN_HEAD_MAX_BYTES", 0)
    chunked = _loss_and_grads(ds, tiny_model_dir, tmp_path / "b")
    _assert_same(plain, chunked)


def test_evaluation_with_reference_precomputed_once_matches_trls(tiny_model_dir, tmp_path):  # noqa: F811
    """Held-out evaluation: reference log-probs computed once and 4-pair batches give the
    metrics TRL's per-evaluation reference forward gives in the training batch size."""
    ds, held_out = _dataset([LONG_PROMPT] * 4), _dataset([LONG_PROMPT] * 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer, setup = build_dpo_trainer(ds, tiny_model_dir, _config(per_device_train_batch_size=2, eval_steps=1,
                                                                   precompute_ref_log_probs=False),
                                           tmp_path, progress=False, eval_dataset=held_out)
    assert setup.eval_reference_precomputed is True and setup.precompute_ref_log_probs is False
    assert setup.eval_batch_size == 8 and trainer.args.per_device_eval_batch_size == 8
    assert "ref_chosen_logps" in trainer.eval_dataset.column_names
    assert "ref_chosen_logps" not in trainer.train_dataset.column_names  # training keeps the live reference
    gen = torch.Generator().manual_seed(1)
    for name, p in trainer.model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.05
    columns = ["ref_chosen_logps", "ref_rejected_logps"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # precompute again now that the adapter is non-zero (a fresh cache key), so a pass that
        # scored the adapter-enabled policy instead of the reference would show below
        trainer._precompute_model_hash = "lora-B-randomised"
        trainer._eval_ref_precomputed = False
        trainer.eval_dataset = trainer.eval_dataset.remove_columns(columns)
        trainer._precompute_eval_reference()
        assert trainer._eval_ref_precomputed is True
        once = trainer.evaluate()
        # TRL's own path on the same weights: no precomputed columns, the training batch size
        trainer._eval_ref_precomputed = False
        trainer.eval_dataset = trainer.eval_dataset.remove_columns(columns)
        trainer.args.per_device_eval_batch_size = 2
        live = trainer.evaluate()
    assert once["eval_loss"] != pytest.approx(math.log(2), abs=1e-4)  # policy != reference
    for key in ("eval_loss", "eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins",
                "eval_rewards/accuracies", "eval_logps/chosen", "eval_logps/rejected"):
        assert once[key] == pytest.approx(live[key], rel=1e-4, abs=1e-5), key
    # training batches still run their reference forward (the flag is switched per batch)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer._eval_ref_precomputed = True
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    assert math.isfinite(float(loss)) and trainer.precompute_ref_logps is False


def test_eval_batch_size_divides_the_held_out_pairs():
    from aad_kit.training.trainer import eval_batch_size

    assert eval_batch_size(32, 2) == 8 and eval_batch_size(64, 2) == 8
    assert eval_batch_size(12, 2) == 6 and eval_batch_size(7, 2) == 7
    assert eval_batch_size(31, 2) == 2  # prime: the training batch, as before
    assert eval_batch_size(3, 4) == 4 and eval_batch_size(1, 1) == 1
