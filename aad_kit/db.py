"""The algorithm database: every generated program, its provenance and its score.

One sqlite file (WAL mode) per run directory, or shared by several runs: the search writes
here, and DAR sampling, DPO data building and every report read from here. All SQL lives in
:class:`AlgorithmDB`.

Tables
------
``runs``
    one row per search run: ``run_id``, ``task``, ``setting``, ``config`` (JSON, what the run
    was asked to do, compared on resume), ``manifest`` (JSON: code/evaluator/package versions
    and the model's info), ``status`` (``running`` / ``finished``), ``resumes`` (JSON list of
    the manifests of later sessions that resumed the run), ``created_at``, ``updated_at``.
``algorithms``
    one row per sample (valid or not) and per seeded heuristic: operator, parents, generation,
    ``sample_index`` (the position in the run's sampling sequence, unique per run and the
    resume key; seeded heuristics use -1, -2, ...), the prompt, the raw model answer, the
    extracted code and idea, and the evaluation (status, score, metric, error, time). A
    duplicate (same normalised code as an earlier row of the run) points at the original
    through ``duplicate_of`` and copies its evaluation.
``meta``
    ``schema_version``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aad_kit.code import code_hash as _code_hash
from aad_kit.manifest import now_iso

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    task TEXT,
    setting TEXT,
    config TEXT NOT NULL,
    manifest TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'running',
    resumes TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS algorithms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT,
    task TEXT NOT NULL,
    setting TEXT,
    operator TEXT NOT NULL,
    parent_ids TEXT NOT NULL DEFAULT '[]',
    generation INTEGER NOT NULL DEFAULT 0,
    sample_index INTEGER,
    model_id TEXT,
    prompt TEXT,
    raw_response TEXT,
    code TEXT,
    code_hash TEXT,
    idea TEXT,
    score REAL,
    metric REAL,
    status TEXT NOT NULL,
    error TEXT,
    eval_time_s REAL,
    duplicate_of INTEGER,
    notes TEXT NOT NULL DEFAULT '[]',
    finish_reason TEXT,
    completion_tokens INTEGER,
    created_at TEXT NOT NULL,
    UNIQUE (run_id, sample_index)
);
CREATE INDEX IF NOT EXISTS algorithms_run_hash ON algorithms (run_id, code_hash);
CREATE INDEX IF NOT EXISTS algorithms_run_score ON algorithms (run_id, score);
"""

_COLUMNS = (
    "id", "run_id", "task", "setting", "operator", "parent_ids", "generation", "sample_index",
    "model_id", "prompt", "raw_response", "code", "code_hash", "idea", "score", "metric",
    "status", "error", "eval_time_s", "duplicate_of", "notes", "finish_reason",
    "completion_tokens", "created_at",
)  # fmt: skip
_JSON_COLUMNS = ("parent_ids", "notes")


class RunConfigMismatch(ValueError):
    """A run is resumed with a configuration different from the one it was started with."""


@dataclass(frozen=True)
class AlgorithmRecord:
    """One row of ``algorithms``."""

    id: int
    run_id: str | None
    task: str
    setting: str | None
    operator: str
    parent_ids: list[int]
    generation: int
    sample_index: int | None
    model_id: str | None
    prompt: str | None
    raw_response: str | None
    code: str | None
    code_hash: str | None
    idea: str | None
    score: float | None
    metric: float | None
    status: str
    error: str | None
    eval_time_s: float | None
    duplicate_of: int | None
    notes: list[str]
    finish_reason: str | None
    completion_tokens: int | None
    created_at: str

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.score is not None

    @property
    def is_duplicate(self) -> bool:
        return self.duplicate_of is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LineageNode:
    """One ancestor in :meth:`AlgorithmDB.lineage`."""

    id: int
    parent_ids: list[int]
    generation: int
    operator: str
    score: float | None
    status: str
    idea: str | None
    depth: int  # 0 for the queried algorithm, 1 for its parents, ...


@dataclass
class RunInfo:
    """One row of ``runs``."""

    run_id: str
    task: str | None
    setting: str | None
    config: dict[str, Any]
    manifest: dict[str, Any]
    status: str
    resumes: list[dict[str, Any]] = field(default_factory=list)
    created_at: str = ""
    updated_at: str = ""

    @property
    def sessions(self) -> list[dict[str, Any]]:
        """The manifest of every session that ran it: the first, then each resume."""
        return [self.manifest, *self.resumes]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class AlgorithmDB:
    """Access layer for one database file (``":memory:"`` for a throw-away one).

    Thread-safe within a process (one connection behind a lock); several processes may share
    the file (WAL mode, busy timeout). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.path, timeout=timeout_s, check_same_thread=False, isolation_level=None
        )
        self._conn.row_factory = sqlite3.Row
        with self._lock:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            self._init_schema()

    @classmethod
    def open(cls, path: str | Path) -> AlgorithmDB:
        """Open ``path``, creating the file and its schema if needed."""
        return cls(path)

    # -- plumbing ---------------------------------------------------------------------------
    def _init_schema(self) -> None:
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row["value"]) != SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has database schema version {row['value']}, this aad_kit "
                    f"reads version {SCHEMA_VERSION}; use a matching aad_kit or a new file"
                )

    class _Tx:
        def __init__(self, db: AlgorithmDB) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db._lock.acquire()
            self.db._conn.execute("BEGIN IMMEDIATE")
            return self.db._conn

        def __exit__(self, exc_type: object, *rest: object) -> None:
            try:
                self.db._conn.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.db._lock.release()

    def _transaction(self) -> AlgorithmDB._Tx:
        return AlgorithmDB._Tx(self)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    @property
    def schema_version(self) -> int:
        return int(self._query("SELECT value FROM meta WHERE key = 'schema_version'")[0][0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> AlgorithmDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AlgorithmDB {self.path}>"

    # -- runs -------------------------------------------------------------------------------
    def start_or_resume_run(
        self, run_id: str, config: dict[str, Any], manifest: dict[str, Any]
    ) -> bool:
        """Register run ``run_id``; return True if it already existed (a resume).

        ``config`` must be JSON-serialisable; its ``task`` and ``setting`` keys (if any) are
        copied into their own columns. Resuming with a different config raises
        :class:`RunConfigMismatch` naming the differing keys. The original manifest is kept;
        the resuming session's manifest is appended to ``resumes``.
        """
        config_json = _canonical(config)
        now = now_iso()
        with self._transaction() as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                self._insert_run(conn, run_id, config, manifest, "running", (), now, now)
                return False
            old = json.loads(row["config"])
            if _canonical(old) != config_json:
                keys = sorted(
                    k for k in set(old) | set(config) if _canonical(old.get(k)) != _canonical(config.get(k))
                )
                diffs = "; ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in keys)
                raise RunConfigMismatch(
                    f"run {run_id!r} in {self.path} was started with a different configuration "
                    f"({diffs}); resume it with the original configuration or use a new run_id"
                )
            resumes = json.loads(row["resumes"])
            resumes.append(manifest)
            conn.execute(
                "UPDATE runs SET resumes = ?, updated_at = ? WHERE run_id = ?",
                (_canonical(resumes), now, run_id),
            )
            return True

    def restore_run(
        self, run_id: str, config: dict[str, Any], manifest: dict[str, Any], *,
        resumes: Sequence[dict[str, Any]] = (), status: str = "running",
        created_at: str | None = None, updated_at: str | None = None,
    ) -> bool:
        """Insert a run copied from an export with its own history (the sessions that made it,
        when, its status), so resuming it on a fresh machine does not make it look new.
        Returns False (and changes nothing) if ``run_id`` is already here."""
        created = created_at or now_iso()
        with self._transaction() as conn:
            return self._insert_run(conn, run_id, config, manifest, status, resumes, created,
                                    updated_at or created)

    @staticmethod
    def _insert_run(conn: sqlite3.Connection, run_id: str, config: dict[str, Any],
                    manifest: dict[str, Any], status: str, resumes: Sequence[dict[str, Any]],
                    created_at: str, updated_at: str) -> bool:
        """The one INSERT of a run row (new or restored); False if ``run_id`` exists."""
        cur = conn.execute(
            "INSERT INTO runs (run_id, task, setting, config, manifest, status, resumes, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id) DO NOTHING",
            (run_id, config.get("task"), config.get("setting"), _canonical(config),
             _canonical(manifest), status, _canonical(list(resumes)), created_at, updated_at),
        )  # fmt: skip
        return cur.rowcount == 1

    def get_run(self, run_id: str) -> RunInfo | None:
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        r = rows[0]
        return RunInfo(
            run_id=r["run_id"], task=r["task"], setting=r["setting"],
            config=json.loads(r["config"]), manifest=json.loads(r["manifest"]),
            status=r["status"], resumes=json.loads(r["resumes"]),
            created_at=r["created_at"], updated_at=r["updated_at"],
        )  # fmt: skip

    def runs(self) -> list[RunInfo]:
        ids = [r[0] for r in self._query("SELECT run_id FROM runs ORDER BY created_at, run_id")]
        return [info for info in map(self.get_run, ids) if info is not None]

    def mark_finished(self, run_id: str) -> None:
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE runs SET status = 'finished', updated_at = ? WHERE run_id = ?",
                (now_iso(), run_id),
            )
            if cur.rowcount == 0:
                raise KeyError(f"no run {run_id!r} in {self.path}")

    # -- algorithms -------------------------------------------------------------------------
    def add_algorithm(
        self,
        *,
        run_id: str | None,
        task: str,
        setting: str | None,
        operator: str,
        status: str,
        sample_index: int | None = None,
        parent_ids: Iterable[int] = (),
        generation: int = 0,
        model_id: str | None = None,
        prompt: str | None = None,
        raw_response: str | None = None,
        code: str | None = None,
        code_hash: str | None = None,
        idea: str | None = None,
        score: float | None = None,
        metric: float | None = None,
        error: str | None = None,
        eval_time_s: float | None = None,
        duplicate_of: int | None = None,
        notes: Iterable[str] = (),
        finish_reason: str | None = None,
        completion_tokens: int | None = None,
        created_at: str | None = None,
    ) -> int:
        """Insert one algorithm and return its id.

        Idempotent on ``(run_id, sample_index)``: adding a sample that is already stored
        returns the existing id and changes nothing. ``code_hash`` defaults to
        :func:`aad_kit.code.code_hash` of ``code``. ``status`` may be a
        :class:`~aad_kit.result.Status` or its string value. ``created_at`` (default: now)
        is given when a record is copied from an export, so it keeps when it was sampled.
        """
        status = getattr(status, "value", status)
        if code is not None and code_hash is None:
            code_hash = _code_hash(code)
        values = {
            "run_id": run_id, "task": task, "setting": setting, "operator": operator,
            "parent_ids": json.dumps([int(p) for p in parent_ids]), "generation": int(generation),
            "sample_index": None if sample_index is None else int(sample_index),
            "model_id": model_id, "prompt": prompt, "raw_response": raw_response, "code": code,
            "code_hash": code_hash, "idea": idea, "score": _finite_or_none(score),
            "metric": _finite_or_none(metric), "status": str(status), "error": error,
            "eval_time_s": eval_time_s, "duplicate_of": duplicate_of,
            "notes": json.dumps(list(notes)), "finish_reason": finish_reason,
            "completion_tokens": completion_tokens, "created_at": created_at or now_iso(),
        }  # fmt: skip
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._transaction() as conn:
            cur = conn.execute(
                f"INSERT INTO algorithms ({names}) VALUES ({marks}) "
                "ON CONFLICT (run_id, sample_index) DO NOTHING",
                tuple(values.values()),
            )
            if cur.rowcount == 1:
                return int(cur.lastrowid)  # type: ignore[arg-type]
            row = conn.execute(
                "SELECT id FROM algorithms WHERE run_id IS ? AND sample_index = ?",
                (run_id, sample_index),
            ).fetchone()
            return int(row[0])

    @staticmethod
    def _record(row: sqlite3.Row) -> AlgorithmRecord:
        d = {k: row[k] for k in _COLUMNS}
        for k in _JSON_COLUMNS:
            d[k] = json.loads(d[k]) if d[k] else []
        return AlgorithmRecord(**d)

    def get(self, algorithm_id: int) -> AlgorithmRecord:
        rows = self._query("SELECT * FROM algorithms WHERE id = ?", (int(algorithm_id),))
        if not rows:
            raise KeyError(f"no algorithm with id {algorithm_id} in {self.path}")
        return self._record(rows[0])

    def by_sample_index(self, run_id: str, sample_index: int) -> AlgorithmRecord | None:
        rows = self._query(
            "SELECT * FROM algorithms WHERE run_id = ? AND sample_index = ?",
            (run_id, int(sample_index)),
        )
        return self._record(rows[0]) if rows else None

    def by_hash(self, run_id: str | None, code_hash: str) -> AlgorithmRecord | None:
        """The first (original, not itself a duplicate) algorithm of the run with this hash."""
        rows = self._query(
            "SELECT * FROM algorithms WHERE run_id IS ? AND code_hash = ? "
            "ORDER BY duplicate_of IS NOT NULL, id LIMIT 1",
            (run_id, code_hash),
        )
        return self._record(rows[0]) if rows else None

    def records(
        self, run_id: str | None = None, *, status: str | None = None, samples_only: bool = False
    ) -> list[AlgorithmRecord]:
        """Algorithms (of one run, or all), in sampling order (seeded heuristics first).

        ``samples_only`` drops seeded heuristics and ad-hoc rows (keeps ``sample_index >= 0``).
        """
        where, params = self._where(run_id, status, samples_only)
        rows = self._query(
            f"SELECT * FROM algorithms {where} "
            "ORDER BY run_id, sample_index IS NULL, sample_index, id",
            params,
        )
        return [self._record(r) for r in rows]

    def __iter__(self) -> Iterator[AlgorithmRecord]:
        return iter(self.records())

    def __len__(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM algorithms")[0][0])

    @staticmethod
    def _where(
        run_id: str | None, status: str | None = None, samples_only: bool = False
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        if status is not None:
            clauses.append("status = ?")
            params.append(getattr(status, "value", status))
        if samples_only:
            clauses.append("sample_index >= 0")
        return ("WHERE " + " AND ".join(clauses) if clauses else ""), params

    def count(self, run_id: str | None = None, *, samples_only: bool = False) -> int:
        where, params = self._where(run_id, samples_only=samples_only)
        return int(self._query(f"SELECT COUNT(*) FROM algorithms {where}", params)[0][0])

    def sample_indices(self, run_id: str) -> list[int]:
        rows = self._query(
            "SELECT sample_index FROM algorithms WHERE run_id = ? AND sample_index IS NOT NULL "
            "ORDER BY sample_index",
            (run_id,),
        )
        return [int(r[0]) for r in rows]

    def best(self, run_id: str | None = None, k: int = 1) -> list[AlgorithmRecord]:
        """The ``k`` best valid, non-duplicate algorithms (ties: the older first)."""
        where, params = self._where(run_id, "ok")
        rows = self._query(
            f"SELECT * FROM algorithms {where} {'AND' if where else 'WHERE'} score IS NOT NULL "
            "AND duplicate_of IS NULL ORDER BY score DESC, sample_index, id LIMIT ?",
            [*params, int(k)],
        )
        return [self._record(r) for r in rows]

    def counts(self, run_id: str | None = None, by: str = "status") -> dict[str, int]:
        """Number of algorithms per value of column ``by`` (e.g. status, operator)."""
        if by not in _COLUMNS:
            raise ValueError(f"unknown column {by!r}")
        where, params = self._where(run_id)
        rows = self._query(
            f"SELECT {by}, COUNT(*) FROM algorithms {where} GROUP BY {by} ORDER BY {by}", params
        )
        return {str(r[0]): int(r[1]) for r in rows}

    # -- lineage ----------------------------------------------------------------------------
    def lineage(self, algorithm_id: int) -> list[LineageNode]:
        """The algorithm and all its ancestors (parents, their parents, ...).

        Sorted by generation then id; each node lists its ``parent_ids``, so the list is also
        the edge list of the ancestry graph. ``depth`` is the shortest distance to the
        queried algorithm.
        """
        depth: dict[int, int] = {int(algorithm_id): 0}
        nodes: dict[int, LineageNode] = {}
        frontier = [int(algorithm_id)]
        while frontier:
            next_frontier: list[int] = []
            for aid in frontier:
                if aid in nodes:
                    continue
                rec = self.get(aid)
                nodes[aid] = LineageNode(
                    id=rec.id, parent_ids=rec.parent_ids, generation=rec.generation,
                    operator=rec.operator, score=rec.score, status=rec.status, idea=rec.idea,
                    depth=depth[aid],
                )  # fmt: skip
                for p in rec.parent_ids:
                    if p not in depth:
                        depth[p] = depth[aid] + 1
                        next_frontier.append(p)
            frontier = next_frontier
        return sorted(nodes.values(), key=lambda n: (n.generation, n.id))

    # -- export -----------------------------------------------------------------------------
    def to_dataframe(self, run_id: str | None = None) -> pd.DataFrame:
        """All algorithms (of one run, or all) as a pandas DataFrame, in sampling order."""
        import pandas as pd

        recs = self.records(run_id)
        df = pd.DataFrame([r.to_dict() for r in recs], columns=list(_COLUMNS))
        for col in ("score", "metric", "eval_time_s"):
            df[col] = pd.to_numeric(df[col])
        return df

    def export_jsonl(self, path: str | Path, run_id: str | None = None) -> int:
        """Write one JSON object per algorithm to ``path``; return how many were written."""
        recs = self.records(run_id)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        return len(recs)


def best_valid_so_far(samples: pd.DataFrame) -> pd.Series:
    """The best valid score after each row of ``samples`` (a :meth:`AlgorithmDB.to_dataframe`
    frame in sampling order): NaN until the first valid row, then carried over invalid rows.
    pandas' ``cummax`` alone returns NaN at every invalid row, which blanked a run's final best
    whenever its last sample failed."""
    return samples["score"].where(samples["status"] == "ok").astype(float).cummax().ffill()


__all__ = [
    "SCHEMA_VERSION",
    "AlgorithmDB",
    "AlgorithmRecord",
    "LineageNode",
    "RunConfigMismatch",
    "RunInfo",
    "best_valid_so_far",
]
