"""DAR sampling: its defining properties, edge cases, determinism, and a real search database.

Helpers here (synthetic records with controlled families and scores; a fake sampler that writes
structurally different families; a real database built through the sandbox) are reused by
tests/test_pair_strategies.py and tests/test_preference_dataset.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from aad_kit.db import AlgorithmDB
from aad_kit.llm.base import Completion, GenerationConfig
from aad_kit.preference import (
    PairConfig,
    PreferenceDataError,
    assign_subsets,
    build_pool,
    dar_diverse_pairs,
    sample_pairs,
)
from aad_kit.preference import diversity as dv

TASK, SETTING = "admissible_set", "n12_w7"

# Eight structurally different program families; {a}, {b}, {c} are per-variant constants.
FAMILIES = [
    "def priority(el, n, w):\n    s = sum((x * {a}) % {b2} for x in el)\n    return float(s + {c} * el[0] - el[-1])\n",
    "def priority(el, n, w):\n    twos = sum(1 for x in el if x == 2)\n    ones = sum(1 for x in el if x == 1)\n"
    "    return float({a} * twos - {b} * ones + {c} * el[0])\n",
    "import numpy as np\n\ndef priority(el, n, w):\n    arr = np.array(el, dtype=float)\n"
    "    weights = np.arange(1, n + 1) ** {a}\n    return float(np.dot(arr, weights) % ({b} + 7))\n",
    "def priority(el, n, w):\n    changes = 0\n    for i in range(1, n):\n        if el[i] != el[i - 1]:\n"
    "            changes += 1\n    return float({a} * changes - {b} * el.count(0) + {c})\n",
    "def priority(el, n, w):\n    total = 0.0\n    for i in range(0, n, 3):\n        block = el[i:i + 3]\n"
    "        total += ({a} * max(block) - min(block)) * (i // 3 + {b} + 1)\n    return total\n",
    "def priority(el, n, w):\n    h = 0\n    for x in el:\n        h = (h * {a2} + x) % (97 + {b})\n    return float(h)\n",
    "def priority(el, n, w):\n    s = sorted(el)\n    acc = sum(v * (k + 1) ** 0.5 for k, v in enumerate(s))\n"
    "    return float(acc * {a} - {b} * el[0])\n",
    "import math\n\ndef priority(el, n, w):\n    return float(sum(math.sin({a} * i + x) for i, x in enumerate(el)))\n",
]


def family_code(family: int, a: int = 1, b: int = 0, c: int = 0) -> str:
    return FAMILIES[family].format(a=a, b=b, c=c, a2=a + 2, b2=b + 2)


def rec(id: int, score: float | None, code: str | None = None, *, status: str = "ok",
        operator: str = "i1", idea: str | None = None, duplicate_of: int | None = None,
        raw_response: str | None = None, task: str = TASK) -> dict:
    """One database-like record (the keys of AlgorithmRecord that pairing reads)."""
    if code is None and status == "ok":
        code = family_code(id % len(FAMILIES), a=1 + id % 3, b=id % 5, c=id % 2)
    return {"id": id, "score": score, "code": code, "status": status, "operator": operator,
            "idea": idea if idea is not None else f"idea of {id}", "duplicate_of": duplicate_of,
            "raw_response": raw_response if raw_response is not None else f"answer {id}",
            "task": task, "setting": SETTING, "run_id": "r", "code_hash": None}


def family_records(n_families: int = 8, per_family: int = 6, seed: int = 0, n_failed: int = 0) -> list[dict]:
    """``n_families x per_family`` valid variants with random distinct scores, plus failures."""
    rng = np.random.default_rng(seed)
    out, k = [], 1
    for f in range(n_families):
        for v in range(per_family):
            code = FAMILIES[f % len(FAMILIES)].format(a=1 + v % 3, b=v // 3 + 10 * (f // 8), c=v % 2,
                                                       a2=3 + v, b2=2 + v)
            out.append(rec(k, float(rng.normal()), code, idea=f"family {f} variant {v}"))
            k += 1
    for _ in range(n_failed):
        out.append(rec(k, None, status="runtime_error",
                       code=f"def priority(el, n, w):\n    return 1 / 0 + {k}\n", raw_response=f"crash {k}"))
        k += 1
    return out


def check_dar_properties(ps, cfg: PairConfig | None = None) -> None:
    """Assert DAR's defining properties on a pair set."""
    cfg = cfg or ps.config
    pool = ps.pool
    ranks = pool.rank_of()
    gap = min(cfg.min_subset_gap, max(pool.n_subsets - 1, 1))
    seen = set()
    for p in ps.pairs:
        assert p.strategy == "dar_diverse"
        assert p.chosen.valid and p.chosen.id in ranks
        assert p.chosen_rank == ranks[p.chosen.id] and p.chosen_subset == pool.subset[p.chosen_rank]
        assert p.chosen_subset < cfg.chosen_subsets  # y+ from the better subsets
        if p.rejected.valid:
            assert p.chosen.score > p.rejected.score + cfg.min_score_gap  # strictly better
            assert p.rejected_subset - p.chosen_subset >= gap  # clearly worse: subset gap
            assert p.rejected_rank > p.chosen_rank
        else:
            assert p.rejected_subset == pool.failed_subset and p.rejected_rank is None
        assert (p.chosen.id, p.rejected.id) not in seen  # no repeated pair
        seen.add((p.chosen.id, p.rejected.id))
    chosen_uses = Counter(p.chosen.id for p in ps.pairs)
    rejected_uses = Counter(p.rejected.id for p in ps.pairs)
    assert max(chosen_uses.values()) <= cfg.max_chosen_reuse
    assert max(rejected_uses.values()) <= cfg.max_rejected_reuse
    # diversity: no distinct chosen algorithm has more than max_similar_chosen near-duplicates
    distinct = {p.chosen.id: p.chosen.code for p in ps.pairs}
    codes = list(distinct.values())
    sim = dv.similarity_matrix(codes, cfg.similarity_mode)
    near = (sim >= cfg.similarity_threshold).sum(axis=1) - 1
    assert near.max() <= cfg.max_similar_chosen


# ---------------------------------------------------------------------------- config / pool
def test_config_defaults_and_validation():
    c = PairConfig()
    assert (c.n_subsets, c.chosen_subsets, c.min_subset_gap) == (4, 2, 2)
    assert (c.max_chosen_reuse, c.max_rejected_reuse, c.similarity_threshold, c.max_similar_chosen) == (2, 2, 0.9, 0)
    assert c.failed_as_rejected is False and c.partition == "rank"
    assert PairConfig.from_dict(c.to_dict()) == c and c.with_(seed=3).seed == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.seed = 1  # type: ignore[misc]
    for bad in (dict(n_subsets=1), dict(chosen_subsets=4), dict(chosen_subsets=0),
                dict(min_subset_gap=0), dict(min_subset_gap=4), dict(partition="x"),
                dict(max_chosen_reuse=0), dict(similarity_threshold=0.0), dict(similarity_mode="x"),
                dict(failed_as_rejected="sometimes"), dict(n_pairs=-1), dict(min_gap=-1.0),
                dict(extreme_fraction=0.7), dict(max_similar_chosen=-1), dict(min_score_gap=-0.1)):
        with pytest.raises(ValueError):
            PairConfig(**bad)


def test_assign_subsets_equal_count_and_ties():
    idx, m = assign_subsets(list(range(12, 0, -1)), 4)
    assert m == 4 and idx.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    # a tie group takes the subset of its first member: equal scores never straddle a boundary
    idx, m = assign_subsets([9, 8, 7, 7, 7, 7, 3, 2], 4)
    assert idx.tolist() == [0, 0, 1, 1, 1, 1, 3, 3]
    s = [9, 8, 7, 7, 7, 7, 3, 2]
    for i, j in itertools.combinations(range(len(s)), 2):
        if idx[i] < idx[j]:
            assert s[i] > s[j]
    # fewer distinct scores than subsets: the number of subsets is clipped
    assert assign_subsets([5, 5, 1], 4)[1] == 2
    assert assign_subsets([5, 5, 5], 4) [1] == 1
    assert assign_subsets([], 4)[1] == 0
    # equal-width score bins
    idx, m = assign_subsets([10, 9.9, 5, 0.1, 0], 4, "score")
    assert idx.tolist() == [0, 0, 2, 3, 3]
    with pytest.raises(ValueError):
        assign_subsets([1, 2], 2)


def test_pool_skips_duplicates_and_sorts_failed():
    recs = [rec(1, 3.0), rec(2, 5.0), rec(3, 5.0, duplicate_of=2),
            rec(4, 1.0, code=family_code(0, a=1, b=0, c=0) + "\n# same code, other comment\n"),
            rec(5, 2.0, code=family_code(0, a=1, b=0, c=0)),  # same normalised code as 4? no: 4 is older
            rec(6, None, status="syntax_error", code="def priority(:"),
            rec(7, None, status="sandbox_error", code=family_code(1)),
            rec(8, 7.0, operator="seed"), rec(9, None, status="timeout", operator="seed", code=family_code(2)),
            rec(10, None, status="missing_function", code=None, raw_response="no code here"),
            rec(11, None, status="missing_function", code=None, raw_response="no code here"),
            rec(12, None, status="missing_function", code=None, raw_response="")]
    pool = build_pool(recs)
    assert [c.id for c in pool.valid] == [8, 2, 1, 4]  # best first; 3 dup; 5 same code as 4
    assert pool.failed == [] and pool.skipped["duplicate"] == 1
    assert pool.skipped["same code as an older valid algorithm"] == 1
    pool = build_pool(recs, PairConfig(failed_as_rejected=True, include_seeds=False))
    assert [c.id for c in pool.valid] == [2, 1, 4]
    # sandbox errors and failed seeds are not model answers; repeated/empty answers skipped
    assert [c.id for c in pool.failed] == [6, 10]
    assert pool.failed[1].answer == "no code here"
    with pytest.raises(PreferenceDataError, match="several tasks"):
        build_pool([rec(1, 1.0), rec(2, 2.0, task="tsp_construct")])


# ---------------------------------------------------------------------------- DAR properties
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dar_defining_properties(seed):
    recs = family_records(n_families=10, per_family=6, seed=seed)
    cfg = PairConfig(seed=seed)
    ps = dar_diverse_pairs(recs, cfg)
    assert len(ps) > 0 and ps.pool.n_subsets == 4
    check_dar_properties(ps)
    # the default is strict packing: no two distinct chosen answers are near-duplicates, so
    # the chosen algorithms come from as many families as there are distinct chosen ones
    distinct = {p.chosen.id: p.chosen for p in ps.pairs}
    fams = {c.idea.split(" variant")[0] for c in distinct.values()}
    assert len(fams) == len(distinct)
    # every one of the better subsets supplies y+ (uniform over subsets, not over algorithms)
    assert {p.chosen_subset for p in ps.pairs} == {0, 1}


def test_dar_caps_bound_the_number_of_pairs_and_shortfall_is_reported():
    recs = family_records(n_families=10, per_family=6, seed=0)
    ps = dar_diverse_pairs(recs)
    # y+ comes from the better half, one per family at most, each used at most twice
    top_families = {c.idea.split(" variant")[0] for c in ps.pool.valid if ps.pool.subset[ps.pool.rank_of()[c.id]] < 2}
    assert len(ps) <= 2 * len(top_families)
    assert not ps.warnings  # the default n_pairs is a ceiling, not a promise
    with pytest.warns(UserWarning, match="of 500 requested pairs"):
        big = dar_diverse_pairs(recs, PairConfig(n_pairs=500))
    assert len(big) == len(ps) and big.warnings
    with pytest.raises(PreferenceDataError, match="strict"):
        dar_diverse_pairs(recs, PairConfig(n_pairs=500, strict=True))
    small = dar_diverse_pairs(recs, PairConfig(n_pairs=5))
    assert len(small) == 5 and not small.warnings


def test_dar_similarity_allowance_and_reuse_caps():
    recs = family_records(n_families=4, per_family=10, seed=3)
    strict = dar_diverse_pairs(recs, PairConfig())
    loose = dar_diverse_pairs(recs, PairConfig(max_similar_chosen=2, max_chosen_reuse=1, max_rejected_reuse=1))
    check_dar_properties(strict)
    check_dar_properties(loose)
    assert len({p.chosen.id for p in loose.pairs}) > len({p.chosen.id for p in strict.pairs})
    assert max(Counter(p.chosen.id for p in loose.pairs).values()) == 1
    # similarity "shape" mode: parameter variants are exact copies (similarity 1)
    shape = dar_diverse_pairs(recs, PairConfig(similarity_mode="shape", similarity_threshold=0.99))
    check_dar_properties(shape)
    # the threshold at 1.0 only forbids identical token sequences: more distinct chosen
    anything = dar_diverse_pairs(recs, PairConfig(similarity_threshold=1.0))
    assert len({p.chosen.id for p in anything.pairs}) >= len({p.chosen.id for p in strict.pairs})


def test_dar_min_score_gap_and_score_partition():
    recs = family_records(n_families=10, per_family=6, seed=4)
    cfg = PairConfig(min_score_gap=1.0, partition="score", n_subsets=5, chosen_subsets=3, min_subset_gap=1)
    ps = dar_diverse_pairs(recs, cfg)
    check_dar_properties(ps, cfg)
    assert all(p.score_gap > 1.0 for p in ps.pairs)


def test_dar_is_deterministic():
    recs = family_records(n_families=10, per_family=6, seed=5)
    key = lambda ps: [(p.chosen.id, p.rejected.id) for p in ps.pairs]  # noqa: E731
    a, b = dar_diverse_pairs(recs, PairConfig(seed=11)), dar_diverse_pairs(list(reversed(recs)), PairConfig(seed=11))
    assert key(a) == key(b)  # same seed, any input order: same pairs
    assert key(a) != key(dar_diverse_pairs(recs, PairConfig(seed=12)))


# ---------------------------------------------------------------------------- edge cases
def test_all_scores_equal():
    recs = [rec(i, 1.0) for i in range(1, 7)]
    with pytest.raises(PreferenceDataError, match="same score"):
        dar_diverse_pairs(recs)
    recs += [rec(10 + i, None, status="runtime_error", code=f"def priority(el, n, w):\n    return 1/0 + {i}\n")
             for i in range(3)]
    ps = dar_diverse_pairs(recs, PairConfig(failed_as_rejected=True))
    assert len(ps) > 0 and all(p.rejected_failed for p in ps.pairs)
    check_dar_properties(ps)


def test_one_and_zero_valid_algorithms():
    with pytest.raises(PreferenceDataError, match="1 valid distinct"):
        dar_diverse_pairs([rec(1, 2.0)])
    failed = [rec(2, None, status="syntax_error", code="def priority(:"),
              rec(3, None, status="missing_function", code=None, raw_response="garbage")]
    ps = dar_diverse_pairs([rec(1, 2.0), *failed], PairConfig(failed_as_rejected=True))
    assert sorted(p.rejected.id for p in ps.pairs) == [2, 3] and {p.chosen.id for p in ps.pairs} == {1}
    with pytest.raises(PreferenceDataError, match="no valid algorithm"):
        dar_diverse_pairs(failed, PairConfig(failed_as_rejected=True))
    with pytest.raises(PreferenceDataError):
        dar_diverse_pairs([])


def test_duplicates_never_paired():
    recs = family_records(n_families=6, per_family=4, seed=6)
    dups = [rec(100 + r["id"], r["score"], r["code"], duplicate_of=r["id"]) for r in recs]
    ps = dar_diverse_pairs(recs + dups, PairConfig(n_pairs=10))
    ids = {p.chosen.id for p in ps.pairs} | {p.rejected.id for p in ps.pairs}
    assert not ids & {d["id"] for d in dups}


def test_failed_as_rejected_modes():
    recs = family_records(n_families=10, per_family=6, seed=7, n_failed=12)
    failed_ids = {r["id"] for r in recs if r["status"] != "ok"}
    off = dar_diverse_pairs(recs)
    assert not any(p.rejected.id in failed_ids for p in off.pairs)
    on = dar_diverse_pairs(recs, PairConfig(failed_as_rejected=True))
    check_dar_properties(on)
    used = [p for p in on.pairs if p.rejected_failed]
    assert used and all(p.rejected.id in failed_ids for p in used)
    assert not any(p.chosen.id in failed_ids for p in on.pairs)  # failed answers are never y+
    # "auto": enough valid pairs -> failed answers unused; too few -> used, and said so
    auto = dar_diverse_pairs(recs, PairConfig(failed_as_rejected="auto"))
    assert not any(p.rejected_failed for p in auto.pairs)
    few = [r for r in recs if r["status"] != "ok" or r["id"] <= 3]
    with pytest.warns(UserWarning, match="auto"):
        auto_few = dar_diverse_pairs(few, PairConfig(failed_as_rejected="auto"))
    assert any(p.rejected_failed for p in auto_few.pairs)


TERMS = [
    "sum(el)", "el.count(2)", "el.count(0)", "max(el) - min(el)", "sum(x * x for x in el)",
    "len(set(el))", "el[0] - el[-1]", "sum(i * x for i, x in enumerate(el))", "sorted(el)[n // 2]",
    "sum(1 for i in range(1, n) if el[i] != el[i - 1])", "math.sqrt(sum(el) + 1)", "(w - sum(el)) ** 2",
]


def composed_records(n: int, seed: int = 0, n_failed: int = 0) -> list[dict]:
    """``n`` programs, each a distinct combination of three of TERMS (distinct structures)."""
    rng = np.random.default_rng(seed)
    combos = list(itertools.permutations(range(len(TERMS)), 3))
    pick = rng.choice(len(combos), size=n, replace=False)
    out = []
    for k, ci in enumerate(pick, 1):
        t = [TERMS[i] for i in combos[ci]]
        code = ("import math\n\ndef priority(el, n, w):\n"
                f"    a = {t[0]}\n    b = {t[1]}\n    c = {t[2]}\n    return float(a - 0.5 * b + 0.25 * c)\n")
        out.append(rec(k, float(rng.normal()), code, idea=f"combo {ci}"))
    for k in range(n + 1, n + 1 + n_failed):
        out.append(rec(k, None, status="runtime_error", code=f"def priority(el, n, w):\n    return 1 / 0 + {k}\n"))
    return out


def test_dar_speed_on_a_thousand_algorithms():
    recs = composed_records(1000, seed=8, n_failed=200)
    t0 = time.perf_counter()
    ps = dar_diverse_pairs(recs, PairConfig(failed_as_rejected=True))
    elapsed = time.perf_counter() - t0
    check_dar_properties(ps)
    assert len(ps) >= 150 and elapsed < 30, (len(ps), elapsed)


# ---------------------------------------------------------------------------- a real database
def rich_answer(h: int) -> str:
    """A deterministic answer: 60% valid programs from FAMILIES, 40% assorted failures."""
    kind = h % 10
    a, b, c = 1 + (h >> 8) % 3, (h >> 12) % 3, (h >> 16) % 3 - 1
    if kind == 0:
        return "I am not sure how to write this function."
    if kind == 1:
        return "Idea: broken.\n```python\ndef priority(el, n, w):\n    return (1 +\n```"
    if kind == 2:
        return f"Idea: divide.\n```python\ndef priority(el, n, w):\n    return el[0] / (el[1] - el[1]) * {a}\n```"
    if kind == 3:
        return "Idea: not a number.\n```python\ndef priority(el, n, w):\n    return float('nan')\n```"
    fam = (h >> 20) % len(FAMILIES)
    return f"Idea: family {fam} with a={a}, b={b}, c={c}.\n```python\n{family_code(fam, a, b, c)}```"


_DEFAULT_GEN = GenerationConfig()


class RichFakeSampler:
    """Deterministic fake model writing structurally different families (and failures)."""

    model_id = "fake/families-1"

    def sample(self, prompts: Sequence[str], n: int = 1, config: GenerationConfig = _DEFAULT_GEN) -> list:
        out = []
        for i, p in enumerate(prompts):
            row = []
            for j in range(n):
                h = int.from_bytes(hashlib.sha256(f"{p}|{config.seed}|{i}|{j}".encode()).digest()[:8], "big")
                row.append(Completion(text=rich_answer(h), completion_tokens=50))
            out.append(row)
        return out

    def info(self) -> dict:
        return {"backend": "fake", "model_id": self.model_id, "sha256": "0" * 64}


def build_search_db(path: str | Path, budget: int = 48, seed: int = 3, sandbox=None) -> str:  # noqa: ANN001
    """Run a real EoH search (fake model, real sandbox) into ``path``; return the run id."""
    from aad_kit.sandbox import Sandbox, SandboxConfig
    from aad_kit.search import SearchConfig, run_search

    config = SearchConfig(task=TASK, setting=SETTING, budget=budget, population_size=6, init_samples=8,
                          batch_size=8, seed=seed)
    run_id = f"search-{TASK}-{SETTING}-seed{seed}"
    with AlgorithmDB(path) as db:
        if sandbox is None:
            with Sandbox(SandboxConfig(workers=2), cache=False) as sb:
                run_search(config, RichFakeSampler(), db, sb, run_id=run_id, progress=False)
        else:
            run_search(config, RichFakeSampler(), db, sandbox, run_id=run_id, progress=False)
    return run_id


@pytest.fixture(scope="session")
def search_db(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("dar_db") / "algorithms.sqlite"
    return path, build_search_db(path)


def test_dar_on_a_real_search_database(search_db):
    path, run_id = search_db
    with AlgorithmDB(path) as db:
        recs = db.records(run_id)
    assert sum(r.ok for r in recs) >= 10 and any(r.duplicate_of for r in recs)
    assert any(not r.ok for r in recs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps = sample_pairs(recs, "dar_diverse", PairConfig(seed=0))
        with_failed = sample_pairs(recs, "dar_diverse", PairConfig(seed=0, failed_as_rejected=True))
    check_dar_properties(ps)
    check_dar_properties(with_failed)
    dup_ids = {r.id for r in recs if r.duplicate_of}
    assert not dup_ids & ({p.chosen.id for p in ps.pairs} | {p.rejected.id for p in ps.pairs})
    assert any(p.rejected_failed for p in with_failed.pairs)
