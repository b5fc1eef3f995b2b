"""FunSearch-style island search (Romera-Paredes et al., Nature 2024): the LLM improves on
versioned programs from one island at a time, the sandbox scores the answers.

The run is a fixed sequence of ``budget`` LLM samples, ``sample_index = 0 .. budget-1``, in
batches of ``batch_size`` consecutive indices whose prompts are all built from the islands
as they were *before the batch started* (so a batch goes to the sampler in one call).

Islands. ``num_islands`` islands each hold *clusters*: programs keyed by their score
signature (here the score on the run's one setting, so a cluster is "the programs with
this exact score"). Before the first sample every island holds the seed programs (default:
the task's template program, see :func:`default_seed_heuristics`). A valid, non-duplicate
answer is registered in the island its prompt came from (duplicates of any earlier program
of the run never enter an island, as in EoH).

A prompt (sample ``k``): pick an island uniformly; in it draw ``m = min(programs_per_prompt,
#clusters)`` distinct clusters, each draw a softmax over the remaining clusters' scores at
the island's current temperature; in each chosen cluster draw one program, a softmax over
``-(length - min length) / max length`` (shorter programs preferred, FunSearch's rule); show
the chosen programs sorted worse to better as ``<function>_v0 .. _v{m-1}`` and ask for
``<function>_v{m}`` (:func:`aad_kit.prompts.funsearch_prompt`). An empty island (no valid
seed) shows the template as ``_v0``. The answer's ``_v{m}`` function is renamed back to the
task's function before parsing. Clusters are drawn *without* replacement: FunSearch's code
draws with replacement, which at temperature 0.1 nearly always shows the same best program
twice; distinct clusters show two programs to improve on.

Temperature (as in FunSearch's code): ``T = temperature_init * (1 - (n mod P) / P)`` with
``P = temperature_period`` and ``n`` the number of programs registered in the island (seeds
and a reset's founder included; it restarts at a reset). It decays linearly from
``temperature_init`` towards 0 as the island grows, then jumps back every ``P`` programs.
Scores enter the softmax unnormalised, as in FunSearch, so at T = 0.1 a score one unit
higher is e^10 times likelier: the search is close to greedy over clusters.

Reset (FunSearch: every 4 hours; here every ``reset_period`` samples). Just before sample
``r = j * reset_period`` (j >= 1), the ``num_islands // 2`` islands with the lowest best score
(ties broken at random) are emptied, and each is re-seeded with the best program of a
surviving island drawn uniformly. Batches are cut at the reset points, so every prompt of a
batch sees the same islands. Sample ``r`` records the reset in its notes
(``"reset:3<-7"``: island 3 re-seeded from island 7).

Why ``reset_period = 14_400`` samples by default: the paper's runs (FunSearch, 32 samplers,
4 samples per prompt, Llama-3.1-8B on vLLM) reset every 4 h = 14,400 s; its throughput is not
published. At a conservative 1 sample/s that is 14,400 samples, longer than the paper's
10,000-sample runs, so those runs most likely never reset (any faster rate only makes the
period longer). The default keeps that behaviour: a run of up to 14,400 samples never
resets. Set ``reset_period`` lower (e.g. ``budget // 4``) to study resets in short runs.

Determinism and resume (the EoH rules): nothing random is kept in memory. Sample ``k``'s
island, clusters and programs come from ``numpy.random.default_rng([seed, k])``; the reset
at ``r`` from ``default_rng([seed, r, RESET_STREAM])``; the batch's sampler seed from
``(seed, first sample_index of the batch)``. The islands are rebuilt from the stored records
in sample order (each sample's island is in its notes, ``"island:3"``), so restarting a
``run_id`` rebuilds them exactly, skips stored samples, and re-issues a partly stored batch
identically, storing only the missing samples.

Records: operator ``funsearch``, ``parent_ids`` = the programs shown (in version order),
``generation = 1 + max parent generation`` (0 for a template prompt), seeds with operator
``seed`` and negative sample indices, duplicates stored pointing at the original
(``duplicate_of``) and not re-evaluated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aad_kit.code import code_hash
from aad_kit.db import AlgorithmDB, AlgorithmRecord
from aad_kit.llm.base import Sampler
from aad_kit.prompts import funsearch_prompt
from aad_kit.search.eoh import (
    Evaluator,
    PlannedSample,
    RunConfig,
    SearchResult,
    _default_run_id,
    _Search,
)
from aad_kit.search.parsing import ParsedAnswer, parse_answer
from aad_kit.tasks import Task, get_task, task_ref

OPERATOR = "funsearch"
TEMPLATE_SEED = "template"  # seed name of the task's template program (no shipped copy)
RESET_STREAM = 0x4E5E7  # third word of a reset's rng seed (keeps it apart from sample draws)


@dataclass(frozen=True)
class FunSearchConfig(RunConfig):
    """Everything that determines a FunSearch run (stored with the run; compared on resume)."""

    task: str
    setting: str | None = None  # None: the task's default setting
    budget: int = 64  # LLM samples (seed programs do not count)
    num_islands: int = 10
    programs_per_prompt: int = 2  # versions shown per prompt (fewer while an island is small)
    temperature_init: float = 0.1  # cluster-sampling temperature at the start of a period
    temperature_period: int = 30_000  # programs per island over which it decays to 0
    reset_period: int = 14_400  # samples between resets (4 h at 1 sample/s; module doc)
    seed: int = 0
    temperature: float = 0.8  # LLM sampling
    top_p: float = 0.95
    max_new_tokens: int = 1024
    batch_size: int = 8  # prompts per sampler call
    include_seed_heuristics: bool = True
    seed_heuristics: tuple[str, ...] | None = None  # None: the template (default_seed_heuristics)
    overlap_sampling: bool = False  # sample batch k+1 while k is evaluated (RunConfig)

    def __post_init__(self) -> None:
        t = get_task(self.task)
        object.__setattr__(self, "task", task_ref(self.task))
        object.__setattr__(self, "setting", t.setting(self.setting).name)
        if self.seed_heuristics is not None:
            object.__setattr__(self, "seed_heuristics", tuple(self.seed_heuristics))
            missing = set(self.seed_heuristics) - set(t.heuristics()) - {TEMPLATE_SEED}
            if missing:
                raise ValueError(f"unknown heuristics for task {t.name!r}: {sorted(missing)}")
        for name in ("budget", "num_islands", "programs_per_prompt", "temperature_period",
                     "reset_period", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not (math.isfinite(self.temperature_init) and self.temperature_init > 0):
            raise ValueError("temperature_init must be finite and > 0")

    @classmethod
    def from_dict(cls, d: Any) -> FunSearchConfig:
        return super().from_dict(d)  # type: ignore[no-any-return]


def default_seed_heuristics(task: str | Task) -> tuple[str, ...]:
    """The seed of every island by default: the task's template program.

    Its shipped copy where there is one (``trivial`` if the task has it, else a heuristic
    whose normalised code is the template's, e.g. ``best_fit`` for bin packing), else
    :data:`TEMPLATE_SEED` (the template program itself).
    """
    t = get_task(task)
    hs = t.heuristics()
    if "trivial" in hs:
        return ("trivial",)
    template = code_hash(t.template_program)
    same = sorted(name for name, h in hs.items() if code_hash(h.code) == template)
    return (same[0],) if same else (TEMPLATE_SEED,)


def batches(config: FunSearchConfig) -> list[tuple[int, int]]:
    """The ``[start, end)`` sample ranges sampled together: ``batch_size`` long, cut at the
    reset points (multiples of ``reset_period``)."""
    out: list[tuple[int, int]] = []
    for lo in range(0, config.budget, config.reset_period):
        hi = min(lo + config.reset_period, config.budget)
        out += [(s, min(s + config.batch_size, hi)) for s in range(lo, hi, config.batch_size)]
    return out


# -- the sampling rules (pure functions) -------------------------------------------------------
def cluster_temperature(n_programs: int, init: float = 0.1, period: int = 30_000) -> float:
    """FunSearch's schedule: ``init * (1 - (n mod period) / period)``, always > 0."""
    return float(init) * (1.0 - (int(n_programs) % int(period)) / float(period))


def softmax(logits: Sequence[float] | np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` in float64, stable for any finite logits."""
    x = np.asarray(logits, dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("softmax needs a non-empty array of finite logits")
    if not temperature > 0:
        raise ValueError("temperature must be > 0")
    z = (x - x.max()) / float(temperature)
    p = np.exp(z)
    return p / p.sum()


def sample_clusters(
    rng: np.random.Generator, scores: Sequence[float], k: int, temperature: float
) -> list[int]:
    """``min(k, len(scores))`` distinct cluster indices, each draw a softmax over the
    remaining clusters' scores (the first index is exactly softmax-distributed)."""
    remaining = list(range(len(scores)))
    chosen: list[int] = []
    for _ in range(min(int(k), len(remaining))):
        p = softmax([scores[i] for i in remaining], temperature)
        chosen.append(remaining.pop(int(rng.choice(len(remaining), p=p))))
    return chosen


def sample_in_cluster(rng: np.random.Generator, lengths: Sequence[int]) -> int:
    """Index of one program of a cluster: softmax over ``-(len - min) / (max + 1e-6)`` at
    temperature 1, so shorter programs are preferred (at most e times likelier)."""
    lengths = np.asarray(lengths, dtype=np.float64)
    normalised = (lengths - lengths.min()) / (lengths.max() + 1e-6)
    return int(rng.choice(len(lengths), p=softmax(-normalised, 1.0)))


# -- islands ------------------------------------------------------------------------------------
@dataclass
class Island:
    """One island: clusters of programs by score, in registration order."""

    clusters: dict[float, list[AlgorithmRecord]] = field(default_factory=dict)
    n_programs: int = 0  # registered since the island was (re)created: drives the temperature

    def register(self, rec: AlgorithmRecord) -> None:
        self.clusters.setdefault(float(rec.score), []).append(rec)  # type: ignore[arg-type]
        self.n_programs += 1

    @property
    def best_score(self) -> float:
        return max(self.clusters) if self.clusters else -math.inf

    @property
    def best(self) -> AlgorithmRecord | None:
        """The best program (the shortest, then the oldest, of the best cluster)."""
        if not self.clusters:
            return None
        return min(self.clusters[self.best_score], key=lambda r: (len(r.code or ""), r.sample_index))

    def programs(self) -> list[AlgorithmRecord]:
        return [r for c in self.clusters.values() for r in c]


def island_of(rec: AlgorithmRecord) -> int | None:
    """The island a sample was prompted from (its ``island:N`` note), None for seeds."""
    for note in rec.notes or ():
        m = re.fullmatch(r"island:(\d+)", note)
        if m:
            return int(m.group(1))
    return None


def _registrable(rec: AlgorithmRecord) -> bool:
    return rec.ok and rec.duplicate_of is None and bool(rec.code) and rec.sample_index is not None


def reset_islands(islands: list[Island], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Empty the worse half of ``islands`` (by best score, ties at random) and re-seed each
    with the best program of a surviving island drawn uniformly; in place.

    Returns ``(reset island, founder island)`` pairs in reset order.
    """
    n = len(islands)
    scores = np.array([isl.best_score for isl in islands])
    order = np.lexsort((rng.random(n), scores))  # ascending best score, random on ties
    n_reset = n // 2
    reset, keep = order[:n_reset], order[n_reset:]
    moves: list[tuple[int, int]] = []
    for i in reset:
        founder_island = int(keep[int(rng.integers(len(keep)))])
        founder = islands[founder_island].best
        islands[int(i)] = Island()
        if founder is not None:
            islands[int(i)].register(founder)
        moves.append((int(i), founder_island))
    return moves


class IslandState:
    """The islands as the stored records determine them, advanced in sample order."""

    def __init__(self, config: FunSearchConfig) -> None:
        self.config = config
        self.islands = [Island() for _ in range(config.num_islands)]
        self.upto: int | None = None  # every record with sample_index < upto is registered
        self.resets: dict[int, list[tuple[int, int]]] = {}  # reset point -> moves

    def advance(self, records: Sequence[AlgorithmRecord], before: int) -> IslandState:
        """Register the records with ``upto <= sample_index < before`` (seeds first, in
        every island), applying each reset point ``r <= before`` after the samples below it."""
        if self.upto is not None and before < self.upto:
            raise ValueError("islands only move forward; build a new IslandState")
        by_index = sorted(
            (r for r in records if r.sample_index is not None and r.sample_index < before
             and (self.upto is None or r.sample_index >= self.upto)),
            key=lambda r: r.sample_index,  # type: ignore[arg-type, return-value]
        )
        if self.upto is None:
            for rec in (r for r in by_index if r.sample_index < 0):  # type: ignore[operator]
                if _registrable(rec):
                    for isl in self.islands:
                        isl.register(rec)
            self.upto = 0
        samples = [r for r in by_index if r.sample_index >= 0]  # type: ignore[operator]
        period = self.config.reset_period
        last = min(before, self.config.budget - 1)  # a reset at the budget is never used
        pos = 0
        for point in range((self.upto // period + 1) * period, last + 1, period):
            while pos < len(samples) and samples[pos].sample_index < point:  # type: ignore[operator]
                self._register(samples[pos])
                pos += 1
            rng = np.random.default_rng([int(self.config.seed) & 0xFFFFFFFF, point, RESET_STREAM])
            self.resets[point] = reset_islands(self.islands, rng)
        for rec in samples[pos:]:
            self._register(rec)
        self.upto = before
        return self

    def _register(self, rec: AlgorithmRecord) -> None:
        i = island_of(rec)
        if _registrable(rec) and i is not None and 0 <= i < len(self.islands):
            self.islands[i].register(rec)


def build_islands(
    config: FunSearchConfig, records: Sequence[AlgorithmRecord], before: int
) -> IslandState:
    """The islands just before sample ``before`` (after a reset at ``before``, if any)."""
    return IslandState(config).advance(records, before)


def next_version(n_programs: int) -> int:
    """The version a prompt showing ``n_programs`` asks for (the template counts as one)."""
    return max(1, int(n_programs))


def plan_sample(
    config: FunSearchConfig, task: Task, sample_index: int, state: IslandState
) -> PlannedSample:
    """Island, programs and prompt of one sample (a pure function of its inputs)."""
    rng = np.random.default_rng([int(config.seed) & 0xFFFFFFFF, int(sample_index)])
    island_id = int(rng.integers(config.num_islands))
    island = state.islands[island_id]
    notes = [f"island:{island_id}"]
    notes += [f"reset:{i}<-{j}" for i, j in state.resets.get(sample_index, [])]
    if not island.clusters:
        return PlannedSample(sample_index, OPERATOR, (), 0, funsearch_prompt(task, ()), tuple(notes))
    keys = sorted(island.clusters)
    temperature = cluster_temperature(island.n_programs, config.temperature_init,
                                      config.temperature_period)
    chosen = []
    for c in sample_clusters(rng, keys, config.programs_per_prompt, temperature):
        members = island.clusters[keys[c]]
        chosen.append(members[sample_in_cluster(rng, [len(r.code or "") for r in members])])
    chosen.sort(key=lambda r: (float(r.score), r.sample_index))  # type: ignore[arg-type]
    parents = tuple(chosen)
    return PlannedSample(
        sample_index, OPERATOR, parents, 1 + max(p.generation for p in parents),
        funsearch_prompt(task, parents), tuple(notes),
    )


def parse_versioned_answer(text: str, task: Task, version: int) -> ParsedAnswer:
    """:func:`parse_answer` after renaming ``<function>_v{version}`` back to the function
    (when the answer defines the versioned name and not the plain one)."""
    fn = task.function_name
    versioned = f"{fn}_v{int(version)}"
    renamed = False
    if re.search(rf"\bdef\s+{re.escape(versioned)}\s*\(", text) and not re.search(
        rf"\bdef\s+{re.escape(fn)}\s*\(", text
    ):
        text = re.sub(rf"\b{re.escape(versioned)}\b", fn, text)
        renamed = True
    pa = parse_answer(text, task)
    if renamed:
        pa.notes.insert(0, f"renamed function `{versioned}` to `{fn}`")
        pa.renamed_from = pa.renamed_from or versioned
    return pa


class _FunSearch(_Search):
    config: FunSearchConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.state: IslandState | None = None

    def seed_programs(self) -> list[tuple[str, str, str]]:
        names = self.config.seed_heuristics
        if names is None:
            names = default_seed_heuristics(self.task)
        hs = self.task.heuristics()
        return [
            (TEMPLATE_SEED, self.task.template_program, "the task's template program")
            if name == TEMPLATE_SEED else (name, hs[name].code, hs[name].source)
            for name in names
        ]

    def batch_ranges(self) -> list[tuple[int, int]]:
        return batches(self.config)

    def islands_before(self, start: int) -> IslandState:
        if self.state is None or self.state.upto is None or self.state.upto > start:
            self.state = IslandState(self.config)
        return self.state.advance(self.records, start)

    def plan_batch(self, start: int, end: int, before: int | None = None) -> list[PlannedSample]:
        state = self.islands_before(start if before is None else before)
        return [plan_sample(self.config, self.task, k, state) for k in range(start, end)]

    def parse(self, plan: PlannedSample, text: str) -> ParsedAnswer:
        return parse_versioned_answer(text, self.task, next_version(len(plan.parents)))

    def final_population(self) -> list[AlgorithmRecord]:
        """The best program of each island at the end, distinct, best first."""
        state = IslandState(self.config).advance(self.records, self.config.budget)
        best = {b.id: b for b in (isl.best for isl in state.islands) if b is not None}
        return sorted(best.values(), key=lambda r: (-float(r.score), r.sample_index))  # type: ignore[arg-type]

    def stored_config(self) -> dict[str, Any]:
        return {**super().stored_config(), "search_method": OPERATOR}


def run_funsearch(
    config: FunSearchConfig,
    sampler: Sampler,
    db: AlgorithmDB | str | Path,
    sandbox: Evaluator | None = None,
    run_id: str | None = None,
    progress: bool = True,
    on_batch: Any = None,
) -> SearchResult:
    """Run (or resume) a FunSearch island search of ``config.budget`` LLM samples.

    Same contract as :func:`aad_kit.search.run_search`: ``db`` is an
    :class:`~aad_kit.db.AlgorithmDB` or a path, ``sandbox`` defaults to the shared default
    sandbox, an existing ``run_id`` is resumed (same config required), and
    ``on_batch(run_id, n_samples_stored)`` is called after every batch that stored samples.
    ``SearchResult.population`` holds the islands' best programs.
    """
    own_db = not isinstance(db, AlgorithmDB)
    database = AlgorithmDB(db) if own_db else db  # type: ignore[arg-type]
    if sandbox is None:
        from aad_kit.sandbox import default_sandbox

        sandbox = default_sandbox()
    try:
        rid = run_id or f"{OPERATOR}-{_default_run_id(config)}"
        return _FunSearch(config, sampler, database, sandbox, rid, progress, on_batch).run()
    finally:
        if own_db:
            database.close()


__all__ = [
    "OPERATOR",
    "RESET_STREAM",
    "TEMPLATE_SEED",
    "FunSearchConfig",
    "Island",
    "IslandState",
    "batches",
    "build_islands",
    "cluster_temperature",
    "default_seed_heuristics",
    "island_of",
    "next_version",
    "parse_versioned_answer",
    "plan_sample",
    "reset_islands",
    "run_funsearch",
    "sample_clusters",
    "sample_in_cluster",
    "softmax",
]
