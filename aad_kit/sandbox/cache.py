"""Result cache: in memory, optionally backed by a sqlite file that survives restarts.

Keys come from :func:`cache_key`: task reference, setting name, ``EVALUATOR_VERSION``, a
fingerprint of the sandbox limits that can change an outcome (timeout, memory cap, policy,
allow-list) and :func:`aad_kit.code.code_hash` (so comments, docstrings and formatting do not
matter). A result served from the cache comes back with ``cached=True``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from aad_kit import EVALUATOR_VERSION
from aad_kit.result import EvalResult


def limits_fingerprint(
    timeout_s: float, memory_mb: int, enforce_policy: bool, allowed_imports: frozenset[str]
) -> str:
    text = json.dumps(
        [round(float(timeout_s), 6), int(memory_mb), bool(enforce_policy), sorted(allowed_imports)]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def cache_key(task_ref: str, setting: str, code_hash: str, limits: str = "") -> str:
    return f"{task_ref}|{setting}|{EVALUATOR_VERSION}|{limits}|{code_hash}"


class ResultCache:
    """Thread-safe map from :func:`cache_key` to :class:`EvalResult`."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._memory: dict[str, EvalResult] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS results ("
                " key TEXT PRIMARY KEY, task TEXT, setting TEXT, evaluator_version TEXT,"
                " code_hash TEXT, status TEXT, result TEXT NOT NULL, created REAL)"
            )
            self._db.commit()

    def get(self, key: str) -> EvalResult | None:
        with self._lock:
            hit = self._memory.get(key)
            if hit is None and self._db is not None:
                row = self._db.execute("SELECT result FROM results WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    try:
                        hit = EvalResult.from_dict(json.loads(row[0]))
                    except (ValueError, TypeError, KeyError):
                        hit = None
                    if hit is not None:
                        self._memory[key] = hit
        return replace(hit, cached=True) if hit is not None else None

    @staticmethod
    def _row(key: str, result: EvalResult) -> tuple:
        """The sqlite row of one result: the one layout ``put`` and ``import_rows`` write."""
        return (
            key,
            result.task,
            result.setting,
            result.evaluator_version,
            result.code_hash,
            result.status.value,
            json.dumps(result.to_dict(), default=str),
            time.time(),
        )

    def put(self, key: str, result: EvalResult) -> None:
        result = replace(result, cached=False)
        with self._lock:
            self._memory[key] = result
            if self._db is not None:
                self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 self._row(key, result))
                self._db.commit()

    def export_rows(self, path: str | Path, keep: Callable[[EvalResult], bool] | None = None) -> int:
        """Write the cached results (those ``keep`` accepts) to a gzipped JSON-lines file that
        :meth:`import_rows` reads into another cache; returns the rows written. Why: results
        worth shipping with data (a teacher database's scores on other settings) cost minutes
        of sandbox time to recompute and are the same on every machine with the same keys."""
        with self._lock:
            if self._db is not None:
                items = [(k, EvalResult.from_dict(json.loads(r)))
                         for k, r in self._db.execute("SELECT key, result FROM results ORDER BY key")]
            else:
                items = sorted(self._memory.items())
        rows = [(k, r) for k, r in items if keep is None or keep(r)]
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=9) as f:
            for key, result in rows:
                f.write(json.dumps({"key": key, "result": replace(result, cached=False).to_dict()},
                                   default=str, sort_keys=True) + "\n")
        os.replace(tmp, path)
        return len(rows)

    def import_rows(self, path: str | Path) -> int:
        """Add the rows of an :meth:`export_rows` file whose key is not cached yet; returns how
        many were added. A row from another evaluator version or other sandbox limits has
        another key, so it is never served for this one's lookups."""
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        results = [(row["key"], replace(EvalResult.from_dict(row["result"]), cached=False))
                   for row in rows]
        with self._lock:
            if self._db is None:
                fresh = [(k, r) for k, r in results if k not in self._memory]
                self._memory.update(fresh)
                return len(fresh)
            # One transaction; rows already present are left as they are (INSERT OR IGNORE).
            before = self._db.total_changes
            with self._db:
                self._db.executemany("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                     [self._row(k, r) for k, r in results])
            return self._db.total_changes - before

    def __len__(self) -> int:
        with self._lock:
            if self._db is not None:
                return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
            return len(self._memory)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def clear(self) -> None:
        with self._lock:
            self._memory.clear()
            if self._db is not None:
                self._db.execute("DELETE FROM results")
                self._db.commit()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


__all__ = ["ResultCache", "cache_key", "limits_fingerprint"]
