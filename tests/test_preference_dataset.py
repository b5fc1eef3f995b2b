"""Pairs -> TRL preference Dataset -> disk; the database entry point; TRL takes it unchanged."""

from __future__ import annotations

import json
import os
import warnings

import pytest

from aad_kit.db import AlgorithmDB
from aad_kit.preference import (
    METADATA_COLUMNS,
    PairConfig,
    PreferenceDataError,
    build_preference_dataset,
    has_chat_template,
    load_records,
    sample_pairs,
    save_preference_data,
    to_dataset,
)
from aad_kit.prompts import SYSTEM_PROMPT, as_messages, format_answer, i1_prompt
from tests.test_dar import TASK, family_records, rec, search_db  # noqa: F401 - fixture

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _pairs(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sample_pairs(family_records(6, 5, seed=0, n_failed=4), "dar_diverse", PairConfig(**kw))


def test_conversational_rows_match_inference_prompt_and_answers():
    ps = _pairs(failed_as_rejected=True)
    ds = to_dataset(ps, run_id="run-1")
    assert ds.column_names == ["prompt", "chosen", "rejected", *METADATA_COLUMNS]
    assert len(ds) == len(ps)
    want_prompt = as_messages(i1_prompt(TASK))
    assert want_prompt[0] == {"role": "system", "content": SYSTEM_PROMPT}
    for row, p in zip(ds, ps.pairs, strict=True):
        assert row["prompt"] == want_prompt  # exactly what the generator sees
        assert row["chosen"] == [{"role": "assistant", "content": format_answer(p.chosen.idea, p.chosen.code)}]
        assert row["rejected"] == [{"role": "assistant", "content": p.rejected.answer}]
        assert (row["chosen_id"], row["rejected_id"]) == (p.chosen.id, p.rejected.id)
        assert row["chosen_score"] == p.chosen.score and row["chosen_rank"] == p.chosen_rank
        assert (row["chosen_subset"], row["rejected_subset"]) == (p.chosen_subset, p.rejected_subset)
        assert row["strategy"] == "dar_diverse" and row["task"] == TASK and row["run_id"] == "run-1"
        if p.rejected_failed:
            assert row["rejected_score"] is None and row["rejected_rank"] is None
            assert row["rejected_status"] == "runtime_error"
        else:
            assert row["rejected_score"] < row["chosen_score"]


def test_plain_string_rows_and_raw_failed_answers():
    recs = [rec(1, 5.0), rec(2, 1.0),
            rec(3, None, status="missing_function", code=None, raw_response="  Sorry, I cannot.  ")]
    ps = sample_pairs(recs, "dar_diverse", PairConfig(failed_as_rejected=True, n_pairs=2))
    ds = to_dataset(ps, conversational=False)
    assert all(r["prompt"] == i1_prompt(TASK) for r in ds)
    failed = [r for r in ds if r["rejected_id"] == 3]
    assert failed and failed[0]["rejected"] == "Sorry, I cannot."  # the model's own words
    assert all(r["chosen"].startswith("```python\n") and r["chosen"].endswith("\n```") for r in ds)


def test_seed_heuristics_lose_their_provenance_header():
    from aad_kit.tasks import get_task

    h = get_task("tsp_construct").heuristics()["nearest_neighbour"]
    seed = {**rec(1, -4.0, h.code, operator="seed", idea=f"shipped heuristic nearest_neighbour: {h.source}"),
            "task": "tsp_construct"}
    failed = {**rec(2, None, status="missing_function", code=None, raw_response="nonsense"), "task": "tsp_construct"}
    ps = sample_pairs([seed, failed], "dar_diverse", PairConfig(failed_as_rejected=True))
    row = to_dataset(ps)[0]
    chosen = row["chosen"][0]["content"]
    assert chosen.startswith("```python\n")
    assert '"""Nearest neighbour: always move to the closest unvisited node' in chosen
    assert "# source:" not in chosen and "Rosenkrantz" not in chosen and "def select_next_node" in chosen
    assert row["prompt"][1]["content"] == i1_prompt("tsp_construct")


def test_save_and_reload(tmp_path):
    import datasets

    ps = _pairs(failed_as_rejected=True)
    paths = save_preference_data(ps, tmp_path, run_id="run-1")
    assert paths["dataset"] == tmp_path / "preference" / "pairs_dar_diverse"
    back = datasets.load_from_disk(str(paths["dataset"]))
    assert back.to_list() == to_dataset(ps, run_id="run-1").to_list()
    lines = [json.loads(x) for x in paths["log"].read_text().splitlines()]
    assert len(lines) == len(ps)
    first = lines[0]
    for key in ("chosen_id", "rejected_id", "chosen_score", "rejected_score", "chosen_rank", "rejected_rank",
                "chosen_subset", "rejected_subset", "chosen_idea", "rejected_idea", "score_gap"):
        assert key in first
    summary = json.loads(paths["summary"].read_text())
    assert summary["n_pairs"] == len(ps) and summary["config"]["failed_as_rejected"] is True
    assert summary["stats"]["distinct_chosen"] >= 1 and summary["run_id"] == "run-1"


def test_build_from_a_real_database(search_db, tmp_path):  # noqa: F811
    path, run_id = search_db
    ds, ps = build_preference_dataset(path, "dar_diverse", PairConfig(seed=1), run_dir=tmp_path)
    assert len(ds) == len(ps) > 0 and set(ds["run_id"]) == {run_id}
    assert (tmp_path / "preference" / "pairs_dar_diverse" / "dataset_info.json").exists()
    assert (tmp_path / "preference" / "pairs_dar_diverse.jsonl").exists()
    with AlgorithmDB(path) as db:
        by_id = {r.id: r for r in db.records(run_id)}
    for row in ds:
        c, r = by_id[row["chosen_id"]], by_id[row["rejected_id"]]
        if c.operator != "seed":  # seeds: see test_seed_heuristics_lose_their_provenance_header
            assert row["chosen"][0]["content"] == format_answer(c.idea, c.code)
        assert c.score > r.score and c.duplicate_of is None and r.duplicate_of is None
    # run selection: explicit, the only/most recent one, unknown
    recs, rid = load_records(path)
    assert rid == run_id and recs
    with pytest.raises(PreferenceDataError, match="no run 'nope'"):
        load_records(path, "nope")
    with pytest.raises(PreferenceDataError, match="no algorithm database"):
        load_records(tmp_path / "missing.sqlite")
    with AlgorithmDB(tmp_path / "empty.sqlite"):
        pass
    with pytest.raises(PreferenceDataError, match="holds no algorithms"):
        load_records(tmp_path / "empty.sqlite")


def test_has_chat_template(tmp_path):
    class Tok:
        chat_template = "{{ messages }}"

    assert has_chat_template(Tok()) and not has_chat_template(object())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "x"}))
    assert has_chat_template(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert not has_chat_template(tmp_path)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from aad_kit.models import build_tiny_model

    out = tmp_path_factory.mktemp("tiny")
    build_tiny_model(out, hidden_size=32, num_layers=1)
    return out


@pytest.mark.parametrize("conversational", [True, False])
def test_trl_dpo_trainer_accepts_the_dataset_unchanged(tiny_model_dir, tmp_path, conversational):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    ds = to_dataset(_pairs(failed_as_rejected=True, n_pairs=4), conversational=conversational)
    assert has_chat_template(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    # max_length: the i1 prompt alone is several hundred tokens with the tiny tokenizer, and
    # TRL drops examples whose completion is truncated away (then: "num_samples=0").
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2,
                     use_cpu=True, report_to=[], max_length=2048, save_strategy="no")
    peft = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft)
        out = trainer.train()
    assert out.global_step == 1 and out.training_loss == pytest.approx(0.6931, abs=0.05)
