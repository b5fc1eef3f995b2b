"""Progress events from a stage's long loops reach the command line (issue 15)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from aad_kit import progress


def test_report_is_silent_outside_the_pipeline(tmp_path: Path, monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    progress.report("search", 1, 10)  # nothing to write to: no error, no file
    monkeypatch.setenv(progress.ENV, str(tmp_path / "p.jsonl"))
    progress.report("search", 2, 10, unit="samples", best="1842")
    (e,) = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert e["loop"] == "search" and e["done"] == 2 and e["best"] == "1842"


def test_follower_prints_rate_and_eta(tmp_path: Path):
    path = tmp_path / "p.jsonl"
    t = time.time()
    events = [{"t": t, "loop": "search", "done": 0, "total": 100, "unit": "samples"},
              {"t": t + 60, "loop": "search", "done": 10, "total": 100, "unit": "samples", "best": "2556"}]
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    out = io.StringIO()
    with progress.Follower(path, out=out, interval_s=0.0, poll_s=0.05) as f:
        time.sleep(0.2)
    text = f.lines[-1]
    assert text.startswith("[search] 10/100") and "best 2556" in text
    assert "10 samples/min" in text and "ETA 9min" in text  # 90 left at 10 per minute
    assert out.getvalue().strip().splitlines()[-1] == text  # not a terminal: plain lines


def _follow(path: Path, events: list[dict]) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    with progress.Follower(path, out=io.StringIO(), interval_s=0.0, poll_s=0.05) as f:
        time.sleep(0.2)
    return f.lines[-1]


def test_no_rate_from_a_burst_at_the_start(tmp_path: Path):
    """The search reports each sample of a batch as it is scored, milliseconds apart: the first
    batch once showed 1.85e+04 samples/min for a loop doing a few a minute."""
    t = time.time()
    burst = [{"t": t + 0.002 * k, "loop": "search", "done": k, "total": 100, "unit": "samples"}
             for k in range(1, 9)]
    text = _follow(tmp_path / "p.jsonl", burst)
    assert text.startswith("[search] 8/100") and "/min" not in text and "ETA" not in text
    short = [dict(e, total=8) for e in burst]  # a loop that is over in 14 ms shows its mean rate
    assert "| 3e+04 samples/min ETA 0s" in _follow(tmp_path / "q.jsonl", short)


def test_rate_follows_the_recent_window_not_the_start(tmp_path: Path):
    t = time.time()
    events = [{"t": t, "loop": "evaluation", "done": 0, "total": 200, "unit": "cells"},
              {"t": t + 1, "loop": "evaluation", "done": 100, "total": 200, "unit": "cells"}]
    events += [{"t": t + 1 + 60 * k, "loop": "evaluation", "done": 100 + k, "total": 200,
                "unit": "cells"} for k in range(1, 11)]  # then one cell a minute for 10 minutes
    text = _follow(tmp_path / "p.jsonl", events)
    assert text.startswith("[evaluation] 110/200") and "| 1 cells/min" in text, text
    assert "ETA 1.5h" in text  # 90 left at one a minute (from the start it would read ~11 min)
