"""Search throughput against requests in flight, on a simulated OpenAI-compatible server.

What it answers (issue 16): how the search's samples/min grow with the requests it keeps in
flight (``batch_size`` prompts per call, all sent at once by the ``openai`` backend), and
what overlapping sampling with evaluation (``overlap_sampling``) adds. The model is simulated
so that the figure isolates the kit: a local HTTP server answers every request after
``latency_s + tokens / tokens_per_s`` seconds, and answers requests *independently* (as a
server batching continuously would, up to its own limit, which this does not model). Answers
are the task's shipped heuristics with one constant changed per request (distinct programs,
so every one is really evaluated in the sandbox, on this machine's cores).

    .venv/bin/python benchmarks/search_throughput.py --in-flight 1 4 16 64 --latency-s 0.5 --tokens-per-s 60
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aad_kit.db import AlgorithmDB  # noqa: E402
from aad_kit.llm.openai_compat import OpenAICompatSampler  # noqa: E402
from aad_kit.profiles import CHEAPEST_SETTING  # noqa: E402
from aad_kit.prompts import format_answer  # noqa: E402
from aad_kit.sandbox import Sandbox, SandboxConfig  # noqa: E402
from aad_kit.search import SearchConfig, run_search  # noqa: E402
from aad_kit.tasks import get_task  # noqa: E402
from aad_kit.teacher import _machine  # noqa: E402 - the CPU a timing was taken on


def _answers(task: str) -> list[str]:
    """Programs the simulated model answers with: the shipped heuristics (template included)."""
    t = get_task(task)
    codes = [h.code for h in t.heuristics().values()] + [t.template_program]
    return [format_answer(f"variant of heuristic {i}", code, t.function_name) for i, code in enumerate(codes)]


def _vary(answer: str, k: int) -> str:
    """A distinct program: a module constant is appended inside the code fence."""
    return re.sub(r"\n```\s*$", f"\n_SIMULATED_REQUEST = {k}\n```", answer.rstrip(), count=1)


class SimulatedServer:
    """``/v1/chat/completions`` answering each request after its simulated decode time."""

    def __init__(self, task: str, latency_s: float, tokens_per_s: float, port: int = 0) -> None:
        self.answers = _answers(task)
        self.latency_s, self.tokens_per_s = latency_s, tokens_per_s
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    k = server.requests
                digest = hashlib.sha256(f"{body.get('seed')}|{k}".encode()).digest()
                text = _vary(server.answers[digest[0] % len(server.answers)], k)
                tokens = max(1, len(text) // 4)
                time.sleep(server.latency_s + tokens / server.tokens_per_s)
                data = json.dumps({"choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": text}}],
                                   "usage": {"completion_tokens": tokens}}).encode()
                with server._lock:
                    server.in_flight -= 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def measure(task: str, setting: str, in_flight: int, overlap: bool, budget: int,
            server: SimulatedServer, sandbox: Sandbox) -> dict[str, Any]:
    sampler = OpenAICompatSampler(server.url, "simulated", max_concurrency=in_flight, use_n=False)
    config = SearchConfig(task=task, setting=setting, budget=budget, batch_size=in_flight, population_size=8,
                          init_samples=min(8, budget), max_new_tokens=512, overlap_sampling=overlap,
                          include_seed_heuristics=False)
    server.max_in_flight = 0
    with tempfile.TemporaryDirectory() as tmp, AlgorithmDB(Path(tmp) / "s.sqlite") as db:
        res = run_search(config, sampler, db, sandbox, run_id="bench", progress=False)
    t = res.timings
    return {"task": task, "setting": setting, "in_flight": in_flight, "overlap": overlap, "budget": budget,
            "samples_per_min": res.samples_per_minute, "wall_s": res.wall_time_s,
            "sampling_s": t["sampling_s"], "evaluation_s": t["evaluation_s"],
            "sampling_wait_s": t.get("sampling_wait_s", t["sampling_s"]),
            "server_max_in_flight": server.max_in_flight, "valid_rate": res.valid_rate}


def run(task: str, setting: str, in_flights: Sequence[int], latency_s: float, tokens_per_s: float,
        min_batches: int, min_budget: int, workers: int) -> dict[str, Any]:
    server = SimulatedServer(task, latency_s, tokens_per_s)
    rows = []
    try:
        with Sandbox(SandboxConfig(workers=workers), cache=False) as sandbox:
            sandbox.evaluate(task, get_task(task).template_program, setting)  # workers started
            for n in in_flights:
                for overlap in (False, True):
                    budget = max(min_budget, min_batches * n)
                    row = measure(task, setting, n, overlap, budget, server, sandbox)
                    rows.append(row)
                    print(f"{task} {setting} in flight {n:3d} overlap {'on ' if overlap else 'off'} "
                          f"budget {budget:4d}: {row['samples_per_min']:8.1f} samples/min  "
                          f"(sampling {row['sampling_s']:6.1f} s, waited {row['sampling_wait_s']:6.1f} s, "
                          f"evaluation {row['evaluation_s']:6.1f} s, server peak {row['server_max_in_flight']})",
                          flush=True)
    finally:
        server.close()
    base = next(r["samples_per_min"] for r in rows if r["in_flight"] == in_flights[0] and not r["overlap"])
    for r in rows:
        r["speedup_vs_first"] = r["samples_per_min"] / base
    return {"task": task, "setting": setting, "latency_s": latency_s, "tokens_per_s": tokens_per_s,
            "workers": workers, "machine": _machine(), "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="tsp_construct")
    parser.add_argument("--setting", default="", help="default: the task's cheapest (sampling-bound)")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--latency-s", type=float, default=0.5, help="per request, before decoding")
    parser.add_argument("--tokens-per-s", type=float, default=60.0, help="decode speed of one request")
    parser.add_argument("--min-batches", type=int, default=3, help="budget >= this many batches")
    parser.add_argument("--min-budget", type=int, default=16)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="sandbox workers")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--serve", type=int, metavar="PORT",
                        help="only run the simulated server on this port (for a pipeline run: "
                             "-p model=openai:http://127.0.0.1:PORT/v1#simulated)")
    args = parser.parse_args(argv)
    if args.serve is not None:
        server = SimulatedServer(args.task, args.latency_s, args.tokens_per_s, port=args.serve)
        print(f"simulated model for {args.task} at {server.url} (Ctrl-C stops it)", flush=True)
        try:
            while True:
                time.sleep(60)
                print(f"{server.requests} requests so far, peak {server.max_in_flight} in flight", flush=True)
        except KeyboardInterrupt:
            server.close()
        return {}
    m = _machine()
    print(f"CPU: {m.get('cpu')}, {m['cpu_count']} cores, load {m['loadavg'][0]:.2f}; simulated model: "
          f"{args.latency_s} s + tokens / {args.tokens_per_s} tok/s per request", flush=True)
    report = run(args.task, args.setting or CHEAPEST_SETTING[args.task], args.in_flight, args.latency_s, args.tokens_per_s, args.min_batches,
                 args.min_budget, args.workers)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
