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
