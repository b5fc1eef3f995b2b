"""A tiny run of ``benchmarks/search_throughput.py`` so it cannot rot (not a timed test)."""

from __future__ import annotations

from benchmarks import search_throughput


def test_requests_really_run_in_parallel_and_every_row_completes(capsys):
    report = search_throughput.main(["--in-flight", "1", "4", "--latency-s", "0.05",
                                     "--tokens-per-s", "100000", "--min-budget", "8",
                                     "--min-batches", "2", "--workers", "1"])
    rows = report["rows"]
    assert [(r["in_flight"], r["overlap"]) for r in rows] == [(1, False), (1, True), (4, False), (4, True)]
    for r in rows:
        assert r["budget"] == 8 and r["samples_per_min"] > 0 and r["valid_rate"] > 0.5
        assert r["server_max_in_flight"] == r["in_flight"]  # the backend kept that many in flight
    assert "samples/min" in capsys.readouterr().out


def test_simulated_answers_are_distinct_valid_programs():
    from aad_kit.search import parse_answer
    from aad_kit.tasks import get_task

    answers = search_throughput._answers("tsp_construct")
    codes = {parse_answer(search_throughput._vary(a, k), get_task("tsp_construct")).code
             for k, a in enumerate(answers * 2)}
    assert None not in codes and len(codes) == 2 * len(answers)
