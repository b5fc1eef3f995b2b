"""EoH search through the real sandbox with a deterministic fake sampler; resume after SIGKILL."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest

from aad_kit.code import strip_docstring
from aad_kit.db import AlgorithmDB, RunConfigMismatch
from aad_kit.llm.base import Completion, GenerationConfig, Sampler
from aad_kit.prompts import build_prompt, format_answer
from aad_kit.result import EvalResult, Status
from aad_kit.sandbox import Sandbox, SandboxConfig
from aad_kit.search import (
    SearchConfig,
    batches,
    derive_seed,
    plan_sample,
    population,
    run_search,
)
from aad_kit.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GEN = GenerationConfig()
TASK, SETTING = "admissible_set", "n12_w7"  # ~20 ms per evaluation


def canned_answer(h: int) -> str:
    """A deterministic, realistic mix of small-model answers (valid, messy, garbage)."""
    kind = h % 12
    a, b, c = 1 + (h >> 8) % 3, 2 + (h >> 12) % 3, (h >> 16) % 3 - 1
    valid = (
        f"def priority(el, n, w):\n"
        f"    s = sum((x * {a}) % {b} for x in el)\n"
        f"    return float(s + {c} * el[0] - el[-1])\n"
    )
    if kind == 0:
        return "I'm not sure how to solve this problem, sorry."
    if kind == 1:
        return "Idea: broken.\n```python\ndef priority(el, n, w):\n    return (1 +\n```"
    if kind == 2:  # wrong name, missing import
        return (
            f"**Idea:** count the twos, weighted by {a}.\n```\ndef my_score(el, n, w):\n"
            f"    return float(np.sum(np.array(el) == 2) * {a} - np.argmax(np.array(el)))\n```\nHope this helps!"
        )
    if kind == 3:  # the template again: a duplicate
        return f"Idea: keep it simple.\n```python\n{get_task(TASK).template_program}```"
    if kind == 4:
        return "Idea: crash.\n```python\ndef priority(el, n, w):\n    return 1 / 0\n```"
    if kind == 5:  # bare code with prose around it
        return f"Sure! Here is the code:\n\n{valid}\nThis function mixes the entries. It is fast."
    return f"Idea: modular mix with a={a}, b={b}, c={c}.\n```python\n{valid}```"


class FakeSampler:
    """Deterministic: the answer depends only on (prompt, config.seed, position in the call)."""

    model_id = "fake/canned-1"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[tuple[int, int]] = []  # (number of prompts, seed)

    def sample(
        self, prompts: Sequence[str], n: int = 1, config: GenerationConfig = DEFAULT_GEN
    ) -> list[list[Completion]]:
        self.calls.append((len(prompts), config.seed))
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for i, p in enumerate(prompts):
            row = []
            for j in range(n):
                digest = hashlib.sha256(f"{p}|{config.seed}|{i}|{j}".encode()).digest()
                text = canned_answer(int.from_bytes(digest[:8], "big"))
                row.append(Completion(text=text, completion_tokens=len(text) // 4))
            out.append(row)
        return out

    def info(self) -> dict:
        return {"backend": "fake", "model_id": self.model_id, "sha256": "0" * 64}


def make_config(**kw) -> SearchConfig:
    base = dict(task=TASK, setting=SETTING, budget=40, population_size=6, init_samples=8,
                batch_size=4, seed=7, include_seed_heuristics=True,
                seed_heuristics=("trivial", "balanced_blocks"))
    base.update(kw)
    return SearchConfig(**base)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(workers=2), cache=False) as sb:
        yield sb


def snapshot(db: AlgorithmDB, run_id: str) -> list[tuple]:
    """What must agree between two runs (ids may differ between files: compare by index)."""
    recs = db.records(run_id)
    index_of = {r.id: r.sample_index for r in recs}
    return [
        (r.sample_index, r.operator, tuple(index_of[p] for p in r.parent_ids), r.generation,
         r.prompt, r.raw_response, r.code, r.status, r.score,
         index_of.get(r.duplicate_of) if r.duplicate_of else None)
        for r in recs
    ]


def test_fake_sampler_is_a_sampler():
    assert isinstance(FakeSampler(), Sampler)


def test_config_validation_and_schedule():
    c = make_config()
    assert c.setting == SETTING and c.operator_weights == (1.0, 1.0, 1.0, 1.0)
    assert SearchConfig.from_dict(c.to_dict()) == c
    assert SearchConfig(task=TASK).setting == get_task(TASK).default_setting
    assert batches(make_config(budget=10, init_samples=6, batch_size=4)) == [(0, 4), (4, 6), (6, 10)]
    assert make_config(budget=5).init_samples == 5
    for bad in (dict(operators=("x1",)), dict(operator_weights=(1.0,)),
                dict(init_samples=-1),
                dict(e_parents=1), dict(selection="best"), dict(seed_heuristics=("nope",)),
                dict(operator_weights=(0.0, 0.0, 0.0, 0.0))):
        with pytest.raises(ValueError):
            make_config(**bad)
    assert derive_seed(7, 3) == derive_seed(7, 3) != derive_seed(7, 4)


def test_planning_is_deterministic_and_respects_parents(tmp_path):
    task = get_task(TASK)
    with AlgorithmDB(tmp_path / "p.sqlite") as db:
        for i in range(5):
            db.add_algorithm(run_id="r", task=TASK, setting=SETTING, operator="i1", status="ok",
                             sample_index=i, code=f"def priority(el, n, w):\n    return {i}.0\n",
                             score=float(i % 3), idea=f"idea {i}")
        db.add_algorithm(run_id="r", task=TASK, setting=SETTING, operator="i1", status="ok",
                         sample_index=5, code="x", score=9.0, duplicate_of=1)
        db.add_algorithm(run_id="r", task=TASK, setting=SETTING, operator="i1", status="timeout",
                         sample_index=6, code="y")
        recs = db.records("r")
    pop = population(recs, 3)
    assert [r.sample_index for r in pop] == [2, 1, 4]  # score desc, older first, no dup/invalid
    assert [r.sample_index for r in population(recs, 10, before=3)] == [2, 1, 0]
    config = make_config(init_samples=2)
    ops = []
    for k in range(2, 200):
        p = plan_sample(config, task, k, pop)
        assert p == plan_sample(config, task, k, pop)
        ops.append(p.operator)
        assert len(p.parents) == (2 if p.operator in ("e1", "e2") else 1)
        assert len({r.id for r in p.parents}) == len(p.parents)
        assert p.prompt == build_prompt(p.operator, task, p.parents)
        assert p.generation == 1 + max(r.generation for r in p.parents)
    assert set(ops) == {"e1", "e2", "m1", "m2"}
    # rank selection: the best parent is chosen more often than the worst
    firsts = [plan_sample(config, task, k, pop).parents[0].sample_index for k in range(2, 2000)]
    assert firsts.count(2) > firsts.count(4)
    # init samples and an empty population give i1; too few parents for e-ops only
    assert plan_sample(config, task, 0, pop).operator == "i1"
    assert plan_sample(config, task, 50, []).operator == "i1"
    e_only = make_config(operators=("e1",), init_samples=2)
    assert plan_sample(e_only, task, 50, pop[:1]).operator == "i1"
    assert {plan_sample(make_config(init_samples=2), task, k, pop[:1]).operator for k in range(2, 60)} == {"m1", "m2"}


def test_full_search(tmp_path, sandbox):
    config = make_config()
    sampler = FakeSampler()
    db = AlgorithmDB(tmp_path / "run.sqlite")
    res = run_search(config, sampler, db, sandbox, run_id="full", progress=False)
    assert res.n_samples == config.budget == res.new_samples and res.n_seeds == 2 and not res.resumed
    assert sum(res.counts_by_status.values()) == config.budget
    assert db.get_run("full").status == "finished"
    info = db.get_run("full")
    assert info.config["model_id"] == "fake/canned-1" and info.manifest["model"]["sha256"] == "0" * 64
    assert info.manifest["evaluator_version"] and info.manifest["search_config"]["budget"] == 40

    recs = db.records("full")
    by_id = {r.id: r for r in recs}
    samples = [r for r in recs if r.sample_index >= 0]
    seeds = [r for r in recs if r.sample_index < 0]
    assert [r.sample_index for r in samples] == list(range(config.budget))
    assert [r.operator for r in seeds] == ["seed", "seed"] and all(r.prompt is None for r in seeds)
    # every sample is stored with its prompt, raw answer, model and batch call
    assert all(r.prompt and r.raw_response is not None and r.model_id == "fake/canned-1" for r in samples)
    assert [n for n, _ in sampler.calls] == [4] * 10
    assert [s for _, s in sampler.calls] == [derive_seed(7, start) for start, _ in batches(config)]
    # operator mix: i1 first, then the evolution operators
    assert all(r.operator == "i1" and r.generation == 0 for r in samples[:8])
    evo = [r.operator for r in samples[8:]]
    assert set(evo) <= {"e1", "e2", "m1", "m2"} and len(set(evo)) >= 3
    assert res.counts_by_operator["i1"] >= 8
    # parents exist, are valid originals sampled before the batch, and appear in the prompt
    for r in samples[8:]:
        if r.operator == "i1":
            continue
        assert len(r.parent_ids) == (2 if r.operator in ("e1", "e2") else 1)
        batch_start = 8 + (r.sample_index - 8) // 4 * 4
        for pid in r.parent_ids:
            parent = by_id[pid]
            assert parent.ok and parent.duplicate_of is None and parent.sample_index < batch_start
            assert strip_docstring(parent.code).strip() in r.prompt
        assert r.generation == 1 + max(by_id[p].generation for p in r.parent_ids)
    # garbage is stored too, with its status
    statuses = res.counts_by_status
    assert statuses.get("ok", 0) > 0 and statuses.get("missing_function", 0) > 0
    assert statuses.get("syntax_error", 0) > 0 and statuses.get("runtime_error", 0) > 0
    no_code = [r for r in samples if r.code is None]
    assert no_code and all(r.status == "missing_function" and r.raw_response for r in no_code)
    renamed = [r for r in samples if any("renamed" in n for n in r.notes)]
    assert renamed and all("def priority" in r.code and "import numpy as np" in r.code for r in renamed)
    # dedup: duplicates point at an earlier original with the same hash and copy its result
    dups = [r for r in samples if r.duplicate_of is not None]
    assert dups and res.n_duplicates == len(dups)
    for d in dups:
        orig = by_id[d.duplicate_of]
        assert orig.duplicate_of is None and orig.code_hash == d.code_hash and orig.id < d.id
        assert (d.status, d.score) == (orig.status, orig.score) and d.eval_time_s == 0.0
    originals = [r.code_hash for r in recs if r.code_hash and r.duplicate_of is None]
    assert len(originals) == len(set(originals))
    # population: best valid distinct, by score then age
    pop = res.population
    assert len(pop) == config.population_size
    scores = [r.score for r in pop]
    assert scores == sorted(scores, reverse=True)
    valid = [r for r in recs if r.ok and r.duplicate_of is None]
    assert pop[0].score == max(r.score for r in valid) == res.best.score
    assert res.best_generated.sample_index >= 0
    assert res.samples_per_minute > 0 and res.timings["evaluation_s"] > 0
    assert "samples" in res.summary()
    # the search is deterministic: a second run in another file is identical
    db2 = AlgorithmDB(tmp_path / "run2.sqlite")
    run_search(config, FakeSampler(), db2, sandbox, run_id="full", progress=False)
    assert snapshot(db2, "full") == snapshot(db, "full")
    # calling again on the finished run draws nothing
    again_sampler = FakeSampler()
    res2 = run_search(config, again_sampler, db, sandbox, run_id="full", progress=False)
    assert res2.resumed and res2.new_samples == 0 and again_sampler.calls == []
    assert res2.best.id == res.best.id and db.count("full") == config.budget + 2
    # a different config is refused
    with pytest.raises(RunConfigMismatch):
        run_search(make_config(budget=41), FakeSampler(), db, sandbox, run_id="full", progress=False)
    df = db.to_dataframe("full")
    assert len(df) == config.budget + 2
    db.close()
    db2.close()


def test_resume_from_a_partial_batch(tmp_path, sandbox):
    """A run cut inside a batch (some of its samples stored) resumes to the same records."""
    config = make_config(budget=20)
    with AlgorithmDB(tmp_path / "ref.sqlite") as ref:
        run_search(config, FakeSampler(), ref, sandbox, run_id="r", progress=False)
        reference = snapshot(ref, "r")
        keep = [r for r in ref.records("r") if r.sample_index < 14]  # batch [12, 16) cut at 14
    with AlgorithmDB(tmp_path / "cut.sqlite") as cut:
        cut.start_or_resume_run("r", {**config.to_dict(), "model_id": FakeSampler.model_id}, {})
        new_id = {}
        for r in keep:
            d = r.to_dict()
            for k in ("id", "run_id", "created_at"):
                d.pop(k)
            d["parent_ids"] = [new_id[p] for p in d["parent_ids"]]
            d["duplicate_of"] = new_id.get(d["duplicate_of"]) if d["duplicate_of"] else None
            new_id[r.id] = cut.add_algorithm(run_id="r", **d)
        sampler = FakeSampler()
        res = run_search(config, sampler, cut, sandbox, run_id="r", progress=False)
        assert res.resumed and res.new_samples == 6
        assert sampler.calls[0] == (4, derive_seed(7, 12))  # the cut batch is re-issued whole
        assert snapshot(cut, "r") == reference


class _CountingEvaluator:
    """A stand-in evaluator: scores are the returned constant; counts what it evaluates."""

    def __init__(self) -> None:
        self.jobs: list[str] = []

    def evaluate_many(self, jobs, progress=False):
        out = []
        for task, code, setting in jobs:
            self.jobs.append(code)
            ns: dict = {}
            try:
                exec(code, ns)
                score = float(ns["priority"]((0, 1, 2), 3, 2))
                out.append(EvalResult(task, setting, "h", Status.OK, score=score, metric=score))
            except Exception as e:  # noqa: BLE001
                out.append(EvalResult(task, setting, "h", Status.RUNTIME_ERROR, message=repr(e)))
        return out


def test_duplicates_are_not_reevaluated(tmp_path):
    class Repeating(FakeSampler):
        def sample(self, prompts, n=1, config=DEFAULT_GEN):
            self.calls.append((len(prompts), config.seed))
            return [[Completion("Idea: same\n```python\ndef priority(el, n, w):\n    return 1.0\n```")]
                    for _ in prompts]

    ev = _CountingEvaluator()
    with AlgorithmDB(tmp_path / "d.sqlite") as db:
        res = run_search(make_config(budget=9, include_seed_heuristics=False), Repeating(), db, ev,
                         run_id="d", progress=False)
        assert len(ev.jobs) == 1 and res.n_duplicates == 8 and res.counts_by_status == {"ok": 9}
        assert len(res.population) == 1


def test_progress_bar_runs(tmp_path, capsys):
    ev = _CountingEvaluator()
    with AlgorithmDB(tmp_path / "p.sqlite") as db:
        res = run_search(make_config(budget=6, batch_size=3, include_seed_heuristics=False),
                         FakeSampler(), db, ev, run_id="p", progress=True)
    assert res.n_samples == 6
    assert "best=" in capsys.readouterr().err


_CHILD = """
import sys
sys.path.insert(0, {repo!r})
from tests.test_search import FakeSampler, make_config
from aad_kit.db import AlgorithmDB
from aad_kit.sandbox import Sandbox, SandboxConfig
from aad_kit.search import run_search
with Sandbox(SandboxConfig(workers=1), cache=False) as sb:
    run_search(make_config(), FakeSampler(delay_s={delay}), AlgorithmDB({db!r}), sb,
               run_id="k", progress=False)
print("FINISHED")
"""


def test_resume_after_sigkill(tmp_path, sandbox):
    config = make_config()
    path = str(tmp_path / "killed.sqlite")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(repo=str(REPO), delay=0.25, db=path)],
        cwd=str(REPO), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    helpers: set[int] = set()
    stored = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                helpers |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.Error:
                pass
            if os.path.exists(path):
                with AlgorithmDB(path) as probe:
                    stored = probe.count("k", samples_only=True)
                if stored >= 14:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in helpers:  # the child's sandbox workers (they run in their own sessions)
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass
    assert proc.returncode == -signal.SIGKILL
    with AlgorithmDB(path) as db:
        before = db.sample_indices("k")
        n_before = sum(1 for i in before if i >= 0)
        assert 14 <= n_before < config.budget, n_before
        assert db.get_run("k").status == "running"
        res = run_search(config, FakeSampler(), db, sandbox, run_id="k", progress=False)
        assert res.resumed and res.new_samples == config.budget - n_before
        assert db.sample_indices("k") == [-2, -1, *range(config.budget)]
        assert db.count("k", samples_only=True) == config.budget
        assert db.get_run("k").status == "finished" and len(db.get_run("k").resumes) == 1
        resumed = snapshot(db, "k")
    with AlgorithmDB(tmp_path / "straight.sqlite") as ref:
        run_search(config, FakeSampler(), ref, sandbox, run_id="k", progress=False)
        straight = snapshot(ref, "k")
    assert [s[6] for s in resumed] == [s[6] for s in straight]  # same codes, same order
    assert resumed == straight


class FixedProgramSampler:
    """Answers every prompt with one known program; each answer is a distinct variant (a unique
    trailing constant: same behaviour, no duplicate), so every answer is evaluated."""

    model_id = "fake/fixed-program"

    def __init__(self, code: str) -> None:
        self.code = code.rstrip()

    def sample(
        self, prompts: Sequence[str], n: int = 1, config: GenerationConfig = DEFAULT_GEN
    ) -> list[list[Completion]]:
        out = []
        for i, p in enumerate(prompts):
            row = []
            for j in range(n):
                tag = int.from_bytes(hashlib.sha256(f"{p}|{config.seed}|{i}|{j}".encode()).digest()[:4], "big")
                code = f"{self.code}\n\n_VARIANT = {tag}\n"
                text = format_answer("a known program", code)
                row.append(Completion(text=text, completion_tokens=len(text) // 4))
            out.append(row)
        return out

    def info(self) -> dict:
        return {"backend": "fake", "model_id": self.model_id}


@pytest.mark.parametrize("program, beats_the_seeds", [("funsearch_n15_w10", True), ("trivial", False)])
def test_generated_programs_beat_the_seeds_exactly_when_they_are_better(tmp_path, sandbox, program,
                                                                      beats_the_seeds):
    """Real scores with known answers. On n12_w7 the shipped funsearch_n15_w10 program scores
    above both seeds (trivial, balanced_blocks) and trivial below balanced_blocks (computed
    in-process below). A sampler that only writes the better program must lift the best
    generated score above the best seed and make it the run's best; one that only writes the
    worse program must not (the control: the search cannot invent a better score)."""
    task = get_task(TASK)
    shipped = task.heuristics()

    def in_process(name: str) -> float:
        return task.run(shipped[name].function(task.function_name), SETTING).score

    config = make_config(budget=8)
    best_seed = max(in_process(n) for n in config.seed_heuristics)
    expected = in_process(program)
    assert (expected > best_seed) is beats_the_seeds  # the premise
    with AlgorithmDB(tmp_path / "s.sqlite") as db:
        res = run_search(config, FixedProgramSampler(shipped[program].code), db, sandbox,
                         run_id="s", progress=False)
        recs = db.records("s")
    seeds = [r.score for r in recs if r.operator == "seed" and r.ok]
    generated = [r.score for r in recs if r.operator != "seed" and r.ok]
    assert max(seeds) == best_seed
    assert generated and set(generated) == {expected}  # every answer scored as in-process
    assert res.best_generated is not None and res.best_generated.score == expected
    if beats_the_seeds:
        assert res.best_generated.score > best_seed
        assert res.best.score == expected and res.best.operator != "seed"
    else:
        assert res.best_generated.score < best_seed
        assert res.best.score == best_seed and res.best.operator == "seed"


# -- overlap_sampling: batch k+1 sampled while batch k is evaluated --------------------------


class _EventLog:
    """Shared by a sampler and an evaluator that record when each call starts and ends."""

    def __init__(self) -> None:
        import threading

        self.events: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()

    def add(self, what: str, edge: str, k: int) -> None:
        with self.lock:
            self.events.append((what, edge, k))


class _LoggedSampler(FakeSampler):
    def __init__(self, log: _EventLog, delay_s: float = 0.05) -> None:
        super().__init__(delay_s)
        self.log = log

    def sample(self, prompts, n=1, config=DEFAULT_GEN):
        k = len(self.calls)
        self.log.add("sample", "start", k)
        out = super().sample(prompts, n, config)
        self.log.add("sample", "end", k)
        return out


class _LoggedEvaluator(_CountingEvaluator):
    def __init__(self, log: _EventLog, delay_s: float = 0.2) -> None:
        super().__init__()
        self.log, self.delay_s, self.calls = log, delay_s, 0

    def evaluate_many(self, jobs, progress=False):
        k, self.calls = self.calls, self.calls + 1
        self.log.add("evaluate", "start", k)
        time.sleep(self.delay_s)
        out = super().evaluate_many(jobs, progress)
        self.log.add("evaluate", "end", k)
        return out


@pytest.mark.parametrize("method", ["eoh", "funsearch"])
def test_overlapped_sampling_runs_while_the_previous_batch_is_evaluated(tmp_path, method):
    from aad_kit.search import make_search_config, run_search_method

    log = _EventLog()
    kw = dict(task=TASK, setting=SETTING, budget=16, batch_size=4, seed=3, overlap_sampling=True)
    if method == "eoh":
        kw.update(population_size=4, init_samples=4, include_seed_heuristics=False)
    config = make_search_config(method, **kw)
    with AlgorithmDB(tmp_path / "o.sqlite") as db:
        res = run_search_method(config, _LoggedSampler(log), db, _LoggedEvaluator(log), run_id="o",
                                progress=False)
    assert res.n_samples == 16 and "sampling_wait_s" in res.timings
    ev = log.events
    evaluations = [(ev.index(("evaluate", "start", k)), ev.index(("evaluate", "end", k)))
                   for k in range(max(e[2] for e in ev if e[0] == "evaluate") + 1)]
    # sampling calls 1..3 (batches 2..4) that run while an evaluation runs
    overlapped = [k for k in range(1, 4)
                  if any(ev.index(("sample", "start", k)) < b and a < ev.index(("sample", "end", k))
                         for a, b in evaluations)]
    assert overlapped == [1, 2, 3], ev
    # without overlap, no sampling call ever starts during an evaluation
    log2 = _EventLog()
    with AlgorithmDB(tmp_path / "s.sqlite") as db:
        run_search_method(make_search_config(method, **{**kw, "overlap_sampling": False}),
                          _LoggedSampler(log2), db, _LoggedEvaluator(log2), run_id="s", progress=False)
    ev2 = log2.events
    spans = [(ev2.index(("evaluate", "start", k)), ev2.index(("evaluate", "end", k)))
             for k in range(max(e[2] for e in ev2 if e[0] == "evaluate") + 1)]
    samplings = [(ev2.index(("sample", "start", k)), ev2.index(("sample", "end", k))) for k in range(4)]
    assert not [1 for s0, s1 in samplings for a, b in spans if s0 < b and a < s1], ev2


def test_overlapped_prompts_see_the_population_one_batch_late_and_resume_exactly(tmp_path, sandbox):
    config = make_config(budget=24, overlap_sampling=True)
    with AlgorithmDB(tmp_path / "full.sqlite") as db:
        run_search(config, FakeSampler(), db, sandbox, run_id="r", progress=False)
        reference = snapshot(db, "r")
        recs = db.records("r")
    index_of = {r.id: r.sample_index for r in recs}
    starts = [s for s, _ in batches(config)]
    for r in recs:
        if r.sample_index is None or r.sample_index < 0 or not r.parent_ids:
            continue
        batch = max(s for s in starts if s <= r.sample_index)
        previous = starts[starts.index(batch) - 1] if batch != starts[0] else batch
        # parents come from before the previous batch (seeds have negative indices)
        assert all(index_of[p] < previous for p in r.parent_ids), (r.sample_index, r.parent_ids)
    assert any(r.parent_ids and max(index_of[p] for p in r.parent_ids) >= 0 for r in recs)
    # the sequential search gives other prompts (the lag is real) ...
    with AlgorithmDB(tmp_path / "seq.sqlite") as db:
        run_search(make_config(budget=24), FakeSampler(), db, sandbox, run_id="r", progress=False)
        assert snapshot(db, "r") != reference
    # ... and an interrupted overlapped run resumes to the same records
    class Failing(FakeSampler):
        def sample(self, prompts, n=1, config=DEFAULT_GEN):
            if len(self.calls) == 3:
                raise RuntimeError("server went away")
            return super().sample(prompts, n, config)

    with AlgorithmDB(tmp_path / "cut.sqlite") as db:
        with pytest.raises(RuntimeError, match="server went away"):
            run_search(config, Failing(), db, sandbox, run_id="r", progress=False)
        assert 0 < len([r for r in db.records("r") if (r.sample_index or -1) >= 0]) < 24
        res = run_search(config, FakeSampler(), db, sandbox, run_id="r", progress=False)
        assert res.resumed and snapshot(db, "r") == reference


def test_overlap_off_keeps_old_runs_resumable():
    d = make_config().to_dict()
    assert "overlap_sampling" not in d and SearchConfig.from_dict(d) == make_config()
    on = make_config(overlap_sampling=True)
    assert on.to_dict()["overlap_sampling"] is True and SearchConfig.from_dict(on.to_dict()) == on
