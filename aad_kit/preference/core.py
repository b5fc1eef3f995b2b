"""The pair core every preference strategy shares: :class:`PairConfig`, the candidates of a
run (:class:`Candidate`), the ranked pool (:func:`build_pool`, :class:`Pool`), pairs
(:class:`Pair`, :func:`make_pair`) and the drawn set (:class:`PairSet`, :func:`finish`), and the
driver that honours ``failed_as_rejected`` for any draw (:func:`run_with_failed_mode`).

The strategies are :mod:`aad_kit.preference.paper_dar` (the paper's DAR, ``dar``),
:mod:`aad_kit.preference.dar` (the ``dar_diverse`` variant) and the baselines of
:mod:`aad_kit.preference.strategies`.

The pool
--------
* Pool (:func:`build_pool`): valid algorithms are the records with ``status == "ok"``, a
  finite score and code, that are not duplicates (``duplicate_of`` set: skipped; two valid rows
  with the same normalised code hash: the older is kept). Seeded heuristics (operator ``seed``)
  are valid members of ``D`` unless ``include_seeds=False``. Failed answers (``status != "ok"``,
  not ``sandbox_error``, not seeds, with code or a raw answer, deduplicated) are only used as
  rejected answers, and only with ``failed_as_rejected``.
* Ranking: score descending, ties broken by id (older first). Tied scores always share a subset
  (a tie group takes the subset of its first member), so "a lower subset" implies "a strictly
  lower score".
* Subsets: ``partition="rank"`` (default) cuts the ranking into ``n_subsets`` equal-count
  quantiles (rank-based, as the method's name says); ``partition="score"`` uses equal-width
  score bins instead. The number of subsets is clipped to the number of distinct scores.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from aad_kit.code import code_hash as _code_hash
from aad_kit.prompts import format_answer

PARTITIONS = ("rank", "score")
FAILED_MODES = (False, True, "auto")
# Statuses that say nothing about the answer (our infrastructure failed): never "rejected".
NOT_THE_ANSWERS_FAULT = frozenset({"sandbox_error"})


class PreferenceDataError(ValueError):
    """No preference pair can be formed from the given records (the message says why)."""


@dataclass(frozen=True)
class PairConfig:
    """How preference pairs are drawn (DAR and the baselines share one config).

    Defaults marked *(kit)* are this kit's choices where the paper gives no number.
    """

    n_pairs: int | None = None
    """Pairs wanted. ``None``/0: ``paper_pairs`` for ``dar``; for the other strategies *(kit)*
    one per distinct candidate in the pool (valid ones, plus failed ones when they are used);
    the caps may give fewer."""
    seed: int = 0
    # --- dar: the paper's DAR (aad_kit.preference.paper_dar) ------------------------------
    m_subsets: int = 10
    """Paper: M equal-count ranked subsets."""
    top_subsets: int = 7
    """Paper: ``y+`` comes from the best M - 3 subsets."""
    subset_gap: int = 2
    """Paper: ``y-``'s subset is at least this many below ``y+``'s."""
    tau: float = 3.0
    """Paper: ``P(i) ∝ exp((M - 4 - i) / tau)`` over the top subsets."""
    paper_pairs: int = 1000
    """Paper: unique pairs drawn (then repeated to 10,000 rows there; epochs here)."""
    max_draw_factor: float = 50.0
    """Stop after ``max_draw_factor * n_pairs`` draws when no more unique pairs turn up."""
    # --- dar_diverse and the baselines --------------------------------------------------
    # --- DAR: ranked subsets ---------------------------------------------------------------
    n_subsets: int = 4
    """*(kit)* Number of ranked subsets ``m`` (quartiles of the ranking)."""
    partition: str = "rank"
    """``"rank"``: equal-count quantiles of the ranking; ``"score"``: equal-width score bins."""
    chosen_subsets: int = 2
    """*(kit)* ``y+`` comes from the best ``chosen_subsets`` subsets (the better half)."""
    min_subset_gap: int = 2
    """*(kit)* ``y-``'s subset index is at least this much larger than ``y+``'s (with 4 subsets:
    a whole quartile lies between them), so ``y-`` is clearly worse. Clipped to the number of
    subsets minus one when the data has fewer distinct scores than ``n_subsets``."""
    min_score_gap: float = 0.0
    """Valid-vs-valid pairs must also satisfy ``score(y+) - score(y-) > min_score_gap``."""
    # --- DAR: diversity ------------------------------------------------------------------
    max_chosen_reuse: int = 2
    """*(kit)* Times one algorithm may be the chosen answer."""
    max_rejected_reuse: int = 2
    """*(kit)* Times one algorithm (or failed answer) may be the rejected answer."""
    similarity_threshold: float = 0.9
    """*(kit)* Code similarity (:mod:`~aad_kit.preference.diversity`) at or above which two
    programs are near-duplicates (same family)."""
    similarity_mode: str = "tokens"
    """``"tokens"`` (normalised code tokens) or ``"shape"`` (AST shape: names and constants
    abstracted, so parameter variants count as copies)."""
    max_similar_chosen: int = 0
    """*(kit)* Each distinct chosen algorithm may have at most this many near-duplicates among
    the other distinct chosen algorithms (0: none)."""
    # --- candidates -----------------------------------------------------------------------
    include_seeds: bool = True
    """Shipped heuristics (operator ``seed``) are valid members of the database."""
    failed_as_rejected: bool | str = False
    """Use failed answers (``status != "ok"``) as rejected answers, below every valid one.
    ``"auto"``: only when the valid algorithms alone give fewer pairs than ``n_pairs`` (or, with
    the default ``n_pairs``, fewer than ``auto_min_pairs``)."""
    auto_min_pairs: int = 8
    """*(kit)* See ``failed_as_rejected="auto"``."""
    strict: bool = False
    """Raise :class:`PreferenceDataError` instead of returning fewer pairs than ``n_pairs``."""
    # --- baselines ------------------------------------------------------------------------
    min_gap: float | None = None
    """``min_gap`` strategy: minimum score difference. ``None`` *(kit)*: 10% of the valid
    score range."""
    extreme_fraction: float | None = None
    """``top_bottom`` strategy: size of the top / bottom groups as a fraction of the ranking.
    ``None``: ``1 / n_subsets`` (the top and the bottom subset)."""

    def __post_init__(self) -> None:
        if self.n_pairs is not None and self.n_pairs < 0:
            raise ValueError("n_pairs must be >= 0 (0 or None: the default)")
        if self.m_subsets < 3:
            raise ValueError("m_subsets must be >= 3")
        if not 1 <= self.subset_gap < self.m_subsets:
            raise ValueError("subset_gap must be in [1, m_subsets - 1]")
        if not 1 <= self.top_subsets <= self.m_subsets - self.subset_gap:
            raise ValueError("top_subsets must be in [1, m_subsets - subset_gap]")
        if not (self.tau > 0 and math.isfinite(self.tau)):
            raise ValueError("tau must be finite and > 0")
        if self.paper_pairs < 1 or self.max_draw_factor <= 0:
            raise ValueError("paper_pairs must be >= 1 and max_draw_factor > 0")
        if self.n_subsets < 2:
            raise ValueError("n_subsets must be >= 2")
        if self.partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, got {self.partition!r}")
        if not 1 <= self.chosen_subsets < self.n_subsets:
            raise ValueError("chosen_subsets must be in [1, n_subsets - 1]")
        if not 1 <= self.min_subset_gap < self.n_subsets:
            raise ValueError("min_subset_gap must be in [1, n_subsets - 1]")
        if self.min_score_gap < 0 or not math.isfinite(self.min_score_gap):
            raise ValueError("min_score_gap must be finite and >= 0")
        if self.max_chosen_reuse < 1 or self.max_rejected_reuse < 1:
            raise ValueError("max_chosen_reuse and max_rejected_reuse must be >= 1")
        if not 0.0 < self.similarity_threshold <= 1.0:
            raise ValueError("similarity_threshold must be in (0, 1]")
        if self.similarity_mode not in ("tokens", "shape"):
            raise ValueError("similarity_mode must be 'tokens' or 'shape'")
        if self.max_similar_chosen < 0:
            raise ValueError("max_similar_chosen must be >= 0")
        if self.failed_as_rejected not in FAILED_MODES:
            raise ValueError(f"failed_as_rejected must be one of {FAILED_MODES}")
        if self.min_gap is not None and (self.min_gap < 0 or not math.isfinite(self.min_gap)):
            raise ValueError("min_gap must be finite and >= 0")
        if self.extreme_fraction is not None and not 0.0 < self.extreme_fraction <= 0.5:
            raise ValueError("extreme_fraction must be in (0, 0.5]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairConfig:
        return cls(**dict(d))

    def with_(self, **changes: Any) -> PairConfig:
        return replace(self, **changes)


# ---------------------------------------------------------------------------- candidates
@dataclass(frozen=True)
class Candidate:
    """One algorithm (or failed answer) as pair material."""

    id: int
    score: float | None
    status: str
    operator: str
    code: str | None
    idea: str | None
    raw_response: str | None
    task: str
    setting: str | None
    run_id: str | None

    @property
    def valid(self) -> bool:
        return self.status == "ok" and self.score is not None

    @property
    def answer(self) -> str:
        """The model answer this candidate stands for (what DPO sees as chosen/rejected).

        Valid algorithms and failed ones with extracted code: :func:`aad_kit.prompts.format_answer`
        of (idea, code), the format the search parses. A failed answer without code (nothing
        parseable): the raw model answer as the model wrote it. A shipped seed heuristic
        (operator ``seed``) loses its provenance header (``# name:`` / ``# source:`` comment
        lines, citations a model should not learn to emit) and its idea is its function's
        docstring (else its name), not the stored "shipped heuristic NAME: citation".
        """
        if self.code and self.operator == "seed":
            return format_answer(*_seed_idea_and_code(self.idea, self.code))
        if self.code:
            return format_answer(self.idea, self.code)
        return (self.raw_response or "").strip()


def _seed_idea_and_code(idea: str | None, code: str) -> tuple[str, str]:
    import ast

    lines = code.strip().splitlines()
    while lines and lines[0].lstrip().startswith(("# name:", "# source:")):
        lines.pop(0)
    body = "\n".join(lines).strip()
    doc = None
    try:
        for node in ast.walk(ast.parse(body)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                break
    except SyntaxError:
        pass
    if doc:
        new_idea = " ".join(doc.strip().split("\n\n")[0].split())
    else:
        new_idea = (idea or "").split(":")[0].strip() or "shipped heuristic"
    return new_idea, body or code


def _get(rec: Any, name: str, default: Any = None) -> Any:
    if isinstance(rec, Mapping):
        return rec.get(name, default)
    return getattr(rec, name, default)


def _candidate(rec: Any) -> Candidate:
    score = _get(rec, "score")
    if score is not None:
        try:
            score = float(score)
        except (TypeError, ValueError):
            score = None
        if score is not None and not math.isfinite(score):
            score = None
    status = _get(rec, "status")
    status = str(getattr(status, "value", status))
    def _str(name: str) -> str | None:
        v = _get(rec, name)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)

    return Candidate(
        id=int(_get(rec, "id")), score=score, status=status, operator=str(_get(rec, "operator", "")),
        code=_str("code"), idea=_str("idea"), raw_response=_str("raw_response"),
        task=str(_get(rec, "task")), setting=_str("setting"), run_id=_str("run_id"),
    )  # fmt: skip


def _is_dup(rec: Any) -> bool:
    d = _get(rec, "duplicate_of")
    return d is not None and not (isinstance(d, float) and math.isnan(d))


def _as_records(records: Any) -> list[Any]:
    try:
        import pandas as pd

        if isinstance(records, pd.DataFrame):
            return records.to_dict("records")
    except ImportError:  # pragma: no cover
        pass
    return list(records)


@dataclass
class Pool:
    """The ranked valid algorithms (best first), their subsets, and the failed answers."""

    valid: list[Candidate]
    failed: list[Candidate]
    subset: np.ndarray  # subset index of each valid algorithm (same order as ``valid``)
    n_subsets: int  # effective number of subsets (<= config.n_subsets)
    task: str | None
    setting: str | None
    run_id: str | None
    config: PairConfig
    skipped: dict[str, int] = field(default_factory=dict)  # why records were left out
    _sim: np.ndarray | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"<Pool task={self.task!r} run={self.run_id!r}: {self.describe()}>"

    @property
    def scores(self) -> np.ndarray:
        return np.array([c.score for c in self.valid], dtype=float)

    @property
    def failed_subset(self) -> int:
        """Subset index given to failed answers: one below the worst valid subset."""
        return self.n_subsets

    @property
    def n_distinct_scores(self) -> int:
        return len(set(self.scores.tolist()))

    def rank_of(self) -> dict[int, int]:
        return {c.id: i for i, c in enumerate(self.valid)}

    def boundaries(self) -> list[float]:
        """Score thresholds between consecutive non-empty subsets (for plots)."""
        out = []
        s = self.scores
        for k in range(1, self.n_subsets):
            above, below = s[self.subset < k], s[self.subset >= k]
            if len(above) and len(below):
                out.append(float((above.min() + below.max()) / 2))
        return out

    def similarity(self) -> np.ndarray:
        """Code similarity matrix of the valid algorithms (computed once)."""
        if self._sim is None:
            from aad_kit.preference.diversity import similarity_matrix

            self._sim = similarity_matrix([c.code or "" for c in self.valid], self.config.similarity_mode)
        return self._sim

    def describe(self) -> str:
        return (
            f"{len(self.valid)} valid distinct algorithm(s) with {self.n_distinct_scores} distinct "
            f"score(s) in {self.n_subsets} subset(s), {len(self.failed)} failed answer(s)"
            + (f"; left out: {self.skipped}" if self.skipped else "")
        )


def assign_subsets(scores: Sequence[float], n_subsets: int, partition: str = "rank") -> tuple[np.ndarray, int]:
    """Subset index (0 = best) for ``scores`` sorted best first; returns (indices, m_eff).

    Tied scores share the subset of their first member; ``m_eff = min(n_subsets, #distinct)``.
    """
    s = np.asarray(scores, dtype=float)
    n = len(s)
    if n == 0:
        return np.zeros(0, dtype=int), 0
    if np.any(np.diff(s) > 0):
        raise ValueError("scores must be sorted best (highest) first")
    m = min(n_subsets, len(np.unique(s)))
    if m <= 1:
        return np.zeros(n, dtype=int), 1
    if partition == "score":
        hi, lo = s[0], s[-1]
        idx = np.minimum(m - 1, np.floor((hi - s) / (hi - lo) * m)).astype(int)
    else:
        first_rank = np.empty(n, dtype=int)
        for i in range(n):
            first_rank[i] = i if i == 0 or s[i] != s[i - 1] else first_rank[i - 1]
        idx = (first_rank * m) // n
    return idx.astype(int), m


def build_pool(records: Iterable[Any], config: PairConfig | None = None, *, use_failed: bool | None = None) -> Pool:
    """Rank the records of one run/task (see the module docstring for what is kept).

    ``records``: :class:`~aad_kit.db.AlgorithmRecord` objects, mappings with the same keys, or
    the DataFrame of :meth:`~aad_kit.db.AlgorithmDB.to_dataframe`. ``use_failed`` overrides
    ``config.failed_as_rejected`` (``"auto"`` keeps the failed answers in the pool).
    """
    config = config or PairConfig()
    recs = _as_records(records)
    skipped: dict[str, int] = {}

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    tasks = {str(_get(r, "task")) for r in recs}
    if len(tasks) > 1:
        raise PreferenceDataError(
            f"records of several tasks ({sorted(tasks)}): pairs share one prompt per task; "
            "pass the records of one run (AlgorithmDB.records(run_id))"
        )
    want_failed = config.failed_as_rejected if use_failed is None else use_failed
    valid: list[Candidate] = []
    failed: list[Candidate] = []
    seen_valid: set[str] = set()
    seen_failed: set[str] = set()
    for rec in sorted(recs, key=lambda r: int(_get(r, "id"))):
        if _is_dup(rec):
            skip("duplicate")
            continue
        c = _candidate(rec)
        if c.operator == "seed" and not config.include_seeds:
            skip("seed (include_seeds=False)")
            continue
        if c.status == "ok":
            if c.score is None or not c.code:
                skip("ok without a finite score or code")
                continue
            h = _get(rec, "code_hash") or _code_hash(c.code)
            if h in seen_valid:
                skip("same code as an older valid algorithm")
                continue
            seen_valid.add(h)
            valid.append(c)
        else:
            if not want_failed:
                skip("failed (failed_as_rejected off)")
                continue
            if c.status in NOT_THE_ANSWERS_FAULT or c.operator == "seed":
                skip(f"failed but not a model answer ({c.status}/{c.operator})")
                continue
            if not c.answer:
                skip("failed with an empty answer")
                continue
            key = _get(rec, "code_hash") or ("raw:" + _code_hash(c.answer))
            if key in seen_failed:
                skip("failed answer repeated")
                continue
            seen_failed.add(key)
            failed.append(c)
    valid.sort(key=lambda c: (-c.score, c.id))  # type: ignore[operator]
    subset, m_eff = assign_subsets([c.score for c in valid], config.n_subsets, config.partition)
    first = valid[0] if valid else (failed[0] if failed else None)
    return Pool(
        valid=valid, failed=failed, subset=subset, n_subsets=m_eff,
        task=first.task if first else (next(iter(tasks)) if tasks else None),
        setting=first.setting if first else None, run_id=first.run_id if first else None,
        config=config, skipped=skipped,
    )  # fmt: skip


# ---------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class Pair:
    """One preference pair: ``chosen`` (y+) is preferred over ``rejected`` (y-)."""

    chosen: Candidate
    rejected: Candidate
    chosen_rank: int  # 0 = best valid algorithm
    rejected_rank: int | None  # None: a failed answer
    chosen_subset: int
    rejected_subset: int  # failed answers: Pool.failed_subset
    strategy: str

    @property
    def rejected_failed(self) -> bool:
        return not self.rejected.valid

    @property
    def score_gap(self) -> float:
        """``score(y+) - score(y-)``; NaN when ``y-`` is a failed answer."""
        if self.rejected.score is None or not self.rejected.valid:
            return float("nan")
        return float(self.chosen.score - self.rejected.score)  # type: ignore[operator]


@dataclass
class PairSet:
    """The pairs one strategy drew, with the pool they came from."""

    pairs: list[Pair]
    strategy: str
    config: PairConfig
    pool: Pool
    requested: int
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        extra = f", {len(self.warnings)} warning(s)" if self.warnings else ""
        return (f"<PairSet {self.strategy}: {len(self.pairs)} pair(s) of {self.requested} wanted "
                f"from {self.pool.describe()}{extra}>")

    def __iter__(self):  # noqa: ANN204
        return iter(self.pairs)

    @property
    def task(self) -> str | None:
        return self.pool.task

    def to_frame(self):  # noqa: ANN201 - pandas is imported lazily
        """One row per pair: ids, scores, ranks, subsets, gap, statuses, ideas."""
        import pandas as pd

        rows = [
            {
                "chosen_id": p.chosen.id, "rejected_id": p.rejected.id,
                "chosen_score": p.chosen.score, "rejected_score": p.rejected.score,
                "score_gap": p.score_gap, "chosen_rank": p.chosen_rank,
                "rejected_rank": p.rejected_rank, "chosen_subset": p.chosen_subset,
                "rejected_subset": p.rejected_subset, "rejected_status": p.rejected.status,
                "chosen_operator": p.chosen.operator, "rejected_operator": p.rejected.operator,
                "chosen_idea": p.chosen.idea, "rejected_idea": p.rejected.idea,
                "strategy": p.strategy,
            }
            for p in self.pairs
        ]  # fmt: skip
        return pd.DataFrame(rows, columns=[
            "chosen_id", "rejected_id", "chosen_score", "rejected_score", "score_gap",
            "chosen_rank", "rejected_rank", "chosen_subset", "rejected_subset", "rejected_status",
            "chosen_operator", "rejected_operator", "chosen_idea", "rejected_idea", "strategy",
        ])  # fmt: skip


def default_n_pairs(pool: Pool) -> int:
    """One pair per distinct candidate in the pool (valid + failed used as rejected)."""
    return len(pool.valid) + len(pool.failed)


def make_pair(pool: Pool, chosen: int | Candidate, rejected: int | Candidate, strategy: str,
              ranks: Mapping[int, int] | None = None) -> Pair:
    """A :class:`Pair` from two pool members (indices into ``pool.valid`` or candidates)."""
    ranks = ranks if ranks is not None else pool.rank_of()
    c = pool.valid[chosen] if isinstance(chosen, (int, np.integer)) else chosen
    r = pool.valid[rejected] if isinstance(rejected, (int, np.integer)) else rejected
    cr = ranks[c.id]
    rr = ranks.get(r.id) if r.valid else None
    return Pair(
        chosen=c, rejected=r, chosen_rank=cr, rejected_rank=rr,
        chosen_subset=int(pool.subset[cr]),
        rejected_subset=int(pool.subset[rr]) if rr is not None else pool.failed_subset,
        strategy=strategy,
    )  # fmt: skip


def _no_pairs_error(pool: Pool, strategy: str, extra: str = "") -> PreferenceDataError:
    hints = []
    if not pool.valid:
        hints.append("there is no valid algorithm to be the chosen answer (a search with "
                     "include_seed_heuristics=True stores the shipped heuristics, which can be)")
    elif pool.n_distinct_scores < 2 and not pool.failed:
        hints.append(
            "all valid algorithms have the same score, so none is better than another; "
            "set failed_as_rejected=True (or 'auto') to pair them with failed answers"
        )
    elif not pool.failed and pool.config.failed_as_rejected is False:
        hints.append("set failed_as_rejected=True (or 'auto') to also use failed answers as rejected")
    hint = ("; " + "; ".join(hints)) if hints else ""
    return PreferenceDataError(f"{strategy}: no preference pair can be formed from {pool.describe()}{hint}{extra}")


def finish(pool: Pool, pairs: list[Pair], strategy: str, requested: int, t0: float,
           notes: Sequence[str] = (), explicit: bool = True) -> PairSet:
    """Wrap drawn pairs: shortfall warning (only for an explicit ``n_pairs``), strict mode,
    the no-pair error."""
    msgs = list(notes)
    if not pairs:
        raise _no_pairs_error(pool, strategy)
    if len(pairs) < requested and explicit:
        msg = (f"{strategy}: {len(pairs)} of {requested} requested pairs could be formed "
               f"({pool.describe()})")
        if pool.config.strict:
            raise PreferenceDataError(msg + " and strict=True")
        msgs.append(msg)
    for m in msgs:
        warnings.warn(m, stacklevel=4)
    return PairSet(pairs=pairs, strategy=strategy, config=pool.config, pool=pool,
                   requested=requested, warnings=msgs, elapsed_s=time.perf_counter() - t0)


def run_with_failed_mode(records: Any, config: PairConfig, strategy: str, draw) -> PairSet:  # noqa: ANN001
    """Shared driver: build the pool, honour ``failed_as_rejected`` (incl. ``"auto"``), draw.

    ``draw(pool, n_target, use_failed) -> (pairs, notes)``. Without an explicit ``n_pairs``
    the target is :func:`default_n_pairs` and reaching fewer is not warned about.
    """
    t0 = time.perf_counter()
    mode = config.failed_as_rejected
    explicit = bool(config.n_pairs)
    pool = build_pool(records, config, use_failed=mode is not False)
    if mode == "auto":
        valid_only = replace(pool, failed=[])
        n_valid_target = config.n_pairs or default_n_pairs(valid_only)
        pairs, notes = draw(valid_only, n_valid_target, False) if valid_only.valid else ([], [])
        pool._sim = valid_only._sim  # share the similarity matrix if the draw computed it
        want = n_valid_target if explicit else config.auto_min_pairs
        if len(pairs) >= want or not pool.failed:
            return finish(valid_only, pairs, strategy, n_valid_target, t0, notes, explicit)
        n_target = config.n_pairs or default_n_pairs(pool)
        n_before = len(pairs)
        pairs, notes = draw(pool, n_target, True)
        notes = [*notes, f"{strategy}: failed_as_rejected='auto' used failed answers as rejected "
                 f"(the valid algorithms alone gave {n_before} pair(s), fewer than {want})"]
        return finish(pool, pairs, strategy, n_target, t0, notes, explicit)
    n_target = config.n_pairs or default_n_pairs(pool)
    pairs, notes = draw(pool, n_target, bool(mode))
    return finish(pool, pairs, strategy, n_target, t0, notes, explicit)


__all__ = [
    "FAILED_MODES",
    "NOT_THE_ANSWERS_FAULT",
    "PARTITIONS",
    "Candidate",
    "Pair",
    "PairConfig",
    "PairSet",
    "Pool",
    "PreferenceDataError",
    "assign_subsets",
    "build_pool",
    "default_n_pairs",
    "finish",
    "make_pair",
    "run_with_failed_mode",
]
