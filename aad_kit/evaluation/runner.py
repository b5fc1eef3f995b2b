"""The generalisation study's runner: :func:`run_generalisation` samples every model's answers,
parses and scores them on the grid, and summarises (resumably).

Design
------
Every model answers the same prompt, :func:`aad_kit.prompts.i1_prompt` (design a new algorithm
from the task description; the prompt the search starts from and the DPO pairs contain).

* **One sampling call per (model, task, seed).** ``samples_per_seed`` answers are drawn with
  ``GenerationConfig(seed=seed, ...)``. The prompt depends on the task, not on the setting,
  so the *same* answers are evaluated on every setting of that task in the grid: cheaper
  (one generation instead of one per setting) and a sharper comparison across settings (a
  difference between settings is then a difference in how the same programs fare, not
  sampling noise).
* **Each answer is parsed** with :func:`aad_kit.search.parsing.parse_answer`. An answer with
  no evaluable code is invalid with the parser's status (``missing_function`` or
  ``syntax_error``) on every setting and is not sent to the sandbox; every other answer is
  scored in the sandbox on each setting (``status``, ``score``, ``metric``).
* **Roles**: ``train`` is the (task, setting) the tuned model was trained on, ``held_out`` the
  other settings of that task, ``other_task`` settings of the other tasks.
* **Pairing**: both models get the same seeds and the same number of answers, so the
  ``(seed, sample)`` index pairs a base answer with a tuned answer. With a seeded local model
  the two share the random numbers of the sampler (common random numbers), and the
  comparison resamples those pairs jointly (:func:`compare_models`).

Resume
------
A re-run with the same run directory skips every (model, task, seed) cell whose rows are
already in ``generalisation_samples.csv``. Finer: a cell that lacks some settings of the
current grid (settings were added) is evaluated on the missing settings only, re-using the
stored answers (no new sampling); a cell whose answers were stored but not yet evaluated
(interrupted run) is evaluated without sampling again. New seeds and new models are sampled.
If a model's sampling parameters or spec (or its adapter's / replay file's content) differ
from what the run directory recorded, :class:`ConfigMismatch` is raised rather than mixing
two different models' answers under one name (``overwrite=True`` drops that model's stored
rows and answers instead).
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from aad_kit.evaluation.grid import GeneralisationConfig
from aad_kit.evaluation.metrics import compare_models, summarize
from aad_kit.evaluation.model_specs import fingerprints_match, spec_fingerprint
from aad_kit.evaluation.storage import (
    _ROW_KEY,
    ANSWERS_JSONL,
    COMPARISON_CSV,
    CONFIG_JSON,
    SAMPLES_CSV,
    SUMMARY_CSV,
    _append_answers,
    _clean_text,
    _drop_model,
    _order,
    _read_state,
    _typed,
    _write_atomic,
    _write_state,
    load_answers,
    load_samples,
    restrict,
)
from aad_kit.llm.base import Sampler


class ConfigMismatch(ValueError):
    """The run directory holds answers of a model sampled differently than now asked."""


@dataclass
class GeneralisationResult:
    """What :func:`run_generalisation` returns."""

    config: GeneralisationConfig
    run_dir: Path | None
    samples: pd.DataFrame  # the long table, restricted to this config's grid
    summary: pd.DataFrame  # :func:`summarize`
    comparison: pd.DataFrame | None  # :func:`compare_models` (None without base and tuned)
    cells_done: int  # (model, task, seed) cells evaluated in this call
    cells_skipped: int  # cells already complete in the run directory
    answers_sampled: int  # answers drawn from a model in this call
    answers_reused: int  # stored answers evaluated again (new settings / interrupted run)
    timings: dict[str, float] = field(default_factory=dict)
    model_info: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)

    def describe(self) -> str:
        t = self.timings
        return (
            f"{self.cells_done} cells evaluated, {self.cells_skipped} skipped (already done); "
            f"{self.answers_sampled} answers sampled, {self.answers_reused} re-used; "
            f"model loading {t.get('load_s', 0):.1f} s, sampling {t.get('sampling_s', 0):.1f} s, "
            f"evaluation {t.get('evaluation_s', 0):.1f} s, total {t.get('total_s', 0):.1f} s"
        )


def _sample_cell(sampler: Sampler, model: str, task: str, seed: int,
                 config: GeneralisationConfig) -> tuple[list[dict[str, Any]], float]:
    from aad_kit.code import code_hash
    from aad_kit.prompts import i1_prompt
    from aad_kit.search.parsing import parse_answer

    prompt = i1_prompt(task)
    t0 = time.perf_counter()
    completions = sampler.sample([prompt], n=config.samples_per_seed,
                                 config=config.generation_config(seed))[0]
    wall = time.perf_counter() - t0
    if len(completions) != config.samples_per_seed:
        raise RuntimeError(f"sampler {getattr(sampler, 'model_id', sampler)!r} returned "
                           f"{len(completions)} answers, asked for {config.samples_per_seed}")
    model_id = str(getattr(sampler, "model_id", "") or "")
    records = []
    for j, c in enumerate(completions):
        parsed = parse_answer(c.text, task)
        records.append({
            "model": model, "model_id": model_id, "task": task, "seed": int(seed), "sample": j,
            "text": c.text, "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens, "latency_s": c.latency_s,
            "code": parsed.code, "idea": parsed.idea,
            "status_hint": parsed.status_hint.value if parsed.status_hint is not None else None,
            "code_hash": code_hash(parsed.code) if parsed.code else "",
            "notes": list(parsed.notes),
        })
    return records, wall


def _evaluate_cell(evaluator: Any, answers: Sequence[dict[str, Any]], settings: Sequence[str],
                   config: GeneralisationConfig) -> tuple[list[dict[str, Any]], float]:
    """Rows of one (model, task, seed) cell on ``settings``."""
    evaluable = [a for a in answers if a.get("code") and not a.get("status_hint")]
    jobs = [(a["task"], a["code"], s) for a in evaluable for s in settings]
    t0 = time.perf_counter()
    results = evaluator.evaluate_many(jobs, progress=False) if jobs else []
    wall = time.perf_counter() - t0
    if len(results) != len(jobs):
        raise RuntimeError(f"the evaluator returned {len(results)} results for {len(jobs)} jobs")
    by_job = iter(results)
    res_of: dict[tuple[int, str], Any] = {}
    for a in evaluable:
        for s in settings:
            res_of[(int(a["sample"]), s)] = next(by_job)
    rows = []
    for a in answers:
        for s in settings:
            base = {
                "model": a["model"], "model_id": a.get("model_id", ""), "task": a["task"],
                "setting": s, "role": config.role_of(a["task"], s), "seed": int(a["seed"]),
                "sample": int(a["sample"]), "idea": _clean_text(a.get("idea")),
                "code_hash": a.get("code_hash") or "",
                "finish_reason": a.get("finish_reason") or "",
                "completion_tokens": a.get("completion_tokens"),
            }
            r = res_of.get((int(a["sample"]), s))
            if r is None:
                notes = "; ".join(a.get("notes") or [])
                base.update(status=a.get("status_hint") or "missing_function", valid=False,
                            score=math.nan, metric=math.nan, eval_time=0.0, cached=False,
                            message=_clean_text(f"not evaluated (parser): {notes}"))
            else:
                status = getattr(r.status, "value", str(r.status))
                ok = status == "ok"
                base.update(
                    status=status, valid=ok,
                    score=float(r.score) if ok and r.score is not None else math.nan,
                    metric=float(r.metric) if ok and r.metric is not None else math.nan,
                    eval_time=float(r.runtime_s or 0.0), cached=bool(r.cached),
                    message=_clean_text(r.message),
                )
            rows.append(base)
    return rows, wall


def run_generalisation(
    config: GeneralisationConfig,
    run_dir: str | os.PathLike[str] | None = None,
    *,
    samplers: Mapping[str, Sampler] | None = None,
    sandbox: Any | None = None,
    progress: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> GeneralisationResult:
    """Sample, parse, evaluate and summarise (resumably; see the module docstring).

    ``samplers``: ready samplers by model name (tests, or a model already loaded); a model
    without one is built with :func:`aad_kit.llm.make_sampler` from its spec when it has
    something to sample, one model at a time. ``sandbox``: an :class:`aad_kit.sandbox.Sandbox`
    (or anything with ``evaluate_many``); default: a new one with the run's evaluation cache.
    Without ``run_dir`` nothing is written and nothing is resumed.
    """
    from aad_kit.llm import make_sampler

    say = log or (print if progress else (lambda _msg: None))
    t_start = time.perf_counter()
    out = Path(run_dir) if run_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    state = _read_state(out)
    fingerprints = {m: {**config.sampling_params(m), **spec_fingerprint(spec)}
                    for m, spec in config.models}
    # Answers whose model the config file does not record (an answers file copied without it)
    # cannot be checked against the model now named: refuse them rather than replay them.
    unrecorded = sorted({m for m, _, _ in load_answers(out) if m in fingerprints} - set(state["models"]))
    for m in unrecorded:
        if not overwrite:
            raise ConfigMismatch(
                f"{out / ANSWERS_JSONL} holds answers of model {m!r} but {CONFIG_JSON} records no "
                f"fingerprint for it, so nothing shows which model wrote them. Copy the "
                f"{CONFIG_JSON} they were sampled with beside them, or overwrite=True to drop them."
            )
        assert out is not None
        _drop_model(out, m)
        say(f"[{m}] answers without a recorded fingerprint: dropped them")
    for m, fp in fingerprints.items():
        stored = state["models"].get(m)
        if stored is not None and not fingerprints_match(stored, fp):
            diff = {k: (stored.get(k), fp.get(k)) for k in set(stored) | set(fp)
                    if stored.get(k) != fp.get(k)}
            if not overwrite:
                raise ConfigMismatch(
                    f"{out} holds answers of model {m!r} sampled with different parameters "
                    f"(stored, now): {diff}. Use a new run directory, or overwrite=True to "
                    f"drop {m!r}'s stored answers."
                )
            assert out is not None
            _drop_model(out, m)
            say(f"[{m}] parameters changed ({sorted(diff)}): dropped its stored answers")
        state["models"][m] = fp
    state["config"] = config.to_dict()
    _write_state(out, state)

    samples = load_samples(out)
    answers = load_answers(out)
    done = set(zip(*(samples[c] for c in ("model", "task", "setting", "seed")), strict=True)) if len(samples) else set()

    own_sandbox = sandbox is None
    if own_sandbox:
        from aad_kit.sandbox import Sandbox, SandboxConfig
        from aad_kit.scoring import run_cache_path

        sandbox = Sandbox(SandboxConfig(cache_path=run_cache_path(out)))
    timings = {"load_s": 0.0, "sampling_s": 0.0, "evaluation_s": 0.0}
    counts = {"done": 0, "skipped": 0, "sampled": 0, "reused": 0}
    messages: list[str] = []
    model_info: dict[str, Any] = dict(state.get("model_info", {}))
    try:
        for model, spec in config.models:
            todo = []
            for task in config.tasks:
                for seed in config.seeds:
                    missing = [s for s in config.settings_of(task) if (model, task, s, seed) not in done]
                    if missing:
                        todo.append((task, seed, missing))
                    else:
                        counts["skipped"] += 1
            if not todo:
                say(f"[{model}] every cell already in {SAMPLES_CSV}: skipped")
                continue
            sampler: Sampler | None = None
            own_sampler = False
            try:
                for task, seed, missing in todo:
                    key = (model, task, seed)
                    stored = answers.get(key)
                    cell_done_before = any((model, task, s, seed) in done for s in config.settings_of(task))
                    if stored is not None and len(stored) >= config.samples_per_seed:
                        cell_answers = stored[: config.samples_per_seed]
                        counts["reused"] += len(cell_answers)
                        how = "re-used stored answers"
                    else:
                        if cell_done_before:
                            msg = (f"[{model}] {task} seed {seed}: answers missing from {ANSWERS_JSONL}; "
                                   "sampling again for the new settings (a non-deterministic backend "
                                   "gives other answers than the stored rows)")
                            messages.append(msg)
                            say(msg)
                        if sampler is None:
                            t0 = time.perf_counter()
                            if samplers is not None and model in samplers:
                                sampler = samplers[model]
                            else:
                                sampler = make_sampler(spec)
                                own_sampler = True
                            timings["load_s"] += time.perf_counter() - t0
                            model_info[model] = _info(sampler)
                            state["model_info"] = model_info
                            _write_state(out, state)
                        cell_answers, wall = _sample_cell(sampler, model, task, seed, config)
                        timings["sampling_s"] += wall
                        counts["sampled"] += len(cell_answers)
                        _append_answers(out, cell_answers)
                        answers[key] = cell_answers
                        how = f"sampled {len(cell_answers)} answers in {wall:.1f} s"
                    rows, wall = _evaluate_cell(sandbox, cell_answers, missing, config)
                    timings["evaluation_s"] += wall
                    new = _typed(pd.DataFrame(rows))
                    samples = new if samples.empty else pd.concat([samples, new], ignore_index=True)
                    samples = samples.drop_duplicates(list(_ROW_KEY), keep="last")
                    if out is not None:
                        _write_atomic(_order(samples, config), out / SAMPLES_CSV)
                    done.update((model, task, s, seed) for s in missing)
                    counts["done"] += 1
                    n_valid = int(new["valid"].sum())
                    say(f"[{model}] {task} seed {seed}: {how}; evaluated on {len(missing)} "
                        f"setting(s) in {wall:.1f} s: {n_valid}/{len(new)} valid")
                    from aad_kit.progress import report

                    n_cells = len(config.models) * len(config.tasks) * len(config.seeds)
                    report("evaluation", len({(m, t, sd) for m, t, _s, sd in done}), n_cells,
                           unit="cells", last=f"{model}/{task}/seed{seed} {n_valid}/{len(new)} valid")
            finally:
                if own_sampler:
                    del sampler
                    gc.collect()
    finally:
        if own_sandbox:
            sandbox.close()

    mine = restrict(samples, config)
    summary = summarize(mine, top_k=config.top_k, n_boot=config.n_boot,
                        confidence=config.confidence, seed=config.bootstrap_seed)
    comparison = None
    if {"base", "tuned"} <= set(config.model_specs):
        comparison = compare_models(mine, "base", "tuned", n_boot=config.n_boot,
                                    confidence=config.confidence, seed=config.bootstrap_seed)
    if out is not None:
        _write_atomic(summary, out / SUMMARY_CSV)
        if comparison is not None:
            _write_atomic(comparison, out / COMPARISON_CSV)
    timings["total_s"] = time.perf_counter() - t_start
    return GeneralisationResult(
        config=config, run_dir=out, samples=mine, summary=summary, comparison=comparison,
        cells_done=counts["done"], cells_skipped=counts["skipped"],
        answers_sampled=counts["sampled"], answers_reused=counts["reused"],
        timings=timings, model_info=model_info, messages=messages,
    )


def _info(sampler: Any) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(sampler.info()), default=str))
    except Exception as e:  # noqa: BLE001 - provenance is best effort
        return {"model_id": getattr(sampler, "model_id", None), "info_error": repr(e)}


__all__ = ["ConfigMismatch", "GeneralisationResult", "run_generalisation"]
