"""FunSearch island search: sampling rules, prompt, resets, and full runs through the real
sandbox with a deterministic fake sampler (resume, duplicates, lineage, the island plot)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import pytest

from aad_kit.code import code_hash
from aad_kit.db import AlgorithmDB, RunConfigMismatch
from aad_kit.llm.base import Completion, GenerationConfig
from aad_kit.prompts import answer_format, funsearch_prompt
from aad_kit.sandbox import Sandbox, SandboxConfig
from aad_kit.search import (
    FunSearchConfig,
    SearchConfig,
    derive_seed,
    make_search_config,
    run_funsearch,
    run_search_method,
    search_method_of,
)
from aad_kit.search.funsearch import (
    TEMPLATE_SEED,
    Island,
    IslandState,
    batches,
    build_islands,
    cluster_temperature,
    default_seed_heuristics,
    island_of,
    parse_versioned_answer,
    plan_sample,
    reset_islands,
    sample_clusters,
    sample_in_cluster,
    softmax,
)
from aad_kit.tasks import get_task
from tests.test_search import DEFAULT_GEN, _CountingEvaluator, canned_answer, snapshot

TASK, SETTING = "admissible_set", "n12_w7"  # ~20 ms per evaluation
_ASKED = re.compile(r"Write `priority_v(\d+)`")


class VersionedFakeSampler:
    """Deterministic (prompt, seed, position) -> answer; about half of the valid answers
    name their function the way the prompt asks (``priority_v{k}``)."""

    model_id = "fake/funsearch-1"

    def __init__(self, fail_after_calls: int | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.fail_after_calls = fail_after_calls

    def sample(self, prompts: Sequence[str], n: int = 1, config: GenerationConfig = DEFAULT_GEN) -> list:
        if self.fail_after_calls is not None and len(self.calls) >= self.fail_after_calls:
            raise RuntimeError("the model server went away")
        self.calls.append((len(prompts), config.seed))
        out = []
        for i, p in enumerate(prompts):
            row = []
            for j in range(n):
                h = int.from_bytes(hashlib.sha256(f"{p}|{config.seed}|{i}|{j}".encode()).digest()[:8], "big")
                text = canned_answer(h)
                m = _ASKED.search(p)
                if m and (h >> 20) % 2 and "def priority(" in text:
                    text = text.replace("def priority(", f"def priority_v{m.group(1)}(")
                row.append(Completion(text=text, completion_tokens=len(text) // 4))
            out.append(row)
        return out

    def info(self) -> dict:
        return {"backend": "fake", "model_id": self.model_id, "sha256": "0" * 64}


def make_config(**kw) -> FunSearchConfig:
    base = dict(task=TASK, setting=SETTING, budget=40, num_islands=4, reset_period=12,
                batch_size=4, seed=7)
    base.update(kw)
    return FunSearchConfig(**base)


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxConfig(workers=1), cache=False) as sb:
        yield sb


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sandbox):
    """One uninterrupted run of make_config(): (db path, result, snapshot)."""
    path = tmp_path_factory.mktemp("fs") / "ref.sqlite"
    sampler = VersionedFakeSampler()
    with AlgorithmDB(path) as db:
        res = run_funsearch(make_config(), sampler, db, sandbox, run_id="fs", progress=False)
        snap = snapshot(db, "fs")
    return path, res, snap, sampler


def _rec(db: AlgorithmDB, index: int, score: float | None, island: int | None, code: str | None = None,
         **kw):
    code = code or f"def priority(el, n, w):\n    return {index}.0{'0' * (index % 3)}\n"
    notes = [f"island:{island}"] if island is not None else []
    return db.add_algorithm(run_id="r", task=TASK, setting=SETTING, operator="funsearch",
                            status="ok" if score is not None else "runtime_error", sample_index=index,
                            code=code, code_hash=code_hash(code), score=score, notes=notes, **kw)


# -- config ------------------------------------------------------------------------------------
def test_config_defaults_validation_and_batches():
    c = FunSearchConfig(task=TASK)
    assert (c.num_islands, c.programs_per_prompt, c.temperature_init, c.temperature_period) == (10, 2, 0.1, 30_000)
    assert c.reset_period == 14_400 and c.setting == get_task(TASK).default_setting
    c = make_config(seed_heuristics=["trivial", TEMPLATE_SEED])
    assert c.seed_heuristics == ("trivial", TEMPLATE_SEED)
    assert FunSearchConfig.from_dict(c.to_dict()) == c
    for bad in (dict(num_islands=0), dict(programs_per_prompt=0), dict(reset_period=0),
                dict(temperature_init=0.0), dict(seed_heuristics=("nope",)), dict(budget=0)):
        with pytest.raises(ValueError):
            make_config(**bad)
    # batches are cut at the reset points
    assert batches(make_config(budget=14, batch_size=4, reset_period=6)) == [
        (0, 4), (4, 6), (6, 10), (10, 12), (12, 14)]
    assert batches(make_config(budget=9, batch_size=4, reset_period=100)) == [(0, 4), (4, 8), (8, 9)]


def test_default_seeds_are_the_template_program():
    assert default_seed_heuristics("admissible_set") == ("trivial",)
    for name in ("bin_packing", "tsp_construct"):
        t = get_task(name)
        (seed,) = default_seed_heuristics(t)
        assert seed == TEMPLATE_SEED or code_hash(t.heuristics()[seed].code) == code_hash(t.template_program)


def test_search_method_dispatch():
    assert isinstance(make_search_config(task=TASK, budget=3), SearchConfig)
    fs = make_search_config("funsearch", task=TASK, budget=3)
    assert isinstance(fs, FunSearchConfig) and search_method_of(fs) == "funsearch"
    with pytest.raises(ValueError):
        make_search_config("nope", task=TASK)


# -- the sampling rules ------------------------------------------------------------------------
def test_temperature_decays_linearly_over_the_period():
    assert cluster_temperature(0) == pytest.approx(0.1)
    assert cluster_temperature(15_000) == pytest.approx(0.05)
    assert cluster_temperature(30_000) == pytest.approx(0.1)  # the period restarts
    ts = [cluster_temperature(n, 0.1, 100) for n in range(100)]
    assert all(a > b > 0 for a, b in zip(ts, ts[1:], strict=False))
    assert np.allclose(np.diff(ts), -0.1 / 100)


def test_softmax():
    p = softmax([1.0, 2.0, 3.0], 1.0)
    assert p.sum() == pytest.approx(1.0) and list(np.argsort(p)) == [0, 1, 2]
    assert np.allclose(p, np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
    big = softmax([792.0, 300.0, 791.0], 0.01)  # no overflow; near-greedy
    assert np.isfinite(big).all() and big[0] > 0.999 and big[1] == 0.0
    assert np.allclose(softmax([5.0, 5.0], 0.1), [0.5, 0.5])
    for bad in ([], [1.0, float("nan")], [float("inf")]):
        with pytest.raises(ValueError):
            softmax(bad, 1.0)
    with pytest.raises(ValueError):
        softmax([1.0], 0.0)


def test_cluster_sampling_follows_the_softmax_and_is_distinct():
    scores = [0.0, 0.5, 1.0, 2.0]
    firsts = []
    for s in range(4000):
        rng = np.random.default_rng([3, s])
        idx = sample_clusters(rng, scores, 2, 1.0)
        assert len(idx) == 2 and len(set(idx)) == 2
        firsts.append(idx[0])
    freq = np.bincount(firsts, minlength=4) / len(firsts)
    assert np.allclose(freq, softmax(scores, 1.0), atol=0.03)
    # more clusters asked for than exist: all of them, once each
    assert sorted(sample_clusters(np.random.default_rng(0), [1.0, 2.0], 5, 0.1)) == [0, 1]
    # low temperature: the best two clusters, the best first
    assert sample_clusters(np.random.default_rng(0), [10.0, 30.0, 20.0], 2, 0.1) == [1, 2]
    # a higher temperature spreads the choice
    hot = {sample_clusters(np.random.default_rng([1, s]), [1.0, 2.0, 3.0], 1, 100.0)[0] for s in range(200)}
    assert hot == {0, 1, 2}


def test_shorter_programs_are_preferred_within_a_cluster():
    picks = [sample_in_cluster(np.random.default_rng([5, s]), [100, 200]) for s in range(4000)]
    p_short = 1.0 / (1.0 + np.exp(-100 / (200 + 1e-6)))  # softmax([0, -0.5])
    assert np.mean(np.array(picks) == 0) == pytest.approx(p_short, abs=0.03)
    equal = [sample_in_cluster(np.random.default_rng([6, s]), [50, 50, 50]) for s in range(3000)]
    assert np.allclose(np.bincount(equal) / 3000, 1 / 3, atol=0.04)
    assert sample_in_cluster(np.random.default_rng(0), [77]) == 0


# -- the prompt --------------------------------------------------------------------------------
def test_prompt_shows_versions_worse_to_better():
    task = get_task(TASK)
    worse = "import math\n\n\ndef priority(el, n, w):\n    \"\"\"Worse idea.\"\"\"\n    return math.fsum(el)\n"
    better = ("def priority(el, n, w):\n    \"\"\"Better idea.\"\"\"\n"
              "    return 0.0 if not el else priority(el[1:], n, w) + el[0]\n")
    p = funsearch_prompt(task, [worse, ("an idea", better)])
    assert p == funsearch_prompt(task, [worse, ("an idea", better)])  # pure
    assert p.startswith(task.description.strip()) and task.signature in p
    assert p.index("def priority_v0(") < p.index("Worse idea") < p.index("def priority_v1(") < p.index("Better idea")
    assert "priority_v1(el[1:], n, w)" in p  # the recursive call follows the rename
    assert "def priority(" not in p.split("```python", 1)[1]  # programs only as versions
    assert "Write `priority_v2`, an improved version of `priority_v1`" in p
    assert answer_format(task).replace("`priority`", "`priority_v2`") in p
    # no programs: the template is v0 and v1 is asked for
    q = funsearch_prompt(task, ())
    assert "def priority_v0(" in q and "Write `priority_v1`" in q and "priority_v2" not in q
    # shipped heuristics are shown without their provenance header
    trivial = task.heuristics()["trivial"].code
    assert "# source:" in trivial and "# source:" not in funsearch_prompt(task, [trivial])


def test_versioned_answers_are_renamed_back():
    task = get_task(TASK)
    text = ("```python\nimport math\n\ndef helper(a, b, c):\n    return a\n\n"
            "def priority_v2(el, n, w):\n    \"\"\"Sum.\"\"\"\n    return float(sum(el)) if n < 0 else priority_v2(el, -1, w)\n```")
    pa = parse_versioned_answer(text, task, 2)
    assert "def priority(el, n, w)" in pa.code and "priority(el, -1, w)" in pa.code
    assert "priority_v2" not in pa.code and pa.notes[0] == "renamed function `priority_v2` to `priority`"
    assert pa.status_hint is None
    plain = parse_versioned_answer("```python\ndef priority(el, n, w):\n    return 1.0\n```", task, 2)
    assert not any("renamed" in n for n in plain.notes)


# -- islands -----------------------------------------------------------------------------------
def _island(db, scores, base, island):
    isl = Island()
    for j, s in enumerate(scores):
        isl.register(db.get(_rec(db, base + j, s, island)))
    return isl


def test_reset_rule(tmp_path):
    with AlgorithmDB(tmp_path / "r.sqlite") as db:
        def fresh():
            return [_island(db, [5.0, 4.0], 0, 0), _island(db, [1.0], 10, 1),
                    _island(db, [3.0, 2.0, 3.0], 20, 2), _island(db, [2.0], 30, 3)]
        islands = fresh()
        best = [isl.best for isl in islands]
        top = islands[2].clusters[3.0]  # the best cluster: its shortest, then oldest, program
        assert best[2] == min(top, key=lambda r: (len(r.code), r.sample_index)) and best[2].score == 3.0
        assert len(best[2].code) < len(top[0].code)
        moves = reset_islands(islands, np.random.default_rng(0))
        assert sorted(i for i, _ in moves) == [1, 3]  # the worse half by best score
        for i, src in moves:
            assert src in (0, 2)
            assert islands[i].programs() == [best[src]] and islands[i].n_programs == 1
        assert islands[0].n_programs == 2 and islands[2].n_programs == 3  # survivors untouched
        again = fresh()
        assert reset_islands(again, np.random.default_rng(0)) == moves  # deterministic
        # ties are broken at random, and an empty island counts as the worst
        ties = [_island(db, [7.0], 40 + k, k) for k in range(4)]
        resets = {tuple(sorted(i for i, _ in reset_islands([*ties], np.random.default_rng(s))))
                  for s in range(30)}
        assert len(resets) > 1 and all(len(r) == 2 for r in resets)
        with_empty = [Island(), _island(db, [1.0], 50, 1), _island(db, [2.0], 51, 2)]
        moved = reset_islands(with_empty, np.random.default_rng(1))
        assert [i for i, _ in moved] == [0] and with_empty[0].best is not None


def test_islands_are_rebuilt_from_records_in_sample_order(tmp_path):
    config = make_config(num_islands=2, reset_period=4, budget=12)
    with AlgorithmDB(tmp_path / "b.sqlite") as db:
        db.add_algorithm(run_id="r", task=TASK, setting=SETTING, operator="seed", status="ok",
                         sample_index=-1, code="def priority(el, n, w):\n    return 0.0\n", score=1.0)
        _rec(db, 0, 3.0, 0)
        _rec(db, 1, None, 1)  # invalid: not registered
        _rec(db, 2, 2.0, 1)
        _rec(db, 3, 3.0, 0, code="x = 1", duplicate_of=2)  # duplicate: not registered
        _rec(db, 4, 9.0, 1)
        recs = db.records("r")
    s3 = build_islands(config, recs, 3)
    assert [sorted(isl.clusters) for isl in s3.islands] == [[1.0, 3.0], [1.0, 2.0]]
    assert [isl.n_programs for isl in s3.islands] == [2, 2] and s3.resets == {}
    s4 = build_islands(config, recs, 4)  # the reset at 4 happened: island 1 (best 2) <- island 0
    assert s4.resets == {4: [(1, 0)]}
    assert [r.sample_index for r in s4.islands[1].programs()] == [0]
    s5 = build_islands(config, recs, 5)
    assert sorted(s5.islands[1].clusters) == [3.0, 9.0]
    # advancing step by step gives the same islands as one build
    step = IslandState(config)
    for before in range(6):
        step.advance(recs, before)
    assert [isl.clusters for isl in step.islands] == [isl.clusters for isl in s5.islands]
    with pytest.raises(ValueError):
        step.advance(recs, 2)
    # plans: the island, programs from it, worse to better, prompt, generation
    task = get_task(TASK)
    for k in range(5, 40):
        plan = plan_sample(config, task, k, s5)
        assert plan == plan_sample(config, task, k, s5)
        island = int(plan.notes[0].split(":")[1])
        assert plan.operator == "funsearch" and 0 <= island < 2
        assert {p.id for p in plan.parents} <= {p.id for p in s5.islands[island].programs()}
        assert len(plan.parents) == 2 and len({p.id for p in plan.parents}) == 2
        assert [p.score for p in plan.parents] == sorted(p.score for p in plan.parents)
        assert plan.prompt == funsearch_prompt(task, plan.parents)
        assert plan.generation == 1 + max(p.generation for p in plan.parents)
    # an empty island prompts with the template
    empty = IslandState(config).advance([], 0)
    plan = plan_sample(config, task, 0, empty)
    assert plan.parents == () and plan.generation == 0 and plan.prompt == funsearch_prompt(task, ())


# -- full runs ---------------------------------------------------------------------------------
def test_full_run(reference, sandbox, tmp_path):
    path, res, snap, sampler = reference
    config = make_config()
    assert res.n_samples == config.budget == res.new_samples and res.n_seeds == 1 and not res.resumed
    assert res.counts_by_operator == {"funsearch": config.budget}
    assert [s for _, s in sampler.calls] == [derive_seed(7, start) for start, _ in batches(config)]
    with AlgorithmDB(path) as db:
        info = db.get_run("fs")
        assert info.status == "finished" and info.config["search_method"] == "funsearch"
        assert info.manifest["search_config"]["num_islands"] == 4
        recs = db.records("fs")
        by_id = {r.id: r for r in recs}
        (seed,) = [r for r in recs if r.sample_index < 0]
        assert seed.operator == "seed" and seed.sample_index == -1 and seed.notes == ["heuristic:trivial"]
        samples = [r for r in recs if r.sample_index >= 0]
        assert [r.sample_index for r in samples] == list(range(config.budget))
        assert all(r.prompt and r.raw_response is not None and r.model_id == "fake/funsearch-1" for r in samples)
        for r in samples:
            island = island_of(r)
            assert r.notes[0] == f"island:{island}" and 0 <= island < 4
            start = next(s for s, e in batches(config) if s <= r.sample_index < e)
            state = build_islands(config, recs, start)
            assert {p for p in r.parent_ids} <= {p.id for p in state.islands[island].programs()}
            parents = [by_id[p] for p in r.parent_ids]
            assert 1 <= len(parents) <= 2 and len(set(r.parent_ids)) == len(parents)
            assert all(p.ok and p.duplicate_of is None and p.sample_index < start for p in parents)
            assert [p.score for p in parents] == sorted(p.score for p in parents)
            assert r.prompt == funsearch_prompt(get_task(TASK), parents)
            assert r.generation == 1 + max(p.generation for p in parents)
            resets = [n for n in r.notes if n.startswith("reset:")]
            assert len(resets) == (2 if r.sample_index in (12, 24, 36) else 0)
        # lineage: generations grow beyond 1 and every chain ends at the seed
        deep = max(samples, key=lambda r: (r.generation, r.sample_index))
        assert deep.generation >= 3
        nodes = db.lineage(deep.id)
        assert seed.id in {n.id for n in nodes}
        assert all(n.generation < deep.generation for n in nodes if n.id != deep.id)
        # answers named priority_v{k} were renamed back and scored
        renamed = [r for r in samples if any(re.match(r"renamed function `priority_v\d+`", n) for n in r.notes)]
        assert renamed and all("def priority(" in r.code and "priority_v" not in r.code for r in renamed)
        assert any(r.ok for r in renamed)
        # duplicates: stored, pointing at an earlier original, not re-evaluated
        dups = [r for r in samples if r.duplicate_of is not None]
        assert dups and res.n_duplicates == len(dups)
        for d in dups:
            orig = by_id[d.duplicate_of]
            assert orig.duplicate_of is None and orig.code_hash == d.code_hash and orig.id < d.id
            assert (d.status, d.score, d.eval_time_s) == (orig.status, orig.score, 0.0)
        originals = [r.code_hash for r in recs if r.code_hash and r.duplicate_of is None]
        assert len(originals) == len(set(originals))
        assert set(res.counts_by_status) >= {"ok", "syntax_error", "missing_function", "runtime_error"}
        # the population: the islands' best programs, best first
        final = build_islands(config, recs, config.budget)
        assert {r.id for r in res.population} == {isl.best.id for isl in final.islands}
        assert [r.score for r in res.population] == sorted((r.score for r in res.population), reverse=True)
        assert res.best.score == max(r.score for r in recs if r.ok)
        # a finished run draws nothing; a different config is refused
        again = VersionedFakeSampler()
        res2 = run_funsearch(config, again, db, sandbox, run_id="fs", progress=False)
        assert res2.resumed and res2.new_samples == 0 and again.calls == []
        with pytest.raises(RunConfigMismatch):
            run_funsearch(make_config(reset_period=13), VersionedFakeSampler(), db, sandbox, run_id="fs",
                          progress=False)
    # deterministic: the same run in another file is identical (through the dispatcher too)
    with AlgorithmDB(tmp_path / "again.sqlite") as db2:
        run_search_method(config, VersionedFakeSampler(), db2, sandbox, run_id="fs", progress=False)
        assert snapshot(db2, "fs") == snap


def test_resume_from_a_partial_batch(reference, sandbox, tmp_path):
    """A run cut inside the batch after a reset resumes to the same records."""
    path, _, snap, _ = reference
    config = make_config()
    with AlgorithmDB(path) as ref:
        keep = [r for r in ref.records("fs") if r.sample_index < 14]  # batch [12, 16) cut at 14
    with AlgorithmDB(tmp_path / "cut.sqlite") as cut:
        cut.start_or_resume_run(
            "fs", {**config.to_dict(), "model_id": VersionedFakeSampler.model_id, "search_method": "funsearch"}, {})
        new_id = {}
        for r in keep:
            d = r.to_dict()
            for k in ("id", "run_id", "created_at"):
                d.pop(k)
            d["parent_ids"] = [new_id[p] for p in d["parent_ids"]]
            d["duplicate_of"] = new_id.get(d["duplicate_of"]) if d["duplicate_of"] else None
            new_id[r.id] = cut.add_algorithm(run_id="fs", **d)
        sampler = VersionedFakeSampler()
        res = run_funsearch(config, sampler, cut, sandbox, run_id="fs", progress=False)
        assert res.resumed and res.new_samples == config.budget - 14
        assert sampler.calls[0] == (4, derive_seed(7, 12))  # the cut batch is re-issued whole
        assert snapshot(cut, "fs") == snap


def test_interrupted_run_resumes_to_the_uninterrupted_one(reference, sandbox, tmp_path):
    _, _, snap, _ = reference
    config = make_config()
    with AlgorithmDB(tmp_path / "int.sqlite") as db:
        with pytest.raises(RuntimeError, match="went away"):
            run_funsearch(config, VersionedFakeSampler(fail_after_calls=5), db, sandbox, run_id="fs",
                          progress=False)
        assert db.count("fs", samples_only=True) == 20 and db.get_run("fs").status == "running"
        res = run_funsearch(config, VersionedFakeSampler(), db, sandbox, run_id="fs", progress=False)
        assert res.resumed and res.new_samples == 20 and len(db.get_run("fs").resumes) == 1
        assert snapshot(db, "fs") == snap


def test_duplicates_are_not_reevaluated(tmp_path):
    class Repeating(VersionedFakeSampler):
        def sample(self, prompts, n=1, config=DEFAULT_GEN):
            self.calls.append((len(prompts), config.seed))
            return [[Completion("```python\ndef priority_v1(el, n, w):\n    return 1.0\n```")] for _ in prompts]

    ev = _CountingEvaluator()
    with AlgorithmDB(tmp_path / "d.sqlite") as db:
        res = run_funsearch(make_config(budget=9, include_seed_heuristics=False), Repeating(), db, ev,
                            run_id="d", progress=False)
        assert len(ev.jobs) == 1 and res.n_duplicates == 8 and res.counts_by_status == {"ok": 9}
        recs = db.records("d")
        assert recs[0].parent_ids == [] and recs[0].generation == 0  # empty islands: the template
        assert len(res.population) == 1


def test_progress_bar_and_on_batch(tmp_path, capsys):
    seen = []
    with AlgorithmDB(tmp_path / "p.sqlite") as db:
        res = run_funsearch(make_config(budget=6, batch_size=3, include_seed_heuristics=False),
                            VersionedFakeSampler(), db, _CountingEvaluator(), run_id="p", progress=True,
                            on_batch=lambda run_id, n: seen.append((run_id, n)))
    assert res.n_samples == 6 and seen == [("p", 3), ("p", 6)]
    assert "best=" in capsys.readouterr().err


def test_island_plot_builds_headless(reference):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from aad_kit import plots

    path, res, _, _ = reference
    with AlgorithmDB(path) as db:
        df = db.to_dataframe("fs")
    table = plots.island_best_so_far(df)
    assert list(table.index) == list(range(40)) and list(table.columns) == [0, 1, 2, 3]
    assert (table.diff().fillna(0) >= 0).all().all()  # an island's best never drops (resets included)
    assert table.max(axis=1).iloc[-1] == res.best.score
    # the table's last row is the islands' best as the search rebuilt them (resets included)
    final = build_islands(make_config(), [r for r in AlgorithmDB(path).records("fs")], 40)
    assert list(table.iloc[-1]) == [isl.best_score for isl in final.islands]
    fig = plots.best_so_far_by_island(df, {"trivial": 690.0})
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) >= 4 + 1 + 3  # islands, overall, resets
    import matplotlib.pyplot as plt

    plt.close(fig)
