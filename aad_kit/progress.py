"""Progress of long loops, as events the command line can show while a stage runs.

Why: a stage runs in a papermill kernel, so its progress bars live inside the notebook and
the terminal showed only papermill's cell counter: a working run looked like a hung one.
Long loops (the search, DPO training, the evaluation's sampling) call :func:`report`; when
the pipeline has set ``$AAD_KIT_PROGRESS_FILE`` each call appends one JSON line there, and
the CLI (:class:`Follower`) prints one updating line per loop with its rate and ETA.
Outside the pipeline :func:`report` does nothing.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

ENV = "AAD_KIT_PROGRESS_FILE"


def report(loop: str, done: int | None = None, total: int | None = None, **fields: Any) -> None:
    """One progress event of ``loop`` (e.g. "search", "dpo", "evaluation")."""
    path = os.environ.get(ENV)
    if not path:
        return
    event = {"t": time.time(), "loop": loop, "done": done, "total": total, **fields}
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event, default=str) + "\n")
    except OSError:  # progress is best effort; never fail a stage over it
        pass


def _fmt_duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.0f}min"
    return f"{s / 3600:.1f}h"


def format_event(e: dict[str, Any], first: dict[str, Any] | None) -> str:
    """``[loop] done/total extra-fields | rate, ETA`` for one event."""
    parts = [f"[{e.get('loop')}]"]
    done, total = e.get("done"), e.get("total")
    if done is not None:
        parts.append(f"{done}/{total}" if total else f"{done}")
    for k, v in e.items():
        if k in ("t", "loop", "done", "total", "unit"):
            continue
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    if first is not None and done is not None and first.get("done") is not None:
        dt, dn = e["t"] - first["t"], done - first["done"]
        if dt > 0 and dn > 0:
            rate = dn / dt
            unit = e.get("unit") or "it"
            parts.append(f"| {rate * 60:.3g} {unit}/min")
            if total:
                parts.append(f"ETA {_fmt_duration(max(0, total - done) / rate)}")
    return " ".join(parts)


class Follower:
    """Tails a progress file in a thread and prints the latest event of each loop: one
    rewritten line on a terminal, a line every ``interval_s`` seconds otherwise.

    Rate and ETA come from the loop's events of the last ``window_s`` seconds, and only once
    they span ``min_span_s`` (or the loop has finished): a burst at the start (the search
    reports each sample of a batch as it is scored, milliseconds apart; cached evaluations; a
    resumed run) otherwise showed tens of thousands of samples a minute and an ETA of seconds
    for an hour's work.
    """

    def __init__(self, path: str | os.PathLike[str], out: TextIO | None = None,
                 interval_s: float = 15.0, poll_s: float = 0.5,
                 window_s: float = 300.0, min_span_s: float = 1.0) -> None:
        self.path = Path(path)
        self.window_s = window_s
        self.min_span_s = min_span_s
        self.out = out or sys.stderr
        self.interval_s = interval_s
        self.poll_s = poll_s
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pos = 0
        self._recent: dict[str, deque[dict[str, Any]]] = {}
        self._last_print = 0.0
        self._pending: str | None = None
        self.lines: list[str] = []  # everything printed (tests)

    def __enter__(self) -> Follower:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._drain(final=True)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._drain()

    def _drain(self, final: bool = False) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                f.seek(self._pos)
                chunk = f.read()
                self._pos = f.tell()
        except OSError:
            return
        for line in chunk.splitlines():
            try:
                e = json.loads(line)
            except ValueError:
                continue
            self._pending = format_event(e, self._reference(e))
        now = time.time()
        if self._pending and (self.tty or final or now - self._last_print >= self.interval_s):
            self._emit(self._pending, final)
            self._pending = None
            self._last_print = now

    def _reference(self, e: dict[str, Any]) -> dict[str, Any] | None:
        """The loop's oldest event in the window before ``e``, if it is old enough for a rate."""
        recent = self._recent.setdefault(str(e.get("loop")), deque())
        recent.append(e)
        t = float(e.get("t") or 0.0)
        while len(recent) > 1 and t - float(recent[0].get("t") or 0.0) > self.window_s:
            recent.popleft()
        ref = recent[0]
        finished = e.get("total") is not None and e.get("done") == e.get("total")
        if ref is e or (t - float(ref.get("t") or 0.0) < self.min_span_s and not finished):
            return None
        return ref  # a finished loop shows its mean rate however short it was

    def _emit(self, text: str, final: bool) -> None:
        self.lines.append(text)
        if self.tty:
            self.out.write("\r\033[K" + text + ("\n" if final else ""))
        else:
            self.out.write(text + "\n")
        self.out.flush()


__all__ = ["ENV", "Follower", "format_event", "report"]
