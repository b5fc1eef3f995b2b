"""Evaluation throughput: the sandbox pool vs one fresh interpreter per candidate, same isolation.

    flock /tmp/aad-bench.lock .venv/bin/python benchmarks/eval_executors.py \\
        --settings cheap --n 200 --reps 3 --workers 1 2 --hostile --json cheap.json
    flock /tmp/aad-bench.lock .venv/bin/python benchmarks/eval_executors.py \\
        --settings expensive --n 100 --reps 3 --workers 1 2 --json expensive.json

(about 4 and 5 minutes on 2 cores; ``OMP_NUM_THREADS=1`` in the environment as for the tests)

Two executors score the same candidates:

- ``pool``: :class:`aad_kit.sandbox.Sandbox`: persistent warm worker interpreters (numpy and
  the setting's instances loaded once), one forked child per candidate;
- ``one-shot``: :class:`OneShotSandbox` (child: :mod:`benchmarks.lib.oneshot`): what LLM4AD and EoH do, a
  fresh Python interpreter per candidate, with the *same* isolation (it reuses the pool's
  static check and result handling and the worker's child set-up, wait and classification:
  network namespace, rlimits, uid switch, runtime guard, timeouts, statuses).

Candidates are real programs for each task: the shipped heuristics and the template, the
search samples in ``<runs-dir>/algorithms.jsonl`` and the raw model answers in
``<runs-dir>/generalisation_answers.jsonl`` (parsed with ``parse_answer``; failing answers
included), deduplicated by normalised code, then filled up to ``--n`` with deterministic
variants (perturbed float constants and/or a unique trailing constant, so nothing is a
duplicate). Real programs that run longer than ``--max-run-s`` on the setting (timeouts
included) are listed and left out: they cost their full run, up to the setting's 20-150 s
timeout, under either executor. Without the run directory (a clean clone) only shipped
programs and variants are used, and the output says so. Caches are off. Each executor gets ``--workers`` candidates at a
time; both are warmed up before timing (pool workers started, one-shot isolation probed).
Throughputs are medians over ``--reps``, measured side by side in the same run (the order of
the two executors alternates between repetitions). Every candidate's status and score must be
identical under both executors: the mismatch count is printed and must be 0.

The per-candidate breakdown shows where the time goes: the one-shot phases (interpreter start,
network namespace, numpy/task imports, instance build, isolation set-up + run, exit +
clean-up) against the pool's wall time and run time per candidate, and process start-up
costs (bare interpreter, numpy, a fork) measured on their own. ``--hostile`` also runs the
hostile catalogue through both executors, with the policy on and off.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aad_kit.code import code_hash  # noqa: E402
from aad_kit.profiles import CHEAPEST_SETTING  # noqa: E402
from aad_kit.result import EvalResult  # noqa: E402
from aad_kit.sandbox import Sandbox, SandboxConfig, isolation  # noqa: E402
from aad_kit.sandbox.pool import _Prepared, _worker_env  # noqa: E402
from aad_kit.sandbox.worker import Worker  # noqa: E402
from aad_kit.tasks import TASK_NAMES, get_task  # noqa: E402
from benchmarks.lib import oneshot  # noqa: E402 - the child side of the one-shot executor

DEFAULT_RUNS_DIR = ROOT / "runs" / "quick-1"

# One evaluation of a typical candidate takes 0.05-0.5 s on these (see benchmarks/RESULTS.md).
EXPENSIVE_SETTING: dict[str, str] = {
    "admissible_set": "n18_w12",
    "bin_packing": "weibull_5k_c100",
    "tsp_construct": "n200",
    "cvrp_construct": "n200_c50",
}

EXECUTORS = ("pool", "one-shot")


# ---------------------------------------------------------------------------------------------
# candidates


@dataclass(frozen=True)
class Candidate:
    code: str
    origin: str  # shipped / template / search / answer, or "variant of ..."
    real: bool  # written as-is by a person or a model (not a variant)


def real_programs(task_name: str, runs_dir: Path | None) -> tuple[list[Candidate], dict[str, Any]]:
    """Distinct (by normalised code) real programs for ``task_name``, and where they came from."""
    from aad_kit.search.parsing import parse_answer

    task = get_task(task_name)
    found: list[Candidate] = [
        Candidate(h.code, f"shipped:{name}", True) for name, h in sorted(task.heuristics().items())
    ]
    found.append(Candidate(task.template_program, "template", True))
    notes: dict[str, Any] = {"runs_dir": None, "answers_without_code": 0}
    if runs_dir is not None and runs_dir.is_dir():
        notes["runs_dir"] = str(runs_dir)
        search = runs_dir / "algorithms.jsonl"
        if search.exists():
            for line in search.read_text().splitlines():
                row = json.loads(line)
                if row.get("task") == task_name and row.get("code"):
                    found.append(Candidate(row["code"], f"search:{row.get('operator')}", True))
        answers = runs_dir / "generalisation_answers.jsonl"
        if answers.exists():
            for line in answers.read_text().splitlines():
                row = json.loads(line)
                if row.get("task") != task_name:
                    continue
                parsed = parse_answer(row.get("text"), task)
                if parsed.code is None:
                    notes["answers_without_code"] += 1  # nothing to evaluate
                else:
                    found.append(Candidate(parsed.code, f"answer:{row.get('model')}", True))
    seen: set[str] = set()
    distinct = []
    for c in found:
        h = code_hash(c.code)
        if h not in seen:
            seen.add(h)
            distinct.append(c)
    notes["origins"] = dict(Counter(c.origin.split(":")[0] for c in distinct))
    return distinct, notes


class _PerturbFloats(ast.NodeTransformer):
    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.changed = 0

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if type(node.value) is float and node.value not in (0.0, 1.0):
            self.changed += 1
            return ast.copy_location(ast.Constant(node.value * self.factor), node)
        return node


def variant(code: str, k: int) -> str:
    """A deterministic, distinct variant: odd ``k`` also scales float constants by 1 + k/1000."""
    if k % 2:
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError):
            tree = None
        if tree is not None:
            perturb = _PerturbFloats(1.0 + k / 1000)
            tree = perturb.visit(tree)
            if perturb.changed:
                code = ast.unparse(tree)
    return f"{code.rstrip()}\n\n_BENCH_VARIANT = {k}\n"


def screen(
    task_name: str, setting: str, programs: Sequence[Candidate], max_run_s: float, workers: int
) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Drop programs that run longer than ``max_run_s`` (timeouts included) on ``setting``.

    Such a program costs its full run (up to the setting's timeout, 20-150 s) under either
    executor and would only measure that; it is listed, not timed. Screened through the pool
    with ``timeout_s=max_run_s``.
    """
    config = SandboxConfig(workers=workers, timeout_s=max_run_s, use_cache=False)
    with Sandbox(config, cache=False) as sb:
        results = sb.evaluate_many([(task_name, c.code, setting) for c in programs])
    kept, dropped = [], []
    for c, r in zip(programs, results, strict=True):
        if r.status.value == "timeout" or r.runtime_s > max_run_s:
            dropped.append({"origin": c.origin, "status": r.status.value, "runtime_s": r.runtime_s})
        else:
            kept.append(c)
    return kept, dropped


def build_candidates(
    task_name: str,
    setting: str,
    n: int,
    runs_dir: Path | None,
    *,
    max_run_s: float | None = 1.0,
    workers: int = 2,
) -> tuple[list[Candidate], dict[str, Any]]:
    """``n`` distinct candidates: the real programs first, then variants of them in turn."""
    real, notes = real_programs(task_name, runs_dir)
    notes["distinct_real_programs"] = len(real)
    notes["too_slow"] = []
    if max_run_s is not None:
        real, notes["too_slow"] = screen(task_name, setting, real, max_run_s, workers)
    out = list(real[:n])
    k = 0
    while len(out) < n:
        base = real[k % len(real)]
        k += 1
        out.append(Candidate(variant(base.code, k), f"variant of {base.origin}", False))
    assert len({code_hash(c.code) for c in out}) == len(out), "candidates must be distinct"
    notes.update(real=sum(c.real for c in out), variants=sum(not c.real for c in out))
    return out, notes


# ---------------------------------------------------------------------------------------------
# the process-per-candidate executor (parent side; the child is benchmarks.lib.oneshot)


def _read_line(fd: int, deadline: float) -> bytes:
    """Bytes from ``fd`` up to the first newline (or EOF / deadline: then no newline)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    buf = bytearray()
    while b"\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if not poller.poll(max(1, int(remaining * 1000))):
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def _log_tail(path: str, n: int = 1500) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")[-n:].strip()
    except OSError:
        return ""


def _clean_up(proc: subprocess.Popen[bytes] | None, uid: int | None) -> None:
    """What the worker does after each candidate: kill its process group, then its uid."""
    if proc is None:
        return
    isolation.killpg_quiet(proc.pid)  # the candidate's session (it called setsid)
    if proc.returncode is None:
        proc.kill()
        proc.wait()
    if uid is not None and os.geteuid() == 0:
        isolation.kill_uid_processes(int(uid))


def run_oneshot(
    job: dict[str, Any],
    *,
    setup_timeout_s: float = 600.0,
    timings: list[dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Run one candidate job in a fresh interpreter; the same raw result dict a worker sends.

    ``job`` is the pool's job message plus ``switch_uid`` and ``keep_read``. The wall-clock
    timeout runs from "ready" (as the worker's runs from the fork); a death is classified by
    the worker's own ``Worker._classify_death``. If ``timings`` is given, one dict of phase
    durations (seconds) is appended to it.
    """
    timeout = float(job["timeout_s"])
    memory_mb = int(job["memory_mb"])
    tmpdir = tempfile.mkdtemp(prefix="aad-oneshot-")
    os.chmod(tmpdir, 0o755)
    log_path = os.path.join(tmpdir, "oneshot.log")
    ready_r, ready_w = os.pipe()
    proc: subprocess.Popen[bytes] | None = None
    uid: int | None = None
    t_spawn = time.monotonic()
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                oneshot.command(str(ready_w)),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=tmpdir,
                env=_worker_env(tmpdir),
                close_fds=True,
                pass_fds=(ready_w,),
                bufsize=0,
            )
        os.close(ready_w)
        ready_w = -1
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write((json.dumps(job) + "\n").encode("utf-8", "surrogatepass"))
        except OSError:
            pass  # it died already: reported below
        proc.stdin.close()
        line = _read_line(ready_r, time.monotonic() + setup_timeout_s)
        t_ready = time.monotonic()
        try:
            ready = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            ready = None
        if not isinstance(ready, dict):
            proc.kill()
            proc.wait()
            tail = _log_tail(log_path)
            return {
                "status": "sandbox_error",
                "message": f"the one-shot interpreter did not get ready (exit {proc.returncode})"
                + (f"\nlog:\n{tail}" if tail else ""),
            }
        uid = ready.get("uid")
        raw, timed_out = Worker._wait(proc.pid, proc.stdout.fileno(), t_ready + timeout)
        t_result = time.monotonic()
        if timed_out:
            isolation.killpg_quiet(proc.pid)
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except OSError:
                pass
        _, wstatus, rusage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(wstatus)  # reaped here, not by Popen
        wall = time.monotonic() - t_ready
        proc.stdout.close()
        result = Worker._parse(raw)
        if result is None:
            # the worker judges a forked child's rusage; this process also counts its start-up
            candidate_rusage = SimpleNamespace(
                ru_utime=max(0.0, rusage.ru_utime + rusage.ru_stime - float(ready["cpu_s"])),
                ru_stime=0.0,
                ru_maxrss=rusage.ru_maxrss,
            )
            result = Worker._classify_death(
                wstatus, candidate_rusage, timed_out, timeout, memory_mb, int(ready["rss"]),
                wall, raw,
            )
        result.setdefault("runtime_s", wall)
    finally:
        if ready_w >= 0:
            os.close(ready_w)
        os.close(ready_r)
        _clean_up(proc, uid)
        t_done = time.monotonic()
        shutil.rmtree(tmpdir, ignore_errors=True)
    if timings is not None:
        timings.append(
            {
                "start_to_module": ready["t_body"] - t_spawn,  # exec, interpreter, first imports
                "netns": ready["t_netns"] - ready["t_body"],
                "imports": ready["t_imports"] - ready["t_netns"],  # numpy, tasks, guard
                "instances": ready["t_ready"] - ready["t_imports"],
                "ready_pipe": t_ready - ready["t_ready"],
                "candidate": t_result - t_ready,  # isolation set-up + the candidate + result
                "candidate_run": float(result.get("runtime_s") or 0.0),
                "exit_cleanup": t_done - t_result,
                "total": t_done - t_spawn,
            }
        )
    return result


class OneShotSandbox(Sandbox):
    """A :class:`Sandbox` that starts a fresh interpreter per candidate.

    Same static check, job message and result handling as the pool (it *is* one, with
    ``_run`` replaced); ``config.workers`` is how many candidates run at once. Whether the uid
    switch works, and with which capabilities, is asked once from a probe interpreter that
    builds a real worker. ``timings`` collects the phases of every candidate run in a process.
    Clean-up difference when not root (no uid switch): the worker is also a child subreaper
    and kills orphans by process tree; here only the process group is killed.
    """

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config, cache=False)
        self.timings: list[dict[str, float]] = []
        self._probe: dict[str, Any] | None = None
        self._probe_lock = threading.Lock()

    def probe(self) -> dict[str, Any]:
        with self._probe_lock:
            if self._probe is None:
                args = ["--probe"] + ([] if self.config.switch_uid else ["--no-switch-uid"])
                with tempfile.TemporaryDirectory(prefix="aad-oneshot-") as tmp:
                    os.chmod(tmp, 0o755)
                    out = subprocess.run(
                        oneshot.command(*args), cwd=tmp, env=_worker_env(tmp),
                        capture_output=True, timeout=self.config.setup_timeout_s, check=True,
                    ).stdout
                self._probe = json.loads(out.splitlines()[0])
            return self._probe

    def info(self) -> dict[str, Any]:
        probe = self.probe()
        keys = ("netns", "network_isolated", "privileges", "candidate_uid", "python", "numpy")
        return {**{k: probe.get(k) for k in keys}, "workers": self.config.workers}

    def _run(self, p: _Prepared) -> EvalResult:
        probe = self.probe()
        job = dict(
            self._job(p),
            switch_uid=probe.get("candidate_uid") is not None,
            keep_read=bool(probe.get("keep_read", True)),
        )
        timings: list[dict[str, float]] = []
        raw = run_oneshot(job, setup_timeout_s=self.config.setup_timeout_s, timings=timings)
        with self._lock:
            self.timings.extend(timings)
        return self._finish(p, raw)


# ---------------------------------------------------------------------------------------------
# timing


def _warm_jobs(task_name: str, setting: str, count: int) -> list[tuple[str, str, str]]:
    template = get_task(task_name).template_program
    return [(task_name, f"{template.rstrip()}\n\n_BENCH_WARMUP = {i}\n", setting) for i in range(count)]


def _key(r: EvalResult) -> tuple[str, float | None]:
    return (r.status.value, r.score)


def compare(
    task_name: str,
    setting: str,
    candidates: Sequence[Candidate],
    *,
    workers: Sequence[int],
    reps: int,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Time both executors on ``candidates`` for each parallelism; check they agree."""
    jobs = [(task_name, c.code, setting) for c in candidates]
    config = dict(use_cache=False, timeout_s=timeout_s)
    rows = []
    mismatches: list[dict[str, Any]] = []
    statuses: Counter[str] = Counter()
    reference: list[tuple[str, float | None]] | None = None
    oneshot_timings: list[dict[str, float]] = []
    pool_run_s: list[float] = []
    startup: dict[str, float] = {}
    isolation: dict[str, dict[str, Any]] = {}
    for w in workers:
        t0 = time.perf_counter()
        pool = Sandbox(SandboxConfig(workers=w, **config), cache=False)
        pool.evaluate_many(_warm_jobs(task_name, setting, 2 * w))  # start all workers
        startup[f"pool_{w}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for job in jobs:
            pool._prepare(*job)  # hash + static policy check: the same for both executors
        prepare_ms = 1000 * (time.perf_counter() - t0) / len(jobs)
        t0 = time.perf_counter()
        oneshot = OneShotSandbox(SandboxConfig(workers=w, **config))
        oneshot.evaluate_many(_warm_jobs(task_name, setting, 1))  # probe + a warm page cache
        startup[f"oneshot_{w}"] = time.perf_counter() - t0
        isolation["pool"], isolation["one-shot"] = pool.info(), oneshot.info()
        oneshot.timings.clear()
        walls: dict[str, list[float]] = {e: [] for e in EXECUTORS}
        try:
            for rep in range(reps):
                order = EXECUTORS if rep % 2 == 0 else EXECUTORS[::-1]
                got: dict[str, list[EvalResult]] = {}
                for name in order:
                    executor = pool if name == "pool" else oneshot
                    t0 = time.perf_counter()
                    got[name] = executor.evaluate_many(jobs)
                    walls[name].append(time.perf_counter() - t0)
                if reference is None:
                    reference = [_key(r) for r in got["pool"]]
                    statuses.update(r.status.value for r in got["pool"])
                if w == workers[0]:
                    pool_run_s += [r.runtime_s for r in got["pool"] if r.runtime_s]
                for i, (a, b) in enumerate(zip(got["pool"], got["one-shot"], strict=True)):
                    if _key(a) != _key(b) or _key(a) != reference[i]:
                        mismatches.append(
                            {"candidate": i, "origin": candidates[i].origin, "workers": w,
                             "rep": rep, "pool": _key(a), "one-shot": _key(b),
                             "first_rep": reference[i], "message": (a.message or b.message)[:300]}
                        )
            if w == workers[0]:
                oneshot_timings = list(oneshot.timings)
        finally:
            pool.close()
            oneshot.close()
        rate = {e: [len(jobs) / t for t in walls[e]] for e in EXECUTORS}
        per_rep = [p / o for p, o in zip(rate["pool"], rate["one-shot"], strict=True)]
        rows.append(
            {
                "task": task_name, "setting": setting, "workers": w, "n": len(jobs),
                "pool_per_s": statistics.median(rate["pool"]),
                "oneshot_per_s": statistics.median(rate["one-shot"]),
                "ratio": statistics.median(rate["pool"]) / statistics.median(rate["one-shot"]),
                "ratio_min": min(per_rep), "ratio_max": max(per_rep),
                "pool_walls_s": walls["pool"], "oneshot_walls_s": walls["one-shot"],
            }
        )
    procs = len(oneshot_timings) // max(1, reps)  # candidates that reached a process
    per_proc = 1000 / max(1, procs)
    breakdown = {
        "prepare_ms_per_candidate": prepare_ms,
        "workers": workers[0],
        "candidates_in_a_process": procs,
        "oneshot_ms": {k: 1000 * statistics.mean(t[k] for t in oneshot_timings)
                       for k in (oneshot_timings[0] if oneshot_timings else {})},
        "oneshot_wall_ms": per_proc * statistics.median(rows[0]["oneshot_walls_s"]),
        "pool_wall_ms": per_proc * statistics.median(rows[0]["pool_walls_s"]),
        "pool_run_ms": 1000 * statistics.mean(pool_run_s) if pool_run_s else 0.0,
    }
    return {
        "rows": rows, "statuses": dict(statuses), "mismatches": mismatches,
        "breakdown": breakdown, "startup_s": startup, "isolation": isolation,
    }


def _median_run_s(args: list[str], env: dict[str, str], cwd: str, k: int) -> float:
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        subprocess.run(args, env=env, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


_FORK_PROBE = """
import os, statistics, time
import numpy
from aad_kit.tasks import get_task
task = get_task("tsp_construct")
instances = task.build_instances(task.setting("n20"))
times = []
for _ in range(50):
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    times.append(time.perf_counter() - t0)
print(statistics.median(times))
"""


def interpreter_costs(k: int = 10) -> dict[str, float]:
    """Process start-up costs in the workers' clean environment (median ms).

    Spawn to exit of: a bare interpreter, one without ``site`` (``-S``), one importing numpy,
    one importing what the one-shot interpreter imports before its candidate
    (:mod:`benchmarks.lib.oneshot`, the worker side of the sandbox: its package ``__init__``
    is lazy), and the same plus the pool and its cache (what the package ``__init__`` loaded
    eagerly before it became lazy). ``fork_exit_wait``: one fork + ``_exit`` + wait from an
    interpreter with numpy and instances loaded (what a pool worker does per candidate,
    without any isolation set-up).
    """
    needed = "import numpy, benchmarks.lib.oneshot, aad_kit.sandbox.guard, aad_kit.tasks"
    programs = {
        "python_bare": ["-c", "pass"],
        "python_no_site": ["-S", "-c", "pass"],
        "numpy": ["-c", "import numpy"],
        "oneshot_imports": ["-c", needed],
        "with_package_init": ["-c", needed + ", aad_kit.sandbox.pool"],
    }
    with tempfile.TemporaryDirectory(prefix="aad-bench-") as tmp:
        env = _worker_env(tmp)
        costs = {name: 1000 * _median_run_s([sys.executable, *args], env, tmp, k)
                 for name, args in programs.items()}
        out = subprocess.run([sys.executable, "-c", _FORK_PROBE], env=env, cwd=tmp, check=True,
                             capture_output=True, text=True).stdout
        costs["fork_exit_wait"] = 1000 * float(out.split()[-1])
    return costs


def hostile_check(timeout_s: float = 2.0, policies: Sequence[bool] = (True, False)) -> list[dict[str, Any]]:
    """The hostile catalogue through both executors (tsp_construct n20): statuses must agree."""
    from aad_kit.sandbox.hostile import hostile_candidates

    rows = []
    for enforce in policies:
        config = SandboxConfig(workers=1, timeout_s=timeout_s, use_cache=False, enforce_policy=enforce)
        jobs = [("tsp_construct", h.render("tsp_construct"), "n20") for h in hostile_candidates()]
        with Sandbox(config, cache=False) as pool, OneShotSandbox(config) as oneshot:
            a, b = pool.evaluate_many(jobs), oneshot.evaluate_many(jobs)
        for h, ra, rb in zip(hostile_candidates(), a, b, strict=True):
            rows.append({"name": h.name, "policy": "on" if enforce else "off",
                         "expected": h.expected.value if enforce else "",
                         "pool": ra.status.value, "one-shot": rb.status.value,
                         "same": _key(ra) == _key(rb)})
    return rows


# ---------------------------------------------------------------------------------------------
# report


def run(
    *,
    tasks: Sequence[str],
    settings: str = "cheap",
    n: int = 200,
    reps: int = 3,
    workers: Sequence[int] = (1, 2),
    runs_dir: Path | None = DEFAULT_RUNS_DIR,
    max_run_s: float | None = 1.0,
    breakdown_k: int = 10,
    hostile: bool = False,
    out: TextIO | None = None,
) -> dict[str, Any]:
    """The whole benchmark; prints the tables to ``out`` (stdout) and returns them as a dict."""

    def say(text: str = "") -> None:
        print(text, file=out or sys.stdout, flush=True)

    plan = []
    for name in tasks:
        if settings in ("cheap", "both"):
            plan.append((name, CHEAPEST_SETTING[name]))
        if settings in ("expensive", "both"):
            plan.append((name, EXPENSIVE_SETTING[name]))
    report: dict[str, Any] = {
        "command": " ".join([os.path.relpath(sys.argv[0]) if sys.argv[0] else "", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "loadavg_start": Path("/proc/loadavg").read_text().strip(),
        "n": n, "reps": reps, "workers": list(workers), "results": [], "mix": {},
    }
    say(f"{report['date']}  {report['machine']}  loadavg {report['loadavg_start']}")
    mixes: dict[tuple[str, str], tuple[list[Candidate], dict[str, Any]]] = {}
    for name, setting in plan:
        mixes[name, setting] = build_candidates(
            name, setting, n, runs_dir, max_run_s=max_run_s, workers=max(workers)
        )
    if runs_dir is None or not runs_dir.is_dir():
        say(f"note: no run directory ({runs_dir}): candidates are the shipped heuristics, the "
            "template and variants of them (no model answers)")
    cap = f"> {max_run_s:g} s" if max_run_s is not None else "(no cap)"
    say(f"\ncandidates per task and setting (n = {n}); too slow: real programs that ran {cap}, "
        "not timed")
    say(f"{'task':15} {'setting':16} {'distinct':>8} {'too slow':>8} {'timed real':>10}"
        f" {'variants':>8}  real programs by origin")
    for (name, setting), (_, notes) in mixes.items():
        origins = ", ".join(f"{k} {v}" for k, v in notes["origins"].items())
        say(f"{name:15} {setting:16} {notes['distinct_real_programs']:8d} {len(notes['too_slow']):8d}"
            f" {notes['real']:10d} {notes['variants']:8d}  {origins}"
            f" (+{notes['answers_without_code']} answers without code)")
        for d in notes["too_slow"]:
            say(f"    too slow: {d['origin']} ({d['status']}, {d['runtime_s']:.2f} s)")
        report["mix"][f"{name}/{setting}"] = notes

    say(f"\nthroughput (evaluations/s, median of {reps} reps; ratio = pool / one-shot)")
    header = (f"{'task':15} {'setting':16} {'n':>4} {'par':>3} {'pool /s':>8} {'one-shot /s':>11}"
              f" {'ratio':>6} {'range':>11} {'mismatch':>8}")
    say(header)
    for name, setting in plan:
        candidates, _ = mixes[name, setting]
        result = compare(name, setting, candidates, workers=workers, reps=reps)
        report["results"].append(result)
        bad = len(result["mismatches"])
        for row in result["rows"]:
            say(f"{name:15} {setting:16} {row['n']:4d} {row['workers']:3d} {row['pool_per_s']:8.1f}"
                f" {row['oneshot_per_s']:11.2f} {row['ratio']:6.1f}"
                f" {row['ratio_min']:5.1f}-{row['ratio_max']:<5.1f} {bad:8d}")
        for m in result["mismatches"][:5]:
            say(f"  MISMATCH {m}")
    total_bad = sum(len(r["mismatches"]) for r in report["results"])
    report["mismatches"] = total_bad
    say(f"status mismatches between the executors: {total_bad}")

    say("\nstatuses (each candidate once)")
    names = sorted({s for r in report["results"] for s in r["statuses"]})
    say(f"{'task':15} {'setting':16} " + " ".join(f"{s:>{max(6, len(s))}}" for s in names))
    for r in report["results"]:
        row = r["rows"][0]
        say(f"{row['task']:15} {row['setting']:16} "
            + " ".join(f"{r['statuses'].get(s, 0):>{max(6, len(s))}}" for s in names))

    say(f"\nper candidate that reached a process, {workers[0]} at a time, ms (walls: median "
        "rep / candidates; phases: mean)")
    cols = ("start_to_module", "netns", "imports", "instances", "candidate", "candidate_run",
            "exit_cleanup")
    heads = ("start", "netns", "imports", "instances", "cand.", "of it run", "exit+clean")
    say(f"{'task':15} {'setting':16} {'procs':>5} {'check':>5} | {'pool':>6} {'run':>6} {'rest':>5} | "
        + " ".join(f"{h:>9}" for h in heads) + f" {'one-shot':>9}")
    for r in report["results"]:
        b, row = r["breakdown"], r["rows"][0]
        ms = b["oneshot_ms"]
        say(f"{row['task']:15} {row['setting']:16} {b['candidates_in_a_process']:5d}"
            f" {b['prepare_ms_per_candidate']:5.2f} |"
            f" {b['pool_wall_ms']:6.1f} {b['pool_run_ms']:6.1f}"
            f" {b['pool_wall_ms'] - b['pool_run_ms']:5.1f} | "
            + " ".join(f"{ms.get(c, 0.0):9.1f}" for c in cols) + f" {b['oneshot_wall_ms']:9.1f}")
    say("  check: hash + static policy check in the parent, per candidate (all n; both executors)\n"
        "  pool: wall; run = compile + exec + measure in the candidate process; rest = fork,\n"
        "    isolation set-up, IPC, clean-up, and the checks of statically rejected candidates\n"
        "  one-shot: start = spawn to the child's first line (exec, interpreter, site);\n"
        "    imports = numpy + tasks + guard; cand. = isolation set-up + run + result;\n"
        "    exit+clean = exit, reaping, sweep of the candidate uid, temp dir; one-shot = wall")

    say("\nstart-up paid once (s): " + "; ".join(
        f"{r['rows'][0]['task']}/{r['rows'][0]['setting']} "
        + ", ".join(f"{k} {v:.2f}" for k, v in r["startup_s"].items())
        for r in report["results"]))

    if breakdown_k > 0:
        costs = interpreter_costs(breakdown_k)
        report["interpreter_ms"] = costs
        say(f"\nprocess start-up, median of {breakdown_k} (ms; see interpreter_costs): "
            + ", ".join(f"{k} {v:.1f}" for k, v in costs.items()))

    iso = report["results"][0]["isolation"] if report["results"] else {}
    for name, info in iso.items():
        say(f"isolation {name:8}: netns {info.get('netns')}, {info.get('privileges')}")
    report["isolation"] = iso

    if hostile:
        rows = hostile_check()
        report["hostile"] = rows
        say("\nhostile catalogue (tsp_construct n20, timeout 2 s): status under each executor")
        say(f"{'candidate':18} {'policy':6} {'expected':16} {'pool':16} {'one-shot':16} same")
        for h in rows:
            say(f"{h['name']:18} {h['policy']:6} {h['expected']:16} {h['pool']:16} "
                f"{h['one-shot']:16} {'yes' if h['same'] else 'NO'}")
        report["hostile_mismatches"] = sum(not h["same"] for h in rows)
    report["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    say(f"\nloadavg at the end: {report['loadavg_end']}")
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=list(TASK_NAMES))
    ap.add_argument("--settings", choices=["cheap", "expensive", "both"], default="cheap")
    ap.add_argument("--n", type=int, default=200, help="candidates per task")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                    help="parallelism levels: pool workers = concurrent one-shot interpreters")
    ap.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR,
                    help="a run directory with algorithms.jsonl / generalisation_answers.jsonl")
    ap.add_argument("--max-run-s", type=float, default=1.0,
                    help="leave out real programs slower than this on the setting (0: keep all)")
    ap.add_argument("--breakdown-k", type=int, default=10,
                    help="fresh-interpreter start-up measurements (0: skip)")
    ap.add_argument("--hostile", action="store_true",
                    help="also run the hostile catalogue through both executors")
    ap.add_argument("--json", type=Path, help="write the full report here")
    args = ap.parse_args(argv)
    report = run(tasks=args.tasks, settings=args.settings, n=args.n, reps=args.reps,
                 workers=args.workers, runs_dir=args.runs_dir, max_run_s=args.max_run_s or None,
                 breakdown_k=args.breakdown_k,
                 hostile=args.hostile)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    report = main()
    sys.exit(1 if report["mismatches"] or report.get("hostile_mismatches") else 0)
