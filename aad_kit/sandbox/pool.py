"""The parent side: a pool of persistent worker processes, the cache, and the public API."""

from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aad_kit.code import code_hash as _code_hash
from aad_kit.result import EvalResult, Status
from aad_kit.sandbox import isolation
from aad_kit.sandbox.cache import ResultCache, cache_key, limits_fingerprint
from aad_kit.sandbox.config import SandboxConfig
from aad_kit.sandbox.policy import PolicyViolation, check_code
from aad_kit.tasks import Setting, Task, get_task, task_ref

Job = tuple[Any, ...]  # (task, code) or (task, code, setting)


class _WorkerFailure(Exception):
    def __init__(self, kind: str, message: str, started: bool) -> None:
        super().__init__(message)
        self.kind = kind  # "start" | "died" | "timeout" | "protocol"
        self.started = started  # the candidate had been started (forked) when it happened


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip(os.sep) + os.sep)


def _pythonpath() -> list[str]:
    """aad_kit's repository root, then the parent's own source directories (user tasks)."""
    import aad_kit

    entries = [str(Path(aad_kit.__file__).resolve().parents[1])]
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for p in sys.path:
        p = os.path.abspath(p or os.getcwd())
        if not os.path.isdir(p) or any(_under(p, pre) for pre in prefixes):
            continue
        if "site-packages" in p or "dist-packages" in p:
            continue
        if p not in entries:
            entries.append(p)
    return entries


def _worker_env(home: str) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(_pythonpath()),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "VECLIB_MAXIMUM_THREADS": "1",
    }
    if os.environ.get("AAD_KIT_DATA"):  # where the tasks read their instance files
        env["AAD_KIT_DATA"] = os.environ["AAD_KIT_DATA"]
    return env


class _WorkerProcess:
    """One persistent worker; used by one thread at a time."""

    _ids = itertools.count(1)

    def __init__(self, index: int, switch_uid: bool = True) -> None:
        self.index = index
        self.switch_uid = switch_uid
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmpdir: str | None = None
        self.info: dict[str, Any] = {}
        self.child_pid: int | None = None
        self.starts = 0
        self.evaluations = 0
        self._buf = bytearray()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stats(self) -> dict[str, Any]:
        """This worker's row of :meth:`Sandbox.stats` (also what a Ray actor reports)."""
        return {"index": self.index, "pid": self.pid, "alive": self.alive(),
                "evaluations": self.evaluations, "starts": self.starts}

    def start(self, timeout: float) -> None:
        self.kill()
        self.tmpdir = tempfile.mkdtemp(prefix="aad-sandbox-")
        os.chmod(self.tmpdir, 0o755)
        log_path = os.path.join(self.tmpdir, "worker.log")
        args = [sys.executable, "-m", "aad_kit.sandbox.worker"]
        if not self.switch_uid:
            args.append("--no-switch-uid")
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=self.tmpdir,
                env=_worker_env(self.tmpdir),
                start_new_session=True,
                close_fds=True,
                bufsize=0,
            )
        self.starts += 1
        self._buf = bytearray()
        try:
            hello = self._read(time.monotonic() + timeout, started=False)
        except _WorkerFailure as e:
            raise _WorkerFailure("start", f"the sandbox worker did not start: {e}{self.log_tail()}", False) from None
        if hello.get("event") != "hello":
            raise _WorkerFailure("start", f"unexpected first message from worker: {hello}", False)
        self.info = hello

    def log_tail(self, n: int = 1500) -> str:
        if not self.tmpdir:
            return ""
        try:
            text = Path(self.tmpdir, "worker.log").read_text(errors="replace")
        except OSError:
            return ""
        return f"\nworker log:\n{text[-n:]}" if text.strip() else ""

    def _read(self, deadline: float, started: bool) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        poller = select.poll()  # not select(): a notebook process may hold fds above 1024
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _WorkerFailure("timeout", "the worker did not answer in time", started)
            if not poller.poll(max(1, int(remaining * 1000))):
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise _WorkerFailure("died", "the worker process died", started)
            self._buf += chunk
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        try:
            message = json.loads(line)
        except ValueError:
            raise _WorkerFailure("protocol", f"garbled message from worker: {line[:200]!r}", started) from None
        if not isinstance(message, dict):
            raise _WorkerFailure("protocol", "garbled message from worker", started)
        return message

    def run(self, job: dict[str, Any], *, timeout: float, grace: float, setup_timeout: float) -> dict[str, Any]:
        """Send ``job``; return the worker's result dict or raise :class:`_WorkerFailure`."""
        assert self.proc is not None and self.proc.stdin is not None
        job_id = next(self._ids)
        job = dict(job, id=job_id)
        self.child_pid = None
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode("utf-8", "surrogatepass"))
        except (BrokenPipeError, OSError, ValueError):
            raise _WorkerFailure("died", "the worker process is gone", False) from None
        started = False
        deadline = time.monotonic() + setup_timeout
        while True:
            message = self._read(deadline, started)
            if message.get("id") != job_id:
                continue  # stale message from an earlier job
            event = message.get("event")
            if event == "started":
                started = True
                self.child_pid = message.get("child_pid")
                deadline = time.monotonic() + timeout + grace
            elif event == "result":
                self.evaluations += 1
                result = message.get("result")
                if not isinstance(result, dict):
                    raise _WorkerFailure("protocol", "malformed result from worker", started)
                return result

    def kill(self) -> None:
        """Kill the worker, its candidate and everything running under the candidate's uid."""
        proc, self.proc = self.proc, None
        if proc is not None:
            isolation.killpg_quiet(proc.pid)
            try:
                proc.kill()
            except OSError:
                pass
        if self.child_pid:
            isolation.killpg_quiet(self.child_pid)
            self.child_pid = None
        uid = self.info.get("candidate_uid")
        if uid is not None and os.geteuid() == 0:
            isolation.kill_uid_processes(int(uid))
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._remove_tmpdir()

    def close(self) -> None:
        proc = self.proc
        if proc is None:
            self._remove_tmpdir()
            return
        try:
            assert proc.stdin is not None
            proc.stdin.write(b'{"op": "exit"}\n')
            proc.stdin.close()
            proc.wait(timeout=3)
        except (OSError, ValueError, subprocess.TimeoutExpired, AssertionError):
            pass
        self.kill()

    def _remove_tmpdir(self) -> None:
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def _shutdown(workers: list[_WorkerProcess]) -> None:
    for w in workers:
        try:
            w.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def run_job(
    worker: _WorkerProcess, job: dict[str, Any], *, timeout_s: float, grace_s: float,
    setup_timeout_s: float,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The raw result of ``job`` on ``worker``, and the worker's hello if it was (re)started.

    One function for every executor (the local pool, the Ray actors), so a candidate ends with
    the same status wherever it runs: a worker found dead before the candidate ran is replaced
    and the job retried once; a candidate that stops its worker answering is a ``timeout``;
    any other worker failure is a ``sandbox_error`` carrying the worker's log.
    """
    raw: dict[str, Any] = {}
    hello: dict[str, Any] | None = None
    for attempt in range(2):
        try:
            if not worker.alive():
                worker.start(setup_timeout_s)
                hello = dict(worker.info)
            raw = worker.run(job, timeout=timeout_s, grace=grace_s, setup_timeout=setup_timeout_s)
            break
        except _WorkerFailure as failure:
            tail = worker.log_tail()
            worker.kill()
            if not failure.started and attempt == 0 and failure.kind in ("died", "start"):
                continue  # the worker was gone before the candidate ran: retry on a fresh one
            if failure.started and failure.kind == "timeout":
                raw = {
                    "status": Status.TIMEOUT.value,
                    "message": f"exceeded the time limit of {timeout_s:g} s; the worker "
                    f"stopped answering and was replaced",
                    "runtime_s": timeout_s + grace_s,
                }
            else:
                when = "while running the candidate" if failure.started else "before the candidate ran"
                raw = {
                    "status": Status.SANDBOX_ERROR.value,
                    "message": f"sandbox worker failure {when}: {failure}{tail}",
                }
            break
    return raw, hello


@dataclass(frozen=True)
class _Prepared:
    task: Task
    ref: str
    setting: Setting
    code: str
    code_hash: str
    timeout_s: float
    key: str
    violation: PolicyViolation | None


class Sandbox:
    """Evaluates untrusted candidate programs in isolated, persistent worker processes.

    >>> with Sandbox(SandboxConfig(workers=2, timeout_s=5)) as sb:      # doctest: +SKIP
    ...     results = sb.evaluate_many([("bin_packing", code, None) for code in codes])
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        cache: ResultCache | str | Path | bool | None = None,
    ) -> None:
        self.config = config or SandboxConfig()
        if cache is False or (cache is None and not self.config.use_cache):
            self.cache: ResultCache | None = None
        elif isinstance(cache, ResultCache):
            self.cache = cache
        elif cache is None or cache is True:
            self.cache = ResultCache(self.config.cache_path)
        else:
            self.cache = ResultCache(cache)
        self._remote: Any = None  # RayWorkers when config.executor == "ray"
        if self.config.executor == "ray":
            from aad_kit.sandbox.ray_executor import RayWorkers

            self._remote = RayWorkers(self.config.workers, switch_uid=self.config.switch_uid,
                                      address=self.config.ray_address,
                                      ready_timeout_s=self.config.setup_timeout_s)
        self._workers = [] if self._remote is not None else [
            _WorkerProcess(i, self.config.switch_uid) for i in range(self.config.workers)
        ]
        self._idle: queue.LifoQueue[_WorkerProcess] = queue.LifoQueue()
        for w in reversed(self._workers):
            self._idle.put(w)
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._by_status: Counter[str] = Counter()
        self._isolation: dict[str, Any] = {}
        self._closed = False
        self._finalizer = weakref.finalize(self, _shutdown, self._workers)
        if self._remote is not None:  # its actors and the Ray it may have started
            weakref.finalize(self, self._remote.close)

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop all workers (and whatever their candidates left running)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        self._finalizer()
        if self._remote is not None:
            self._remote.close()  # idempotent: the finalizer's later call does nothing
        if self.cache is not None and self.cache.path is not None:
            self.cache.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- public API ------------------------------------------------------------------------
    def evaluate(self, task: str | Task, code: str, setting: str | Setting | None = None) -> EvalResult:
        """Score one candidate (see :meth:`evaluate_many`)."""
        return self.evaluate_many([(task, code, setting)])[0]

    def evaluate_many(self, jobs: Iterable[Job], progress: bool = False) -> list[EvalResult]:
        """Score ``(task, code, setting)`` jobs in parallel over all workers; results in order.

        Cached results come back with ``cached=True``; duplicates within the batch (same
        normalised code, task, setting) are evaluated once.
        """
        if self._closed:
            raise RuntimeError("this Sandbox is closed")
        prepared = [self._prepare(*job) for job in jobs]
        results: list[EvalResult | None] = [None] * len(prepared)
        waiting: dict[str, list[int]] = {}
        futures: dict[Future[EvalResult], str] = {}
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(prepared), desc="sandbox", unit="eval")
        try:
            for i, p in enumerate(prepared):
                self._count("requests")
                if p.key in waiting:
                    waiting[p.key].append(i)
                    continue
                hit = self.cache.get(p.key) if self.cache is not None else None
                if hit is not None:
                    self._count("cache_hits")
                    results[i] = hit
                    if bar is not None:
                        bar.update(1)
                    continue
                if p.violation is not None:
                    result = EvalResult(
                        task=p.task.name,
                        setting=p.setting.name,
                        code_hash=p.code_hash,
                        status=p.violation.status,
                        message=p.violation.message,
                    )
                    self._record(result, static=True)
                    if self.cache is not None:
                        self.cache.put(p.key, result)
                    results[i] = result
                    waiting[p.key] = [i]
                    if bar is not None:
                        bar.update(1)
                    continue
                waiting[p.key] = [i]
                futures[self._get_executor().submit(self._run, p)] = p.key
            # static rejections duplicated within the batch
            for idxs in waiting.values():
                first = results[idxs[0]]
                if first is not None and len(idxs) > 1:
                    for j in idxs[1:]:
                        results[j] = replace(first, cached=True)
                        self._count("cache_hits")
                    if bar is not None:
                        bar.update(len(idxs) - 1)
            for fut in as_completed(futures):
                key = futures[fut]
                idxs = waiting[key]
                p = prepared[idxs[0]]
                try:
                    result = fut.result()
                except Exception as e:  # noqa: BLE001 - a pool bug must not lose the batch
                    result = EvalResult(
                        task=p.task.name,
                        setting=p.setting.name,
                        code_hash=p.code_hash,
                        status=Status.SANDBOX_ERROR,
                        message=f"sandbox error: {e!r}",
                    )
                results[idxs[0]] = result
                for j in idxs[1:]:
                    results[j] = replace(result, cached=True)
                    self._count("cache_hits")
                if bar is not None:
                    bar.update(len(idxs))
        finally:
            for fut in futures:
                fut.cancel()
            if bar is not None:
                bar.close()
        return [r for r in results if r is not None]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            counts = dict(self._counts)
            by_status = dict(self._by_status)
        if self._remote is not None:
            rows = self._remote.stats()
        else:
            rows = [w.stats() for w in self._workers]
        restarts = sum(max(0, r["starts"] - 1) for r in rows)
        return {
            "requests": counts.get("requests", 0),
            "evaluations": counts.get("evaluations", 0),
            "cache_hits": counts.get("cache_hits", 0),
            "static_rejections": counts.get("static_rejections", 0),
            "worker_restarts": restarts,
            "worker_starts": sum(r["starts"] for r in rows),
            "timeouts": by_status.get(Status.TIMEOUT.value, 0),
            "sandbox_errors": by_status.get(Status.SANDBOX_ERROR.value, 0),
            "by_status": by_status,
            "workers": rows,
            "executor": self.config.executor,
            "isolation": dict(self._isolation),
        }

    def info(self) -> dict[str, Any]:
        """What isolation the workers actually got (starts one worker if none is running)."""
        if not self._isolation and self._remote is not None:
            self._note_isolation(self._remote.hello(self.config.setup_timeout_s))
        if not self._isolation:
            worker = self._idle.get()
            try:
                if not worker.alive():
                    worker.start(self.config.setup_timeout_s)
                    self._note_isolation(worker.info)
            finally:
                self._idle.put(worker)
        c = self.config
        return {
            **self._isolation,
            "workers": c.workers,
            "executor": c.executor,
            "timeout_s": c.timeout_s,
            "timeout_scale": c.timeout_scale,
            "memory_mb": c.memory_mb,
            "max_output_bytes": c.max_output_bytes,
            "enforce_policy": c.enforce_policy,
            "allowed_imports": sorted(c.allowed_imports),
        }

    # -- internals -------------------------------------------------------------------------
    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _record(self, result: EvalResult, static: bool = False) -> None:
        with self._lock:
            self._by_status[result.status.value] += 1
            self._counts["static_rejections" if static else "evaluations"] += 1

    def _note_isolation(self, hello: dict[str, Any]) -> None:
        """Keep what isolation a worker reported when it started (its hello message)."""
        keys = ("netns", "network_isolated", "privileges", "candidate_uid", "subreaper", "python", "numpy")
        with self._lock:
            self._isolation = {k: hello.get(k) for k in keys}

    def _get_executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("this Sandbox is closed")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.config.workers, thread_name_prefix="aad-sandbox"
                )
            return self._executor

    def _prepare(self, task: str | Task, code: str, setting: str | Setting | None = None) -> _Prepared:
        t = get_task(task)
        ref = task_ref(task)
        s = t.setting(setting)
        registered = t.settings.get(s.name)
        if registered is None or registered != s:
            raise ValueError(
                f"setting {s.name!r} is not one of task {t.name!r}'s registered settings; the "
                "sandbox workers can only rebuild registered settings"
            )
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, not {type(code).__name__}")
        c = self.config
        timeout = float(c.timeout_s if c.timeout_s is not None else s.timeout_s * c.timeout_scale)
        h = _code_hash(code)
        limits = limits_fingerprint(timeout, c.memory_mb, c.enforce_policy, c.allowed_imports)
        violation = check_code(
            code,
            t.function_name,
            allowed_imports=c.allowed_imports,
            enforce_policy=c.enforce_policy,
            signature=getattr(t, "signature", None),
        )
        return _Prepared(t, ref, s, code, h, timeout, cache_key(ref, s.name, h, limits), violation)

    def _run(self, p: _Prepared) -> EvalResult:
        if self._remote is not None:
            c = self.config
            raw, hello = self._remote.run(self._job(p), timeout_s=p.timeout_s, grace_s=c.grace_s,
                                          setup_timeout_s=c.setup_timeout_s)
            if hello is not None:
                self._note_isolation(hello)
            return self._finish(p, raw)
        worker = self._idle.get()
        try:
            return self._run_on(worker, p)
        finally:
            self._idle.put(worker)

    def _job(self, p: _Prepared) -> dict[str, Any]:
        """The job message for one candidate (also what the one-shot executor sends)."""
        c = self.config
        return {
            "op": "eval",
            "task": p.ref,
            "setting": p.setting.name,
            "code": p.code,
            "timeout_s": p.timeout_s,
            "memory_mb": c.memory_mb,
            "max_output_bytes": c.max_output_bytes,
            "allowed_imports": sorted(c.allowed_imports),
            "enforce_policy": c.enforce_policy,
            "max_processes": c.max_processes,
        }

    def _run_on(self, worker: _WorkerProcess, p: _Prepared) -> EvalResult:
        c = self.config
        raw, hello = run_job(worker, self._job(p), timeout_s=p.timeout_s, grace_s=c.grace_s,
                             setup_timeout_s=c.setup_timeout_s)
        if hello is not None:
            self._note_isolation(hello)
        return self._finish(p, raw)

    def _finish(self, p: _Prepared, raw: dict[str, Any]) -> EvalResult:
        """Turn a raw result dict (from a worker or a one-shot process) into an EvalResult."""
        try:
            status = Status(raw.get("status"))
        except ValueError:
            status = Status.SANDBOX_ERROR
            raw = {"message": f"unknown status from worker: {raw.get('status')!r}"}
        ok = status is Status.OK
        details = raw.get("details") or {}
        result = EvalResult(
            task=p.task.name,
            setting=p.setting.name,
            code_hash=p.code_hash,
            status=status,
            score=float(raw["score"]) if ok and raw.get("score") is not None else None,
            metric=float(raw["metric"]) if ok and raw.get("metric") is not None else None,
            message=str(raw.get("message", "")),
            runtime_s=float(raw.get("runtime_s") or 0.0),
            stdout=str(raw.get("stdout", "")),
            details=details if isinstance(details, dict) else {"details": details},
        )
        self._record(result)
        if self.cache is not None and status is not Status.SANDBOX_ERROR:
            self.cache.put(p.key, result)
        return result


# ---------------------------------------------------------------------------------------------
_DEFAULT: Sandbox | None = None
_DEFAULT_LOCK = threading.Lock()


def default_sandbox() -> Sandbox:
    """The shared sandbox used by :func:`evaluate` without a ``sandbox`` (created on first use,
    closed at exit).

    Its cache is in memory unless ``AAD_KIT_SANDBOX_CACHE`` names a sqlite file;
    ``AAD_KIT_SANDBOX_WORKERS`` overrides the number of workers.
    """
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None or _DEFAULT.closed:
            workers = os.environ.get("AAD_KIT_SANDBOX_WORKERS")
            config = SandboxConfig(
                workers=int(workers) if workers else (os.cpu_count() or 1),
                cache_path=os.environ.get("AAD_KIT_SANDBOX_CACHE") or None,
            )
            _DEFAULT = Sandbox(config)
            atexit.register(_DEFAULT.close)
        return _DEFAULT


def sandbox_info() -> dict[str, Any]:
    """Isolation actually in effect for the default sandbox (network namespace, uid, limits)."""
    return default_sandbox().info()


def evaluate(task: str | Task, code: str, setting: str | Setting | None = None,
             sandbox: Sandbox | None = None) -> EvalResult:
    """Score untrusted source ``code`` for ``task`` (a :class:`~aad_kit.tasks.Task` or a name)
    on ``setting`` (default: the task's default setting) in ``sandbox`` (default: the shared
    :func:`default_sandbox`). The sandboxed counterpart of :meth:`Task.run`, which calls a
    trusted callable in-process."""
    t = get_task(task)
    return (sandbox or default_sandbox()).evaluate(task, code, t.setting(setting).name)


def evaluate_many(jobs: Sequence[Job], progress: bool = False) -> list[EvalResult]:
    """:meth:`Sandbox.evaluate_many` on the default sandbox."""
    return default_sandbox().evaluate_many(jobs, progress=progress)


__all__ = ["Sandbox", "default_sandbox", "evaluate", "evaluate_many", "sandbox_info"]
