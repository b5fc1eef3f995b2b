"""EoH-style evolutionary search: the LLM writes programs, the sandbox scores them.

The run is a fixed sequence of ``budget`` LLM samples, ``sample_index = 0 .. budget-1``:

1. *seeds* (optional): the task's shipped heuristics are scored and stored with operator
   ``seed`` and ``sample_index = -h .. -1``; they are not LLM samples and do not count
   against the budget.
2. *initialisation*: samples ``0 .. init_samples-1`` use operator ``i1``.
3. *evolution*: each later sample draws an operator from ``operators`` (by
   ``operator_weights``) and its parents from the population, then prompts the model.

Samples are processed in batches of ``batch_size`` consecutive indices (the initialisation
and the evolution phase are batched separately). All prompts of a batch are built from the
population as it was *before the batch started* (every valid, non-duplicate record with a
smaller ``sample_index``, seeds included), so a batch's prompts are independent of one another
and go to the sampler in one call.

Selection and population (as in EoH): the population is the ``population_size`` best valid,
distinct programs seen so far (score descending, ties: the older first), i.e. elitist
(mu + lambda) replacement. Parents are drawn without replacement with probability
proportional to ``1 / (rank + 1 + N)`` (rank 0 = best, N = population size) for
``selection="rank"``, or uniformly for ``selection="uniform"``. An operator whose parents
the population cannot supply yet (e.g. e1 with one valid program) is left out for that
sample; when no configured operator is possible (e.g. an empty population) the sample is an
``i1``. A child's ``generation`` is ``1 + max(parent generations)`` (its lineage depth).

Determinism and resume: nothing random is kept in memory between samples. Sample ``k``'s
operator and parents come from ``numpy.random.default_rng([seed, k])`` applied to the
population before its batch, and the batch's ``GenerationConfig.seed`` is derived from
``(seed, first sample_index of the batch)``. Restarting a ``run_id`` reloads its records,
skips every stored sample (the database is idempotent on ``(run_id, sample_index)``), and for
a partly stored batch re-issues the *same* sampler call (same prompts, same seed) and stores
only the missing samples, so with a deterministic backend an interrupted-and-resumed run
equals an uninterrupted one.

Duplicates: a sample whose normalised code (:func:`aad_kit.code.code_hash`) is already in the
run is stored (with its prompt and raw answer) pointing at the original (``duplicate_of``),
copying its status, score and metric, and is not re-evaluated; duplicates never enter the
population.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aad_kit.code import code_hash as _code_hash
from aad_kit.config_io import config_from_dict, config_to_dict
from aad_kit.db import AlgorithmDB, AlgorithmRecord
from aad_kit.llm.base import Completion, GenerationConfig, Sampler
from aad_kit.manifest import base_manifest
from aad_kit.prompts import MIN_PARENTS, OPERATORS, build_prompt
from aad_kit.result import EvalResult, Status
from aad_kit.search.parsing import ParsedAnswer, parse_answer
from aad_kit.tasks import Task, get_task, task_ref

EVOLUTION_OPERATORS = tuple(op for op in OPERATORS if op != "i1")


class Evaluator(Protocol):
    """What the search needs from a sandbox (:class:`aad_kit.sandbox.Sandbox` fits)."""

    def evaluate_many(self, jobs: Sequence[tuple[Any, ...]], progress: bool = False) -> list[EvalResult]: ...


class RunConfig:
    """What every search config shares: JSON round trip and the per-batch sampler settings.

    A mixin for frozen dataclasses with ``seed``, ``temperature``, ``top_p`` and
    ``max_new_tokens`` fields (:class:`SearchConfig`, the FunSearch config).
    """

    seed: int
    temperature: float
    top_p: float
    max_new_tokens: int
    # Why: with a model server, sampling (GPUs) and evaluation (CPUs) can run at once. Batch k+1
    # is then sampled while batch k is evaluated, so its prompts are built from the records
    # before batch k's first sample instead of before its own: parents are drawn from the
    # population as it stood one batch earlier. That is the only change; it is deterministic,
    # so resume stays exact and duplicate-free, and each record's parents are still recorded.
    overlap_sampling: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form a run stores and compares on resume; ``overlap_sampling`` only when on,
        so runs stored before the field existed still resume (``from_dict`` restores it)."""
        d = config_to_dict(self)
        if not d.get("overlap_sampling"):
            d.pop("overlap_sampling", None)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Any:
        return config_from_dict(cls, d)

    def generation_config(self, first_index: int) -> GenerationConfig:
        return GenerationConfig(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            seed=derive_seed(self.seed, first_index),
        )


@dataclass(frozen=True)
class SearchConfig(RunConfig):
    """Everything that determines a search run (stored with the run; compared on resume)."""

    task: str
    setting: str | None = None  # None: the task's default setting
    budget: int = 64  # number of LLM samples (seeded heuristics do not count)
    population_size: int = 8
    init_samples: int | None = None  # i1 samples first; None: population_size (capped at budget)
    operators: tuple[str, ...] = ("e1", "e2", "m1", "m2")
    operator_weights: tuple[float, ...] | None = None  # None: equal weights
    e_parents: int = 2  # parents of e1 / e2 (m1 / m2 always take one)
    selection: str = "rank"  # "rank": p ~ 1/(rank + 1 + N), as in EoH; "uniform"
    seed: int = 0
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 1024
    batch_size: int = 8  # prompts per sampler call
    include_seed_heuristics: bool = True
    seed_heuristics: tuple[str, ...] | None = None  # names of shipped heuristics; None: all
    # Sample the next batch while this one is evaluated; its prompts then see the population
    # one batch late (RunConfig.overlap_sampling).
    overlap_sampling: bool = False

    def __post_init__(self) -> None:
        t = get_task(self.task)
        object.__setattr__(self, "task", task_ref(self.task))
        object.__setattr__(self, "setting", t.setting(self.setting).name)
        object.__setattr__(self, "operators", tuple(self.operators))
        if self.init_samples is None:
            object.__setattr__(self, "init_samples", self.population_size)
        weights = self.operator_weights
        if weights is None:
            weights = (1.0,) * len(self.operators)
        object.__setattr__(self, "operator_weights", tuple(float(w) for w in weights))
        if self.seed_heuristics is not None:
            object.__setattr__(self, "seed_heuristics", tuple(self.seed_heuristics))
        unknown = [op for op in self.operators if op not in EVOLUTION_OPERATORS]
        if unknown or not self.operators:
            raise ValueError(
                f"operators must be a non-empty subset of {EVOLUTION_OPERATORS}, got {self.operators}"
            )
        if len(self.operator_weights) != len(self.operators):
            raise ValueError("operator_weights must have one weight per operator")
        if any(w < 0 or not math.isfinite(w) for w in self.operator_weights) or not sum(
            self.operator_weights
        ):
            raise ValueError("operator_weights must be finite, >= 0, and not all zero")
        if self.budget < 1 or self.population_size < 1 or self.batch_size < 1:
            raise ValueError("budget, population_size and batch_size must be >= 1")
        if self.init_samples < 0:  # type: ignore[operator]
            raise ValueError("init_samples must be >= 0")
        object.__setattr__(self, "init_samples", min(int(self.init_samples), self.budget))  # type: ignore[arg-type]
        if self.e_parents < 2:
            raise ValueError("e_parents must be >= 2")
        if self.selection not in ("rank", "uniform"):
            raise ValueError("selection must be 'rank' or 'uniform'")
        if self.seed_heuristics is not None:
            missing = set(self.seed_heuristics) - set(t.heuristics())
            if missing:
                raise ValueError(f"unknown heuristics for task {t.name!r}: {sorted(missing)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchConfig:
        return super().from_dict(d)  # type: ignore[no-any-return]


def derive_seed(seed: int, sample_index: int) -> int:
    """A 31-bit sampler seed that depends only on (run seed, sample_index)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(sample_index), 0x5EED]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


def batches(config: SearchConfig) -> list[tuple[int, int]]:
    """The ``[start, end)`` sample ranges sampled together, in order."""
    out: list[tuple[int, int]] = []
    init = int(config.init_samples or 0)
    for lo, hi in ((0, init), (init, config.budget)):
        for start in range(lo, hi, config.batch_size):
            out.append((start, min(start + config.batch_size, hi)))
    return out


def population(records: Sequence[AlgorithmRecord], size: int, before: int | None = None) -> list[AlgorithmRecord]:
    """The ``size`` best valid distinct records (score desc, older first on ties).

    ``before``: only records with ``sample_index < before`` (seeds have negative indices).
    """
    pool = [
        r
        for r in records
        if r.ok
        and r.duplicate_of is None
        and r.sample_index is not None
        and (before is None or r.sample_index < before)
    ]
    pool.sort(key=lambda r: (-float(r.score), r.sample_index))  # type: ignore[arg-type]
    return pool[:size]


@dataclass(frozen=True)
class PlannedSample:
    sample_index: int
    operator: str
    parents: tuple[AlgorithmRecord, ...]
    generation: int
    prompt: str
    notes: tuple[str, ...] = ()  # stored first in the record's notes (e.g. FunSearch's island)

    @property
    def parent_ids(self) -> list[int]:
        return [p.id for p in self.parents]


def plan_sample(
    config: SearchConfig, task: Task, sample_index: int, pop: Sequence[AlgorithmRecord]
) -> PlannedSample:
    """Operator, parents and prompt of one sample (a pure function of its inputs)."""
    if sample_index < int(config.init_samples or 0) or not pop:
        return PlannedSample(sample_index, "i1", (), 0, build_prompt("i1", task))
    rng = np.random.default_rng([int(config.seed) & 0xFFFFFFFF, int(sample_index)])
    need = {op: (config.e_parents if op in ("e1", "e2") else MIN_PARENTS[op]) for op in config.operators}
    ops = [op for op in config.operators if need[op] <= len(pop)]
    weights = np.array([config.operator_weights[config.operators.index(op)] for op in ops])  # type: ignore[index]
    if not ops or weights.sum() <= 0:  # e.g. only e-operators configured, too few parents
        return PlannedSample(sample_index, "i1", (), 0, build_prompt("i1", task))
    op = ops[int(rng.choice(len(ops), p=weights / weights.sum()))]
    n = len(pop)
    if config.selection == "rank":
        w = 1.0 / (np.arange(n) + 1.0 + n)
    else:
        w = np.ones(n)
    idx = rng.choice(n, size=need[op], replace=False, p=w / w.sum())
    parents = tuple(pop[int(i)] for i in idx)
    generation = 1 + max(p.generation for p in parents)
    return PlannedSample(sample_index, op, parents, generation, build_prompt(op, task, parents))


@dataclass
class SearchResult:
    """Summary of a (possibly resumed) search run."""

    run_id: str
    db_path: str
    best: AlgorithmRecord | None  # best valid record of the run, seeded heuristics included
    best_generated: AlgorithmRecord | None  # best valid LLM sample
    population: list[AlgorithmRecord]
    n_samples: int  # LLM samples stored for this run (== budget when finished)
    n_seeds: int
    counts_by_status: dict[str, int]  # over LLM samples
    counts_by_operator: dict[str, int]  # over LLM samples
    n_duplicates: int
    valid_rate: float  # share of LLM samples with status ok (duplicates included)
    new_samples: int  # samples drawn in this call (0 if the run was already complete)
    resumed: bool
    wall_time_s: float
    samples_per_minute: float  # new samples per minute of this call's wall time
    timings: dict[str, float] = field(default_factory=dict)  # sampling / evaluation / overhead

    def summary(self) -> str:
        best = (
            f"{self.best.score:.6g} (#{self.best.id}, {self.best.operator})"
            if self.best is not None and self.best.score is not None
            else "none"
        )
        return (
            f"run {self.run_id}: {self.n_samples} samples ({self.new_samples} new), "
            f"valid {self.valid_rate:.0%}, duplicates {self.n_duplicates}, best {best}, "
            f"{self.samples_per_minute:.1f} samples/min"
        )


def _counts(records: Sequence[AlgorithmRecord], key: str) -> dict[str, int]:
    return dict(sorted(Counter(str(getattr(r, key)) for r in records).items()))


def _manifest(config: RunConfig, sampler: Sampler, evaluator: Any) -> dict[str, Any]:
    try:
        model = dict(sampler.info())
    except Exception as e:  # noqa: BLE001 - provenance is best effort
        model = {"model_id": getattr(sampler, "model_id", None), "info_error": repr(e)}
    sandbox: dict[str, Any] = {"type": type(evaluator).__name__}
    info = getattr(evaluator, "info", None)
    if callable(info):
        try:
            sandbox.update(info())
        except Exception as e:  # noqa: BLE001
            sandbox["info_error"] = repr(e)
    return base_manifest(model=model, sandbox=sandbox, search_config=config.to_dict())


def _default_run_id(config: Any) -> str:
    return f"{get_task(config.task).name}-{config.setting}-seed{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


class _Search:
    """One run of a batched, resumable LLM search (EoH here; other methods subclass it).

    Subclasses override the hooks: :meth:`seed_programs`, :meth:`batch_ranges`,
    :meth:`plan_batch`, :meth:`parse`, :meth:`final_population` and :meth:`stored_config`.
    Storage, evaluation, duplicates, the progress bar and the summary are shared.
    """

    def __init__(
        self,
        config: Any,
        sampler: Sampler,
        db: AlgorithmDB,
        evaluator: Evaluator,
        run_id: str,
        progress: bool,
        on_batch: Any = None,
    ) -> None:
        self.on_batch = on_batch
        self.config = config
        self.sampler = sampler
        self.db = db
        self.evaluator = evaluator
        self.run_id = run_id
        self.progress = progress
        self.task = get_task(config.task)
        self.model_id = str(getattr(sampler, "model_id", "") or "")
        self.records: list[AlgorithmRecord] = []
        self.by_index: dict[int, AlgorithmRecord] = {}
        self.by_hash: dict[str, AlgorithmRecord] = {}
        self.timings = {"sampling_s": 0.0, "evaluation_s": 0.0, "db_s": 0.0}
        self.new_samples = 0
        self.bar: Any = None

    # -- state ------------------------------------------------------------------------------
    def _remember(self, rec: AlgorithmRecord) -> None:
        self.records.append(rec)
        if rec.sample_index is not None:
            self.by_index[rec.sample_index] = rec
        if rec.code_hash and rec.duplicate_of is None and rec.code_hash not in self.by_hash:
            self.by_hash[rec.code_hash] = rec

    def _store(self, **fields: Any) -> AlgorithmRecord:
        t0 = time.perf_counter()
        aid = self.db.add_algorithm(
            run_id=self.run_id, task=self.config.task, setting=self.config.setting, **fields
        )
        rec = self.db.get(aid)
        self.timings["db_s"] += time.perf_counter() - t0
        self._remember(rec)
        return rec

    def _evaluate(self, codes: Sequence[str]) -> list[EvalResult]:
        if not codes:
            return []
        t0 = time.perf_counter()
        jobs = [(self.config.task, code, self.config.setting) for code in codes]
        results = list(self.evaluator.evaluate_many(jobs))
        self.timings["evaluation_s"] += time.perf_counter() - t0
        if len(results) != len(codes):
            raise RuntimeError(f"the evaluator returned {len(results)} results for {len(codes)} jobs")
        return results

    # -- hooks ------------------------------------------------------------------------------
    def seed_programs(self) -> list[tuple[str, str, str]]:
        """``(name, code, source)`` of the programs seeded before the first sample."""
        heuristics = self.task.heuristics()
        names = list(self.config.seed_heuristics) if self.config.seed_heuristics is not None else sorted(heuristics)
        return [(name, heuristics[name].code, heuristics[name].source) for name in names]

    def batch_ranges(self) -> list[tuple[int, int]]:
        return batches(self.config)

    def plan_batch(self, start: int, end: int, before: int | None = None) -> list[PlannedSample]:
        """The plans of samples ``start .. end-1``, from the records before ``before`` only
        (default ``start``; earlier when sampling overlaps evaluation)."""
        pop = population(self.records, self.config.population_size,
                         before=start if before is None else before)
        return [plan_sample(self.config, self.task, k, pop) for k in range(start, end)]

    def parse(self, plan: PlannedSample, text: str) -> ParsedAnswer:
        return parse_answer(text, self.task)

    def final_population(self) -> list[AlgorithmRecord]:
        return population(self.records, self.config.population_size)

    def stored_config(self) -> dict[str, Any]:
        """The config stored with the run (and compared on resume)."""
        return {**self.config.to_dict(), "model_id": self.model_id}

    # -- seeds ------------------------------------------------------------------------------
    def seed_population(self) -> None:
        if not self.config.include_seed_heuristics:
            return
        programs = self.seed_programs()
        todo = [
            (j - len(programs), name, code, source)
            for j, (name, code, source) in enumerate(programs)
            if (j - len(programs)) not in self.by_index
        ]
        results = self._evaluate([code for _, _, code, _ in todo])
        for (index, name, code, source), res in zip(todo, results, strict=True):
            digest = _code_hash(code)
            original = self.by_hash.get(digest)
            self._store(
                sample_index=index,
                operator="seed",
                generation=0,
                model_id=None,
                prompt=None,
                raw_response=None,
                code=code,
                code_hash=digest,
                idea=f"shipped heuristic {name}: {source}"[:300],
                score=res.score,
                metric=res.metric,
                status=res.status.value,
                error=res.message or None,
                eval_time_s=res.runtime_s,
                duplicate_of=original.id if original is not None else None,
                notes=[f"heuristic:{name}"],
            )

    # -- one batch --------------------------------------------------------------------------
    def plans_to_sample(self, start: int, end: int, before: int | None = None) -> list[PlannedSample] | None:
        """The plans of batch ``start .. end-1``, or None when all of it is stored (resume)."""
        if all(k in self.by_index for k in range(start, end)):
            return None
        return self.plan_batch(start, end, before)

    def sample_batch(self, plans: Sequence[PlannedSample], start: int) -> list[list[Completion]]:
        """The model's answers to ``plans`` (one sampler call; safe to run in a thread)."""
        t0 = time.perf_counter()
        # the whole batch, even if part of it is stored: the same call gives the same draws
        completions = self.sampler.sample(
            [p.prompt for p in plans], 1, self.config.generation_config(start)
        )
        self.timings["sampling_s"] += time.perf_counter() - t0
        if len(completions) != len(plans) or any(not c for c in completions):
            raise RuntimeError(
                f"the sampler returned {len(completions)} completion lists for {len(plans)} prompts"
            )
        return completions

    def finish_batch(self, start: int, plans: Sequence[PlannedSample],
                     completions: Sequence[Sequence[Completion]]) -> None:
        """Parse, evaluate and store the samples of a batch that are not stored yet."""
        todo = [(p, completions[p.sample_index - start][0]) for p in plans
                if p.sample_index not in self.by_index]
        parsed = [self.parse(p, c.text) for p, c in todo]

        # dedup against the run and within the batch; evaluate each new program once
        to_eval: dict[str, str] = {}
        for pa in parsed:
            if pa.code is None:
                continue
            h = _code_hash(pa.code)
            if h not in self.by_hash and h not in to_eval:
                to_eval[h] = pa.code
        results = dict(zip(to_eval, self._evaluate(list(to_eval.values())), strict=True))

        for (plan, completion), pa in zip(todo, parsed, strict=True):
            self._store_sample(plan, completion, pa, results)
            self.new_samples += 1
            self._tick()

    def run_batch(self, start: int, end: int) -> None:
        plans = self.plans_to_sample(start, end)
        if plans is not None:
            self.finish_batch(start, plans, self.sample_batch(plans, start))

    def run_batches(self) -> None:
        """Every batch in order; with ``overlap_sampling``, batch k+1 is sampled (in a thread)
        while batch k is evaluated and stored."""
        ranges = self.batch_ranges()
        if not self.config.overlap_sampling:
            for start, end in ranges:
                n_before = self.new_samples
                self.run_batch(start, end)
                self._batch_done(n_before)
            return
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aad-sampling")

        def submit(i: int) -> tuple[list[PlannedSample] | None, Any]:
            start, end = ranges[i]
            # before batch i-1's first sample: all of it is stored by the time this is called
            plans = self.plans_to_sample(start, end, ranges[i - 1][0] if i else start)
            return plans, (pool.submit(self.sample_batch, plans, start) if plans else None)

        try:
            pending = submit(0) if ranges else (None, None)
            for i, (start, _end) in enumerate(ranges):
                plans, future = pending
                completions = None
                if future is not None:
                    t0 = time.perf_counter()
                    completions = future.result()
                    self.timings["sampling_wait_s"] = (self.timings.get("sampling_wait_s", 0.0)
                                                       + time.perf_counter() - t0)
                pending = submit(i + 1) if i + 1 < len(ranges) else (None, None)
                if completions is not None:  # None: the whole batch was stored already
                    n_before = self.new_samples
                    self.finish_batch(start, plans, completions)
                    self._batch_done(n_before)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _batch_done(self, n_before: int) -> None:
        if self.on_batch is not None and self.new_samples > n_before:
            self.on_batch(self.run_id, len(self.samples()))

    def _store_sample(
        self,
        plan: PlannedSample,
        completion: Completion,
        pa: ParsedAnswer,
        results: Mapping[str, EvalResult],
    ) -> None:
        notes = list(plan.notes) + list(pa.notes)
        if completion.finish_reason == "length":
            notes.append("answer cut at max_new_tokens")
        common = dict(
            sample_index=plan.sample_index,
            operator=plan.operator,
            parent_ids=plan.parent_ids,
            generation=plan.generation,
            model_id=self.model_id,
            prompt=plan.prompt,
            raw_response=completion.text,
            idea=pa.idea,
            finish_reason=completion.finish_reason,
            completion_tokens=completion.completion_tokens,
        )
        if pa.code is None:
            self._store(
                **common,
                code=None,
                status=(pa.status_hint or Status.MISSING_FUNCTION).value,
                error="no code found in the answer",
                notes=notes,
            )
            return
        h = _code_hash(pa.code)
        original = self.by_hash.get(h)
        if original is not None:
            self._store(
                **common,
                code=pa.code,
                code_hash=h,
                score=original.score,
                metric=original.metric,
                status=original.status,
                error=f"duplicate of #{original.id}",
                eval_time_s=0.0,
                duplicate_of=original.id,
                notes=notes + [f"duplicate of #{original.id}"],
            )
            return
        res = results[h]
        self._store(
            **common,
            code=pa.code,
            code_hash=h,
            score=res.score,
            metric=res.metric,
            status=res.status.value,
            error=res.message or None,
            eval_time_s=res.runtime_s,
            notes=notes,
        )

    # -- progress ---------------------------------------------------------------------------
    def samples(self) -> list[AlgorithmRecord]:
        return [r for r in self.records if r.sample_index is not None and r.sample_index >= 0]

    def _tick(self) -> None:
        samples = self.samples()
        valid = [r for r in samples if r.ok and r.duplicate_of is None]
        best = max((r.score for r in self.records if r.ok), default=None)
        ok_rate = sum(r.status == "ok" for r in samples) / max(1, len(samples))
        from aad_kit.progress import report

        report("search", len(samples), self.config.budget, unit="samples",
               valid=f"{ok_rate:.0%}", best="-" if best is None else f"{best:.6g}")
        if self.bar is None:
            return
        self.bar.set_postfix(
            best="-" if best is None else f"{best:.5g}", valid=f"{ok_rate:.0%}", distinct=len(valid),
            refresh=False,
        )
        self.bar.update(1)

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> SearchResult:
        t_start = time.perf_counter()
        config_dict = self.stored_config()
        resumed = self.db.start_or_resume_run(
            self.run_id, config_dict, _manifest(self.config, self.sampler, self.evaluator)
        )
        for rec in self.db.records(self.run_id):
            self._remember(rec)
        done = len(self.samples())
        if self.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=self.config.budget, initial=done, desc=f"search {self.run_id}", unit="sample"
            )
        try:
            self.seed_population()
            self.run_batches()
        finally:
            if self.bar is not None:
                self.bar.close()
        indices = sorted(r.sample_index for r in self.samples())  # type: ignore[type-var]
        if indices != list(range(self.config.budget)):
            raise RuntimeError(f"run {self.run_id}: stored sample indices are not 0..budget-1")
        self.db.mark_finished(self.run_id)
        wall = time.perf_counter() - t_start
        samples = self.samples()
        generated = population(samples, 1)
        overall = population(self.records, 1)
        timings = dict(self.timings)
        timings["total_s"] = wall
        # overlapped sampling is counted only where the search waited for it
        sampled = timings.get("sampling_wait_s", timings["sampling_s"])
        timings["overhead_s"] = max(0.0, wall - sampled - timings["evaluation_s"])
        if self.new_samples:
            timings["overhead_per_sample_ms"] = 1000 * timings["overhead_s"] / self.new_samples
        return SearchResult(
            run_id=self.run_id,
            db_path=self.db.path,
            best=overall[0] if overall else None,
            best_generated=generated[0] if generated else None,
            population=self.final_population(),
            n_samples=len(samples),
            n_seeds=len(self.records) - len(samples),
            counts_by_status=_counts(samples, "status"),
            counts_by_operator=_counts(samples, "operator"),
            n_duplicates=sum(r.duplicate_of is not None for r in samples),
            valid_rate=sum(r.status == "ok" for r in samples) / max(1, len(samples)),
            new_samples=self.new_samples,
            resumed=resumed,
            wall_time_s=wall,
            samples_per_minute=60.0 * self.new_samples / wall if wall > 0 else 0.0,
            timings=timings,
        )


def run_search(
    config: SearchConfig,
    sampler: Sampler,
    db: AlgorithmDB | str | Path,
    sandbox: Evaluator | None = None,
    run_id: str | None = None,
    progress: bool = True,
    on_batch: Any = None,
) -> SearchResult:
    """Run (or resume) an EoH-style search of ``config.budget`` LLM samples.

    ``on_batch(run_id, n_samples_stored)`` is called after every batch that stored samples
    (a long run can export or report as it goes).

    ``db`` is an :class:`~aad_kit.db.AlgorithmDB` or a path to one; ``sandbox`` is an
    :class:`aad_kit.sandbox.Sandbox` (default: the shared default sandbox). Calling again
    with an existing ``run_id`` resumes that run where it stopped (same config required);
    calling it on a finished run just returns its summary.
    """
    own_db = not isinstance(db, AlgorithmDB)
    database = AlgorithmDB(db) if own_db else db  # type: ignore[arg-type]
    if sandbox is None:
        from aad_kit.sandbox import default_sandbox

        sandbox = default_sandbox()
    try:
        search = _Search(config, sampler, database, sandbox, run_id or _default_run_id(config),
                         progress, on_batch)
        return search.run()
    finally:
        if own_db:
            database.close()


__all__ = [
    "EVOLUTION_OPERATORS",
    "PlannedSample",
    "RunConfig",
    "SearchConfig",
    "SearchResult",
    "batches",
    "derive_seed",
    "plan_sample",
    "population",
    "run_search",
]
