"""The generalisation study with fake models whose answers are known programs.

The "good" model answers with the shipped heuristics (``data/heuristics/<task>/``, written in
the answer format), the "bad" one with garbage (no code, or code that does not parse), the
"mixed" one alternates. Expected valid rates and scores are computed independently by running
the same heuristics in-process with ``Task.run``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from aad_kit.evaluation import plots as gen_plots
from aad_kit.evaluation.generalisation import (
    ANSWERS_JSONL,
    COMPARISON_CSV,
    CONFIG_JSON,
    CURVES_CSV,
    SAMPLE_COLUMNS,
    SAMPLES_CSV,
    SUMMARY_CSV,
    ConfigMismatch,
    GeneralisationConfig,
    default_grid,
    load_answers,
    load_samples,
    parse_settings,
    resolve_models,
    run_generalisation,
    run_search_comparison,
)
from aad_kit.llm.base import Completion, GenerationConfig
from aad_kit.plots import save_figure
from aad_kit.prompts import format_answer, i1_prompt
from aad_kit.result import Status
from aad_kit.sandbox import Sandbox, SandboxConfig
from aad_kit.tasks import TASK_NAMES, get_task
from tests.llm_fixtures import llm_cache, tiny_lora_dir, tiny_model_dir, use_llm_cache  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "06_generalisation.ipynb"
N = 4
DEFAULT_GEN = GenerationConfig()
SEEDS = (0, 1)
GARBAGE = (
    "I am not sure how to write this, sorry.",  # no code -> missing_function
    "Idea: broken.\n```python\ndef priority(el, n, w):\n    return (1 +\n```",  # syntax_error
)


def _task_of(prompt: str) -> str:
    for name in TASK_NAMES:
        if get_task(name).signature in prompt:
            return name
    raise AssertionError("prompt names no known task")


def heuristics(task: str) -> list:
    return list(get_task(task).heuristics().values())


class FakeSampler:
    """Answer j of a call with seed s is a pure function of (task, kind, s * n + j)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.model_id = f"fake/{kind}"
        self.calls: list[tuple[str, int, int]] = []  # (task, n, seed)

    def answer(self, task: str, i: int) -> str:
        hs = heuristics(task)
        if self.kind == "good" or (self.kind == "mixed" and i % 2 == 0):
            h = hs[i % len(hs)]
            return format_answer(f"shipped {h.name}", h.code)
        return GARBAGE[i % 2]

    def sample(self, prompts: Sequence[str], n: int = 1,
               config: GenerationConfig = DEFAULT_GEN) -> list[list[Completion]]:
        out = []
        for p in prompts:
            task = _task_of(p)
            self.calls.append((task, n, config.seed))
            out.append([Completion(self.answer(task, config.seed * n + j), completion_tokens=7)
                        for j in range(n)])
        return out

    def info(self) -> dict:
        return {"backend": "fake", "model_id": self.model_id}


class CountingEvaluator:
    """Wraps a sandbox; records every batch of jobs; can be told to fail."""

    def __init__(self, sandbox: Sandbox, fail: bool = False) -> None:
        self.sandbox = sandbox
        self.fail = fail
        self.jobs: list[tuple[str, str, str]] = []

    def evaluate_many(self, jobs, progress=False):
        jobs = list(jobs)
        if self.fail:
            raise RuntimeError("evaluator down")
        self.jobs += jobs
        return self.sandbox.evaluate_many(jobs, progress=progress)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(workers=2)) as sb:
        yield sb


def make_config(models=None, **kw) -> GeneralisationConfig:
    base = dict(
        models=models or {"bad": "fake:bad", "mixed": "fake:mixed", "good": "fake:good"},
        train_task="admissible_set", train_setting="n12_w7", held_out_settings=("n15_w10",),
        other_settings={"tsp_construct": ["n20"]}, samples_per_seed=N, seeds=SEEDS,
        max_new_tokens=64, n_boot=500,
    )
    base.update(kw)
    return GeneralisationConfig(**base)


def fakes(*kinds: str) -> dict[str, FakeSampler]:
    return {k: FakeSampler(k) for k in kinds}


def expected_scores(kind: str, task: str, setting: str) -> dict[tuple[int, int], float]:
    """(seed, sample) -> score of every valid answer, computed in-process."""
    t = get_task(task)
    fake = FakeSampler(kind)
    out = {}
    for seed in SEEDS:
        for j in range(N):
            i = seed * N + j
            if kind == "good" or (kind == "mixed" and i % 2 == 0):
                h = heuristics(task)[i % len(heuristics(task))]
                assert fake.answer(task, i).startswith("```python\n")
                out[(seed, j)] = t.run(h.function(t.function_name), setting).score
    return out


# ----------------------------------------------------------------------------------------- grid
def test_profile_grid_roles_and_settings_parsing():
    # the pre-registered grid of the main experiment lives in the profile (aad_kit.profiles)
    train_task, train, held, others = default_grid("smoke")
    assert (train_task, train) == ("admissible_set", "n15_w10")
    assert held == ["n12_w7"] and others == [("tsp_construct", "n20")]
    cfg = GeneralisationConfig.from_profile("smoke", {"base": "tiny"})
    assert [(c.task, c.setting, c.role) for c in cfg.cells] == [
        ("admissible_set", "n15_w10", "train"), ("admissible_set", "n12_w7", "held_out"),
        ("tsp_construct", "n20", "other_task"),
    ]
    assert cfg.tasks == ["admissible_set", "tsp_construct"]
    assert (cfg.samples_per_seed, cfg.seeds, cfg.max_new_tokens) == (4, (0, 1), 48)
    quick = GeneralisationConfig.from_profile("quick", {"base": "tiny"})
    assert quick.held_out_settings == ("n12_w7", "n18_w12")
    assert quick.other_settings == (("tsp_construct", "n50"),)
    assert (quick.samples_per_seed, quick.seeds) == (16, (0, 1))
    assert len(quick.grid_frame()) == len(quick.cells)

    parsed = parse_settings(["n50", "bin_packing:or3", "n15_w10", "admissible_set"], "smoke",
                            "tsp_construct")
    assert parsed == [("tsp_construct", "n50"), ("bin_packing", "or3"),
                      ("admissible_set", "n15_w10"), ("admissible_set", "n12_w7")]
    custom = GeneralisationConfig.from_profile("smoke", {"base": "tiny"}, settings=["n18_w12", "or3"],
                                               seeds=[3], samples_per_seed=2, max_new_tokens=16)
    assert custom.held_out_settings == ("n18_w12",)
    assert custom.other_settings == (("bin_packing", "or3"),)
    assert (custom.seeds, custom.samples_per_seed, custom.max_new_tokens) == ((3,), 2, 16)
    # list parameters as a command line passes them
    as_text = GeneralisationConfig.from_profile("smoke", {"base": "tiny"}, settings='["n18_w12", "or3"]',
                                                seeds="3", samples_per_seed=2, max_new_tokens=16,
                                                top_k="1, 2")
    assert as_text == dataclasses.replace(custom, top_k=(1, 2))
    with pytest.raises(KeyError, match="unknown"):
        parse_settings(["no_such_setting"], "smoke", "tsp_construct")
    with pytest.raises(ValueError, match="training task"):
        make_config(other_settings={"admissible_set": ["n15_w10"]})
    with pytest.raises(ValueError, match="distinct"):
        make_config(seeds=(1, 1))
    assert GeneralisationConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_resolve_models(tmp_path):
    from aad_kit.training import run_adapter_dir

    models, note = resolve_models("smoke", tmp_path)
    assert models == {"base": "tiny"} and "No tuned model" in note and "skipped" in note
    (tmp_path / "adapter").mkdir()  # not where the DPO stage writes: ignored
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    assert "tuned" not in resolve_models("smoke", tmp_path)[0]
    adapter = run_adapter_dir(tmp_path)  # where the pipeline's DPO stage writes it
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    models, note = resolve_models("smoke", tmp_path)
    assert models["tuned"] == f"tiny@adapter={adapter.resolve()}"
    models, _ = resolve_models("smoke", None, base_model="hf:/m", adapter_dir=adapter)
    assert models == {"base": "hf:/m", "tuned": f"hf:/m@adapter={adapter.resolve()}"}
    models, _ = resolve_models("smoke", tmp_path, base_model="replay:a.jsonl", tuned_model="replay:b.jsonl")
    assert models == {"base": "replay:a.jsonl", "tuned": "replay:b.jsonl"}
    with pytest.raises(ValueError, match="local model"):
        resolve_models("smoke", tmp_path, base_model="replay:a.jsonl")
    with pytest.raises(FileNotFoundError):
        resolve_models("smoke", None, adapter_dir=tmp_path / "nope")


# ----------------------------------------------------------------------------------- the table
def test_long_table_and_metrics_match_the_known_programs(tmp_path, sandbox):
    cfg = make_config()
    samplers = fakes("bad", "mixed", "good")
    res = run_generalisation(cfg, tmp_path, samplers=samplers, sandbox=sandbox, progress=False)
    df = res.samples
    assert list(df.columns) == list(SAMPLE_COLUMNS)
    assert len(df) == 3 * len(SEEDS) * N * 3  # models x answers x settings
    assert res.cells_done == 3 * 2 * len(SEEDS) and res.answers_sampled == 3 * 2 * len(SEEDS) * N
    # one sampling call per (model, task, seed), with the i1 prompt and the seed
    for s in samplers.values():
        assert sorted(s.calls) == sorted((t, N, seed) for t in ("admissible_set", "tsp_construct")
                                         for seed in SEEDS)
    assert set(zip(df["setting"], df["role"], strict=True)) == {
        ("n12_w7", "train"), ("n15_w10", "held_out"), ("n20", "other_task")}

    # garbage: the parser's status, never evaluated
    bad = df[df["model"] == "bad"]
    assert set(bad["status"]) == {Status.MISSING_FUNCTION.value, Status.SYNTAX_ERROR.value}
    assert (bad["eval_time"] == 0).all() and bad["score"].isna().all() and not bad["valid"].any()

    # the same answers are scored on both settings of a task
    adm = df[(df["model"] == "good") & (df["task"] == "admissible_set")]
    by_setting = adm.pivot(index=["seed", "sample"], columns="setting", values="code_hash")
    assert (by_setting["n12_w7"] == by_setting["n15_w10"]).all()

    summary = res.summary.set_index(["model", "task", "setting"])
    for kind, rate in (("bad", 0.0), ("mixed", 0.5), ("good", 1.0)):
        for task, setting in (("admissible_set", "n12_w7"), ("admissible_set", "n15_w10"),
                              ("tsp_construct", "n20")):
            row = summary.loc[(kind, task, setting)]
            exp = expected_scores(kind, task, setting)
            got = df[(df["model"] == kind) & (df["task"] == task) & (df["setting"] == setting)]
            assert row["valid_rate"] == rate and row["n_samples"] == len(SEEDS) * N
            assert row["n_valid"] == len(exp)
            got_scores = {(int(r.seed), int(r.sample)): r.score for r in got.itertuples() if r.valid}
            assert got_scores == pytest.approx(exp)
            if not exp:  # honest reporting: no valid answer -> NaN, not 0
                assert math.isnan(row["mean_score"]) and math.isnan(row["mean_score_lo"])
                assert math.isnan(row["best_score"]) and math.isnan(row["top1_mean"])
                assert row["valid_rate_lo"] == row["valid_rate_hi"] == 0.0
                assert row["valid_rate_wilson_hi"] > 0.2
                continue
            scores = np.array(list(exp.values()))
            assert row["mean_score"] == pytest.approx(scores.mean())
            assert row["mean_score_lo"] <= row["mean_score"] <= row["mean_score_hi"]
            assert row["best_score"] == pytest.approx(scores.max())
            per_seed_best = [max(v for (s, _), v in exp.items() if s == seed) for seed in SEEDS]
            assert row["top1_mean"] == pytest.approx(np.mean(per_seed_best))
            assert row["top1_seeds"] == len(SEEDS)
            if kind == "mixed":  # 2 valid answers per seed: no top-3
                assert math.isnan(row["top3_mean"]) and row["top3_seeds"] == 0
            else:
                top3 = [np.mean(sorted(v for (s, _), v in exp.items() if s == seed)[-3:]) for seed in SEEDS]
                assert row["top3_mean"] == pytest.approx(np.mean(top3))
            task_obj = get_task(task)
            metric_sign = -1 if task_obj.metric_lower_is_better else 1
            assert row["mean_metric"] == pytest.approx(metric_sign * scores.mean())

    # everything is on disk and reloads to the same table
    for name in (SAMPLES_CSV, SUMMARY_CSV, ANSWERS_JSONL, CONFIG_JSON):
        assert (tmp_path / name).is_file()
    assert not (tmp_path / COMPARISON_CSV).exists()  # no "base"/"tuned" pair in this config
    pd.testing.assert_frame_equal(load_samples(tmp_path), df)
    answers = load_answers(tmp_path)
    assert len(answers) == 3 * 2 * len(SEEDS) and all(len(v) == N for v in answers.values())
    rec = answers[("good", "tsp_construct", 1)][0]
    assert rec["text"].startswith("```python\n") and rec["code"] and rec["status_hint"] is None
    state = json.loads((tmp_path / CONFIG_JSON).read_text())
    assert state["models"]["good"]["samples_per_seed"] == N
    assert state["model_info"]["good"]["model_id"] == "fake/good"
    assert pd.read_csv(tmp_path / SUMMARY_CSV).shape[0] == 9


def test_comparison_base_vs_tuned(tmp_path, sandbox):
    cfg = make_config(models={"base": "fake:bad", "tuned": "fake:good"})
    res = run_generalisation(cfg, tmp_path, sandbox=sandbox, progress=False,
                             samplers={"base": FakeSampler("bad"), "tuned": FakeSampler("good")})
    cmp_ = res.comparison.set_index("setting")
    assert (tmp_path / COMPARISON_CSV).is_file()
    assert list(cmp_.index) == ["n12_w7", "n15_w10", "n20"] and cmp_["paired"].all()
    row = cmp_.loc["n12_w7"]
    assert row["d_valid_rate"] == 1.0 and row["valid_rate_differs"]
    assert math.isnan(row["d_mean_score"]) and not row["mean_score_differs"]
    assert "tuned higher" in row["verdict"] and "base without a valid answer" in row["verdict"]

    # a model against itself: no difference, and the intervals say so
    cfg2 = make_config(models={"base": "fake:good", "tuned": "fake:good2"})
    res2 = run_generalisation(cfg2, None, sandbox=sandbox, progress=False,
                              samplers={"base": FakeSampler("good"), "tuned": FakeSampler("good")})
    c2 = res2.comparison
    assert (c2["d_valid_rate"] == 0).all() and (c2["d_mean_score"] == 0).all()
    assert not c2["valid_rate_differs"].any() and not c2["mean_score_differs"].any()
    assert c2["verdict"].str.contains("not distinguishable from 0").all()

    # mixed vs good: tuned has more valid answers; the difference is estimated with a CI
    cfg3 = make_config(models={"base": "fake:mixed", "tuned": "fake:good"}, seeds=(0, 1, 2, 3))
    res3 = run_generalisation(cfg3, None, sandbox=sandbox, progress=False,
                              samplers={"base": FakeSampler("mixed"), "tuned": FakeSampler("good")})
    r3 = res3.comparison.set_index("setting").loc["n12_w7"]
    assert r3["d_valid_rate"] == 0.5 and r3["valid_rate_differs"]
    assert r3["d_valid_rate_lo"] > 0 and not math.isnan(r3["d_mean_score_lo"])

    figs = gen_plots.make_figures(res3.samples, res3.summary, res3.comparison)
    assert {"generalisation_valid_rate", "generalisation_mean_score", "generalisation_top1_mean",
            "generalisation_score_distributions", "generalisation_status_shares",
            "generalisation_diff_valid_rate", "generalisation_diff_mean_score"} == set(figs)
    for name, fig in figs.items():
        path = save_figure(fig, tmp_path, name)
        assert path.is_file() and path.stat().st_size > 5000
    all_invalid = gen_plots.make_figures(res.samples, res.summary, res.comparison)
    assert "generalisation_mean_score" in all_invalid  # NaN scores draw "n/a", not a crash


# -------------------------------------------------------------------------------------- resume
def test_resume_skips_done_cells_and_reuses_stored_answers(tmp_path, sandbox):
    kinds = ("mixed", "good")
    models = {k: f"fake:{k}" for k in kinds}
    cfg1 = make_config(models=models, seeds=(0,), held_out_settings=())
    s1, ev1 = fakes(*kinds), CountingEvaluator(sandbox)
    run_generalisation(cfg1, tmp_path, samplers=s1, sandbox=ev1, progress=False)
    assert all(len(s.calls) == 2 for s in s1.values()) and ev1.jobs

    # the same config again: nothing sampled, nothing evaluated
    s2, ev2 = fakes(*kinds), CountingEvaluator(sandbox)
    res2 = run_generalisation(cfg1, tmp_path, samplers=s2, sandbox=ev2, progress=False)
    assert not any(s.calls for s in s2.values()) and ev2.jobs == []
    assert res2.cells_done == 0 and res2.cells_skipped == 4 and len(res2.samples) == 2 * 2 * N

    # a new seed: only that seed is sampled
    cfg3 = make_config(models=models, seeds=(0, 1), held_out_settings=())
    s3, ev3 = fakes(*kinds), CountingEvaluator(sandbox)
    res3 = run_generalisation(cfg3, tmp_path, samplers=s3, sandbox=ev3, progress=False)
    assert all({seed for _, _, seed in s.calls} == {1} for s in s3.values())
    assert res3.cells_done == 4 and res3.cells_skipped == 4

    # a new held-out setting: the stored answers are evaluated on it, nothing is sampled
    cfg4 = make_config(models=models, seeds=(0, 1))
    s4, ev4 = fakes(*kinds), CountingEvaluator(sandbox)
    res4 = run_generalisation(cfg4, tmp_path, samplers=s4, sandbox=ev4, progress=False)
    assert not any(s.calls for s in s4.values())
    assert {j[2] for j in ev4.jobs} == {"n15_w10"}
    assert res4.answers_reused == 2 * 2 * N and res4.answers_sampled == 0
    assert len(res4.samples) == 2 * 2 * N * 3
    fresh = run_generalisation(cfg4, None, samplers=fakes(*kinds), sandbox=sandbox, progress=False)
    pd.testing.assert_frame_equal(res4.samples.drop(columns="cached"),
                                  fresh.samples.drop(columns="cached"))
    pd.testing.assert_frame_equal(res4.summary, fresh.summary)

    # sampling parameters changed under the same model name: refuse, or start that model over
    cfg5 = make_config(models=models, seeds=(0, 1), temperature=0.2)
    with pytest.raises(ConfigMismatch, match="temperature"):
        run_generalisation(cfg5, tmp_path, samplers=fakes(*kinds), sandbox=sandbox, progress=False)
    s6 = fakes(*kinds)
    res6 = run_generalisation(cfg5, tmp_path, samplers=s6, sandbox=sandbox, progress=False,
                              overwrite=True)
    assert res6.answers_sampled == 2 * 2 * 2 * N and len(res6.samples) == 2 * 2 * N * 3


def test_answers_copied_without_their_config_are_refused_not_replayed(tmp_path, sandbox):
    """A stage-6 redo on a copy that carried run 6's answers file but not its config replayed
    answers of one adapter as those of a re-trained, different one; nothing can check them."""
    cfg = make_config(models={"good": "fake:good"}, seeds=(0,), held_out_settings=())
    first, copy = tmp_path / "first", tmp_path / "copy"
    run_generalisation(cfg, first, samplers=fakes("good"), sandbox=sandbox, progress=False)
    copy.mkdir()
    shutil.copy(first / ANSWERS_JSONL, copy / ANSWERS_JSONL)
    with pytest.raises(ConfigMismatch, match="records no fingerprint"):
        run_generalisation(cfg, copy, samplers=fakes("good"), sandbox=sandbox, progress=False)
    again = fakes("good")
    res = run_generalisation(cfg, copy, samplers=again, sandbox=sandbox, progress=False, overwrite=True)
    assert len(again["good"].calls) == 2 and res.answers_sampled == 2 * N and res.answers_reused == 0
    # with the config beside them the answers are checked and re-used
    shutil.copy(first / CONFIG_JSON, copy / CONFIG_JSON)
    shutil.copy(first / ANSWERS_JSONL, copy / ANSWERS_JSONL)
    (copy / SAMPLES_CSV).unlink()
    replay = fakes("good")
    res = run_generalisation(cfg, copy, samplers=replay, sandbox=sandbox, progress=False)
    assert not replay["good"].calls and res.answers_reused == 2 * N


def test_interrupted_after_sampling_does_not_sample_again(tmp_path, sandbox):
    cfg = make_config(models={"good": "fake:good"}, seeds=(0,))
    s1 = fakes("good")
    with pytest.raises(RuntimeError, match="evaluator down"):
        run_generalisation(cfg, tmp_path, samplers=s1, sandbox=CountingEvaluator(sandbox, fail=True),
                           progress=False)
    assert len(s1["good"].calls) == 1  # sampled the first cell, then evaluation failed
    assert ("good", "admissible_set", 0) in load_answers(tmp_path)
    assert load_samples(tmp_path).empty
    s2 = fakes("good")
    res = run_generalisation(cfg, tmp_path, samplers=s2, sandbox=sandbox, progress=False)
    assert [c[0] for c in s2["good"].calls] == ["tsp_construct"]  # admissible_set answers re-used
    assert res.answers_reused == N and res.answers_sampled == N
    assert res.summary["valid_rate"].eq(1.0).all()


def test_adapter_fingerprint_is_the_one_adapter_hash_and_older_runs_still_resume(tmp_path, sandbox):
    """The resume fingerprint records aad_kit.models.adapter_sha256 (the adapter's weights). A
    run directory written with either older hash (every file; weight files counting
    training_args.bin) resumes without re-sampling; metadata files do not change the model;
    new weights under the same name are refused."""
    from aad_kit.evaluation.model_specs import _older_adapter_hashes
    from aad_kit.models import adapter_sha256, combined_sha256, sha256_file

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights-v1")
    (adapter / "training_args.bin").write_bytes(b"pickled output_dir=/somewhere")
    run = tmp_path / "run"
    cfg = make_config(models={"tuned": f"fake:good@adapter={adapter}"}, seeds=(0,))

    def go():
        return run_generalisation(cfg, run, samplers={"tuned": FakeSampler("good")},
                                  sandbox=sandbox, progress=False)

    first = go()
    assert first.answers_sampled == 2 * N  # two tasks, one seed
    state = json.loads((run / CONFIG_JSON).read_text())
    recorded = state["models"]["tuned"]["adapter_sha256"]
    assert recorded == adapter_sha256(adapter) == sha256_file(adapter / "adapter_model.safetensors")

    with_args = combined_sha256({n: sha256_file(adapter / n)
                                 for n in ("adapter_model.safetensors", "training_args.bin")})
    older = _older_adapter_hashes(adapter)
    assert with_args in older and len(older) == 2 and recorded not in older
    for old in sorted(older):  # old runs
        state["models"]["tuned"]["adapter_sha256"] = old
        (run / CONFIG_JSON).write_text(json.dumps(state))
        again = go()
        assert again.answers_sampled == 0 and again.cells_done == 0
        assert json.loads((run / CONFIG_JSON).read_text())["models"]["tuned"]["adapter_sha256"] == recorded

    (adapter / "README.md").write_text("model card")  # metadata only: the same model
    assert go().answers_sampled == 0
    (adapter / "adapter_model.safetensors").write_bytes(b"weights-v2")  # another model
    with pytest.raises(ConfigMismatch, match="adapter_sha256"):
        go()



def test_a_copied_run_directory_resumes_with_its_moved_adapter_and_replay_file(tmp_path, sandbox):
    """The spec records the adapter's path, which a copied, branched or unpacked run directory
    changes; the answers are still those weights', so they are re-used, not sampled again
    (a redo of stage 6 on a copy raised ConfigMismatch). Other weights there are refused."""
    import shutil

    from aad_kit.evaluation.model_specs import fingerprints_match, spec_fingerprint

    run = tmp_path / "run"
    adapter = run / "dpo" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights-v1")

    def go(where):
        cfg = make_config(models={"tuned": f"fake:good@adapter={where / 'dpo' / 'adapter'}"}, seeds=(0,))
        return run_generalisation(cfg, where, samplers={"tuned": FakeSampler("good")},
                                  sandbox=sandbox, progress=False)

    assert go(run).answers_sampled == 2 * N
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    again = go(copy)
    assert again.answers_sampled == 0 and again.answers_reused == 0 and again.cells_done == 0
    (copy / "dpo" / "adapter" / "adapter_model.safetensors").write_bytes(b"weights-v2")
    with pytest.raises(ConfigMismatch, match="adapter_sha256"):
        go(copy)

    replay = tmp_path / "answers.jsonl"
    replay.write_text("{}\n")
    moved = tmp_path / "elsewhere.jsonl"
    shutil.copy(replay, moved)
    assert fingerprints_match(spec_fingerprint(f"replay:{replay}"), spec_fingerprint(f"replay:{moved}"))
    moved.write_text("{}\n{}\n")
    assert not fingerprints_match(spec_fingerprint(f"replay:{replay}"), spec_fingerprint(f"replay:{moved}"))
    assert not fingerprints_match(spec_fingerprint("fake:good"), spec_fingerprint("fake:mixed"))

    # run 6's case: recorded with the hash that counted training_args.bin, then copied
    from aad_kit.models import combined_sha256, sha256_file

    moved_adapter = copy / "dpo" / "adapter"
    (moved_adapter / "training_args.bin").write_bytes(b"output_dir=run/dpo")
    now = spec_fingerprint(f"fake:good@adapter={moved_adapter}")
    old = dict(spec_fingerprint(f"fake:good@adapter={adapter}"), adapter_sha256=combined_sha256(
        {n: sha256_file(moved_adapter / n) for n in ("adapter_model.safetensors", "training_args.bin")}))
    assert old["spec"] != now["spec"] and old["adapter_sha256"] != now["adapter_sha256"]
    assert fingerprints_match(old, now)
    assert not fingerprints_match(dict(old, spec=old["spec"].replace("good", "mixed")), now)


# ------------------------------------------------------------------------- search comparison
def test_same_budget_search_comparison(tmp_path, sandbox):
    from aad_kit.search import SearchConfig

    config = SearchConfig(task="admissible_set", setting="n12_w7", budget=4, population_size=2,
                          batch_size=2, include_seed_heuristics=False)
    curves = run_search_comparison({"base": "fake:mixed", "tuned": "fake:good"}, config, tmp_path,
                                   seeds=(0,), sandbox=sandbox, progress=False,
                                   samplers={"base": FakeSampler("mixed"), "tuned": FakeSampler("good")})
    assert (tmp_path / CURVES_CSV).is_file() and (tmp_path / "generalisation_search.sqlite").is_file()
    assert set(curves["model"]) == {"base", "tuned"}
    for _, g in curves.groupby("model"):
        assert list(g["sample_index"]) == [0, 1, 2, 3]
        best = g["best_so_far"].to_numpy()
        assert np.all(np.diff(best[~np.isnan(best)]) >= 0)
    tuned = curves[curves["model"] == "tuned"]
    assert (tuned["status"] == "ok").all()
    fig = gen_plots.best_so_far_curves(curves)
    assert save_figure(fig, tmp_path, "curves").is_file()
    again = run_search_comparison({"base": "fake:mixed", "tuned": "fake:good"}, config, tmp_path,
                                  seeds=(0,), sandbox=sandbox, progress=False,
                                  samplers={"base": FakeSampler("mixed"), "tuned": FakeSampler("good")})
    pd.testing.assert_frame_equal(curves, again)  # resumed runs: same curves

    # another search's runs as a labelled reference, cut to a budget (the teacher's shipped runs)
    from aad_kit.db import AlgorithmDB
    from aad_kit.evaluation.generalisation import reference_curves

    with AlgorithmDB(tmp_path / "generalisation_search.sqlite") as db:
        ref = reference_curves(db, [tuned["run_id"].iloc[0]], 2, "teacher (reference)")
    assert list(ref["model"].unique()) == ["teacher (reference)"] and list(ref["seed"]) == [0, 0]
    assert list(ref["sample_index"]) == [0, 1]
    np.testing.assert_array_equal(ref["best_so_far"], tuned["best_so_far"].iloc[:2])


def test_search_summary_reports_final_best_valid_samples_and_first_beat_of_the_seed():
    from aad_kit.evaluation.generalisation import search_summary

    nan = float("nan")
    curves = pd.DataFrame({
        "model": ["base"] * 3 + ["tuned"] * 3,
        "seed": [0] * 6,
        "sample_index": [0, 1, 2] * 2,
        "status": ["ok", "syntax_error", "ok", "ok", "ok", "timeout"],
        "score": [1500.0, nan, 1842.0, 1842.0, 2355.0, nan],
        "best_so_far": [1500.0, 1500.0, 1842.0, 1842.0, 2355.0, 2355.0],
        "best_seed_heuristic": [1842.0] * 6,
    })
    table = search_summary(curves).set_index("model")
    assert table.loc["base", "samples"] == 3 and table.loc["base", "valid"] == 2
    assert table.loc["base", "final_best"] == 1842.0
    assert np.isnan(table.loc["base", "first_sample_above_seed"])  # equal to the seed is not above it
    assert table.loc["tuned", "valid"] == 2 and table.loc["tuned", "final_best"] == 2355.0
    assert table.loc["tuned", "first_sample_above_seed"] == 1


def test_search_curves_carry_the_best_over_invalid_samples_so_a_failed_last_sample_keeps_the_final_best():
    # Stage 6 of run 6's search reported a blank final best for runs whose last sample failed.
    from aad_kit.evaluation.generalisation import search_summary
    from aad_kit.evaluation.search_comparison import search_curves

    nan = float("nan")
    frame = pd.DataFrame({
        "operator": ["seed", "e1", "e2", "m1", "m2"],
        "sample_index": [-1, 0, 1, 2, 3],
        "status": ["ok", "syntax_error", "ok", "runtime_error", "timeout"],
        "score": [1842.0, nan, 1900.0, nan, nan],
    })

    class OneRunDB:
        def to_dataframe(self, run_id):
            return frame

    curves = search_curves(OneRunDB(), {("tuned", 1): "r"})
    assert np.isnan(curves["best_so_far"].iloc[0])  # before the first valid sample
    assert list(curves["best_so_far"].iloc[1:]) == [1900.0, 1900.0, 1900.0]
    row = search_summary(curves).iloc[0]
    assert row["final_best"] == 1900.0 and row["valid"] == 1 and row["first_sample_above_seed"] == 1


# ------------------------------------------------------------------------------ the tiny model
def test_real_tiny_model_base_and_adapter(tmp_path, sandbox, use_llm_cache, tiny_lora_dir):  # noqa: F811
    cfg = GeneralisationConfig(
        models={"base": "tiny", "tuned": f"tiny@adapter={tiny_lora_dir}"},
        train_task="admissible_set", train_setting="n12_w7", samples_per_seed=2, seeds=(0,),
        max_new_tokens=24, n_boot=200,
    )
    res = run_generalisation(cfg, tmp_path, sandbox=sandbox, progress=False)
    df = res.samples
    assert len(df) == 4 and set(df["model"]) == {"base", "tuned"}
    assert set(df["status"]) <= {s.value for s in Status}
    answers = load_answers(tmp_path)
    base_text = [a["text"] for a in answers[("base", "admissible_set", 0)]]
    tuned_text = [a["text"] for a in answers[("tuned", "admissible_set", 0)]]
    assert base_text != tuned_text  # the adapter is applied
    info = json.loads((tmp_path / CONFIG_JSON).read_text())
    assert info["model_info"]["tuned"]["adapter_sha256"]
    assert "adapter_sha256" in info["models"]["tuned"]
    # one adapter hash: the resume fingerprint is the sampler's (and the DPO manifest's)
    assert info["models"]["tuned"]["adapter_sha256"] == info["model_info"]["tuned"]["adapter_sha256"]
    for row in res.summary.itertuples():
        assert (row.n_valid == 0) == math.isnan(row.mean_score)
    assert len(res.comparison) == 1


# ------------------------------------------------------------------------------- the notebook
def test_parameters_cell_is_fully_visible_to_papermill():
    import papermill as pm

    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = {line.split(":")[0].split("=")[0].strip() for line in cell.source.splitlines()
                if line and not line.startswith("#")}
    assert assigned == set(pm.inspect_notebook(str(NOTEBOOK)))
    for line in cell.source.splitlines():
        assert "=" not in line.partition("#")[2], f"'=' in a comment hides it from papermill: {line}"
    assert nb.metadata["kernelspec"]["name"] == "aad-kit"


def _replay_file(path: Path, kind: str) -> Path:
    fake = FakeSampler(kind)
    with path.open("w") as f:
        for task in TASK_NAMES:
            sig = get_task(task).signature
            assert sig in i1_prompt(task)
            for i in range(2):
                f.write(json.dumps({"text": fake.answer(task, i), "match": sig}) + "\n")
    return path


@pytest.mark.notebook
def test_notebook_runs_headless_with_replay_models(tmp_path):
    run_dir = tmp_path / "run"
    base = _replay_file(tmp_path / "base.jsonl", "mixed")
    tuned = _replay_file(tmp_path / "tuned.jsonl", "good")
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOK), str(tmp_path / "out.ipynb"),
           "-k", "aad-kit", "-p", "profile", "smoke", "-p", "run_dir", str(run_dir),
           "-p", "base_model", f"replay:{base}", "-p", "tuned_model", f"replay:{tuned}",
           "-p", "samples_per_seed", "2", "-y", "seeds: [0]", "-p", "n_boot", "300",
           "-p", "search_runs", "1", "-p", "search_budget", "2",
           "-p", "teacher_model", "none"]  # no teacher row (the shipped reference would add one)
    if shutil.which("papermill") is None:
        pytest.importorskip("papermill")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in (SAMPLES_CSV, SUMMARY_CSV, COMPARISON_CSV, CURVES_CSV):
        assert (run_dir / name).is_file(), name
    figures = {p.stem for p in (run_dir / "figures").glob("*.png")}
    assert {"headline", "generalisation_diff_mean_score",
            "generalisation_diff_valid_rate", "generalisation_search_best_so_far"} <= figures
    summary = pd.read_csv(run_dir / SUMMARY_CSV)
    assert set(summary["model"]) == {"base", "tuned"}
    assert summary.loc[summary["model"] == "tuned", "valid_rate"].eq(1.0).all()
