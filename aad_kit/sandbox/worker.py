"""A sandbox worker ("zygote"): ``python -m aad_kit.sandbox.worker``.

Started by :class:`aad_kit.sandbox.Sandbox` as a fresh interpreter (never forked from the
parent, which may hold torch and threads) with a clean environment and its own temp dir. It
speaks JSON lines: jobs on stdin, events on the original stdout (fd 1 itself is pointed at
/dev/null so nothing else can write into the protocol).

Start-up, while still single-threaded: enter a new network namespace, become a child
subreaper, then import numpy and the allow-listed modules so that every candidate starts from
a warm interpreter. Per job the worker builds (once) and keeps the task's instances for the
setting in its own memory, then forks a child per candidate, which inherits them for free.

The child: new session; fds 0-2 on /dev/null and every other fd closed except its result
pipe; rlimits (address space = current size + ``memory_mb``, CPU, FSIZE 0, NPROC, NOFILE,
no core); as root, a uid of its own with no capability but read access, ``no_new_privs`` and a
parent-death signal; random and numpy.random seeded with 0; stdout/stderr replaced by a
capped in-memory writer; the code executed in a namespace with restricted builtins and module
proxies (unless the policy is off); the task's ``measure`` run; one JSON line written; then
``os._exit``. The worker enforces the wall-clock timeout, kills the child's process group and
everything running under the candidate uid, reaps all zombies, and classifies how the child
ended (TIMEOUT on the deadline or SIGXCPU, MEMORY_LIMIT on a memory death, ...).
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import sys
import time
import types
from typing import Any

from aad_kit.sandbox import isolation

PRELOAD = (
    "numpy",
    "numpy.linalg",
    "numpy.random",
    "numpy.fft",
    "numpy.typing",
    "traceback",
    "linecache",
    "json",
)

_MAX_RESULT_BYTES = 32 * 1024 * 1024


class CappedWriter:
    """Minimal text stream keeping the first ``cap`` bytes (UTF-8) of what is written."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, cap: int) -> None:
        self.cap = max(0, int(cap))
        self._parts: list[str] = []
        self._kept = 0  # characters kept (an upper bound on bytes / 4)
        self.total = 0  # characters written

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s)
        if self._kept < self.cap:
            piece = s[: self.cap - self._kept]
            self._parts.append(piece)
            self._kept += len(piece)
        self.total += n
        return n

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def getvalue(self) -> tuple[str, int]:
        """(captured text of at most ``cap`` UTF-8 bytes, characters dropped)."""
        text = "".join(self._parts)
        data = text.encode("utf-8", "replace")
        dropped = self.total - len(text)
        if len(data) > self.cap or dropped:
            note = f"\n[... output truncated: {self.total} characters written, cap {self.cap} bytes]\n"
            room = max(0, self.cap - len(note.encode()))
            text = data[:room].decode("utf-8", "ignore") + (note if self.cap >= len(note) else "")
            dropped = self.total - len(text)
        return text, max(0, dropped)


# ---------------------------------------------------------------------------------------------
# inside the forked child


def _safe_str(obj: Any, limit: int = 1000) -> str:
    try:
        text = str(obj)
    except BaseException:  # noqa: BLE001 - candidate-controlled __str__
        text = "<unprintable>"
    return text if len(text) <= limit else text[:limit] + "..."


def _traceback_tail(exc: BaseException, limit: int = 1500) -> str:
    """The last frames of ``exc``'s traceback, without the sandbox's own frames."""
    import traceback

    try:
        frames = [
            f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__
        ][-6:]
        lines = ["Traceback (most recent call last):\n"]
        lines += traceback.format_list(frames)
        lines += traceback.format_exception_only(type(exc), exc)
        text = "".join(lines)
    except BaseException:  # noqa: BLE001
        return ""
    return text if len(text) <= limit else "..." + text[-limit:]


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(out) < 10 and cur not in out:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def classify_exception(exc: BaseException, memory_mb: int) -> dict[str, Any]:
    from aad_kit.result import Status
    from aad_kit.sandbox.guard import ForbiddenCall, ForbiddenImport
    from aad_kit.tasks.base import InvalidOutput

    chain = _chain(exc)
    for e in chain:
        if isinstance(e, ForbiddenImport):
            return {"status": Status.FORBIDDEN_IMPORT.value, "message": f"ForbiddenImport: {_safe_str(e)}"}
        if isinstance(e, ForbiddenCall):
            return {"status": Status.FORBIDDEN_CALL.value, "message": f"ForbiddenCall: {_safe_str(e)}"}
    name = type(exc).__name__
    if isinstance(exc, InvalidOutput):
        return {"status": Status.INVALID_OUTPUT.value, "message": f"invalid output: {_safe_str(exc)}"}
    text = _safe_str(exc)
    if any(isinstance(e, MemoryError) for e in chain):
        return {
            "status": Status.MEMORY_LIMIT.value,
            "message": f"{name}{': ' + text if text else ''} (the candidate exceeded the memory "
            f"cap of {memory_mb} MB)",
        }
    message = f"{name}: {text}" if text else name
    if isinstance(exc, SystemExit):
        message += " (the candidate raised SystemExit / called sys.exit)"
    tail = _traceback_tail(exc)
    if tail:
        message += "\n" + tail
    return {"status": Status.RUNTIME_ERROR.value, "message": message}


def run_candidate(
    code: str,
    function_name: str,
    task: Any,
    setting: Any,
    instances: Any,
    *,
    allowed_imports: Any,
    enforce_policy: bool,
    memory_mb: int,
) -> dict[str, Any]:
    """Execute ``code`` and score it with ``task.measure``; never raises."""
    import linecache

    from aad_kit.result import Status
    from aad_kit.sandbox.guard import candidate_namespace
    from aad_kit.tasks.base import Measurement

    linecache.cache["<candidate>"] = (len(code), None, code.splitlines(True), "<candidate>")
    t0 = time.perf_counter()
    try:
        compiled = compile(code, "<candidate>", "exec", dont_inherit=True)
    except SyntaxError as e:  # e.g. ``return`` outside a function: parses, does not compile
        return {
            "status": Status.SYNTAX_ERROR.value,
            "message": f"SyntaxError: {e.msg} (line {e.lineno})",
        }
    except BaseException as e:  # noqa: BLE001
        return {"status": Status.SYNTAX_ERROR.value, "message": f"cannot compile: {_safe_str(e)}"}
    try:
        # a real module (only ever in this throw-away child), so that library code which
        # looks up ``sys.modules[cls.__module__]`` (dataclasses) sees the restricted builtins
        module = types.ModuleType("candidate")
        module.__dict__.update(candidate_namespace(allowed_imports, enforce_policy))
        sys.modules["candidate"] = module
        namespace = module.__dict__
        exec(compiled, namespace)
        fn = namespace.get(function_name)
        if fn is None or not callable(fn):
            return {
                "status": Status.MISSING_FUNCTION.value,
                "message": f"after running the program, `{function_name}` is not a callable "
                "defined at module top level",
                "runtime_s": time.perf_counter() - t0,
            }
        measurement = task.measure(fn, instances, setting)
        runtime = time.perf_counter() - t0
    except BaseException as e:  # noqa: BLE001 - every way a candidate can fail
        out = classify_exception(e, memory_mb)
        out["runtime_s"] = time.perf_counter() - t0
        return out
    if not isinstance(measurement, Measurement):
        return {
            "status": Status.SANDBOX_ERROR.value,
            "message": f"{type(task).__name__}.measure returned {type(measurement).__name__}, "
            "not a Measurement",
        }
    return {
        "status": Status.OK.value,
        "score": float(measurement.score),
        "metric": float(measurement.metric),
        "details": measurement.details,
        "runtime_s": runtime,
    }


def _close_other_fds(keep: set[int]) -> None:
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def _child_main(
    job: dict[str, Any],
    task: Any,
    setting: Any,
    instances: Any,
    wfd: int,
    uid: int | None,
    keep_read: bool = True,
    cpu_offset_s: float = 0.0,
) -> None:
    """Set up the isolation of a candidate process, run the candidate, write one JSON line.

    Runs in the forked child of a worker, or as the whole of a one-shot interpreter
    (``benchmarks/lib/oneshot.py``), which passes the CPU time it used before the candidate
    as ``cpu_offset_s`` so that RLIMIT_CPU leaves the candidate the same budget.
    """
    memory_fallback = (
        b'{"status": "memory_limit", "message": "MemoryError while reporting the result"}\n'
    )
    code = 0
    try:
        try:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            _close_other_fds({0, 1, 2, wfd})
            worker_pid = os.getppid()
            memory_mb = int(job["memory_mb"])
            timeout = float(job["timeout_s"])
            isolation.apply_limits(
                memory_bytes=isolation.vm_size_bytes() + memory_mb * 2**20,
                cpu_s=timeout + 1 + cpu_offset_s,
                max_processes=int(job.get("max_processes", 32)),
            )
            if uid is not None:
                isolation.drop_privileges(uid, keep_read_access=keep_read)
                isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
                if os.getppid() != worker_pid:
                    os._exit(1)
            import random

            import numpy as np

            random.seed(0)
            np.random.seed(0)
            writer = CappedWriter(int(job["max_output_bytes"]))
            sys.stdout = sys.stderr = writer  # type: ignore[assignment]
            sys.stdin = None  # type: ignore[assignment]
        except BaseException as e:  # noqa: BLE001
            result: dict[str, Any] = {
                "status": "sandbox_error",
                "message": f"setting up the candidate process failed: {e!r}",
            }
        else:
            result = run_candidate(
                job["code"],
                task.function_name,
                task,
                setting,
                instances,
                allowed_imports=job["allowed_imports"],
                enforce_policy=bool(job["enforce_policy"]),
                memory_mb=memory_mb,
            )
            sys.stdout = sys.__stdout__
            sys.stderr = sys.__stderr__
            text, dropped = writer.getvalue()
            result["stdout"] = text
            if dropped:
                result.setdefault("details", {})
                if isinstance(result["details"], dict):
                    result["details"] = dict(result["details"], stdout_dropped_chars=dropped)
        try:
            data = (json.dumps(result, default=_safe_str) + "\n").encode("utf-8", "replace")
        except MemoryError:
            data = memory_fallback
        except BaseException as e:  # noqa: BLE001
            data = (
                json.dumps({"status": "runtime_error", "message": f"result not serialisable: {e!r}"})
                + "\n"
            ).encode()
        view = memoryview(data)
        while view:
            n = os.write(wfd, view)
            view = view[n:]
    except MemoryError:
        try:
            os.write(wfd, memory_fallback)
        except BaseException:  # noqa: BLE001
            code = 3
    except BaseException:  # noqa: BLE001
        code = 2
    os._exit(code)


# ---------------------------------------------------------------------------------------------
# in the worker


class Worker:
    def __init__(self, switch_uid: bool = True) -> None:
        self.netns = isolation.enter_network_namespace()  # before any thread exists
        self.subreaper = isolation.set_child_subreaper()
        self.proto_out = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)
        os.close(devnull)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent's Ctrl-C is for the parent
        self.preloaded = self._preload()
        self.uid: int | None = None
        self.keep_read = True
        self.privileges = (
            self._setup_privileges() if switch_uid else "unchanged: disabled by the configuration"
        )
        self.instances: dict[tuple[str, str], Any] = {}

    # -- start-up --------------------------------------------------------------------------
    @staticmethod
    def _preload() -> list[str]:
        import importlib

        from aad_kit.sandbox.config import DEFAULT_ALLOWED_IMPORTS

        done = []
        for name in (*PRELOAD, *sorted(DEFAULT_ALLOWED_IMPORTS)):
            try:
                importlib.import_module(name)
                done.append(name)
            except Exception:  # noqa: BLE001
                pass
        import random

        import numpy as np

        import aad_kit.result  # noqa: F401
        import aad_kit.sandbox.guard  # noqa: F401
        import aad_kit.tasks  # noqa: F401

        # Pay one-off lazy initialisation here, once, instead of in every child (the first
        # np.random.seed alone costs ~10 ms).
        random.seed(0)
        np.random.seed(0)
        classify_exception(ValueError("warm-up"), 0)
        return done

    def _setup_privileges(self) -> str:
        if os.geteuid() != 0:
            return "unchanged: the worker is not root (cannot switch uid)"
        uid = isolation.UID_BASE + os.getpid()
        isolation.kill_uid_processes_as(uid)  # stale processes of a dead worker with our pid
        reasons = []
        # Least privilege first: a plain unprivileged uid, if it can read the interpreter's
        # files. Only if it cannot (e.g. Python under a root-only prefix such as /root/.pyenv)
        # keep CAP_DAC_READ_SEARCH, which lets the candidate *read* any file.
        for keep_read in (False, True):
            answer = self._probe_drop(uid, keep_read)
            if answer == "ok":
                self.uid, self.keep_read = uid, keep_read
                caps = "CAP_DAC_READ_SEARCH only" if keep_read else "none"
                return f"uid {uid}, capabilities: {caps}, no_new_privs"
            reasons.append(answer)
        return f"unchanged: switching to an unprivileged uid failed ({'; '.join(reasons)})"

    @staticmethod
    def _probe_drop(uid: int, keep_read: bool) -> str:
        import numpy

        import aad_kit

        paths = [
            os.path.dirname(os.__file__),
            os.path.dirname(numpy.__file__),
            os.path.dirname(aad_kit.__file__),
        ]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                isolation.drop_privileges(uid, keep_read_access=keep_read)
                for p in paths:
                    os.listdir(p)
                os.write(w, b"ok")
            except BaseException as e:  # noqa: BLE001
                os.write(w, repr(e).encode()[:300])
            os._exit(0)
        os.close(w)
        answer = os.read(r, 1000).decode(errors="replace")
        os.close(r)
        os.waitpid(pid, 0)
        return answer

    def hello(self) -> dict[str, Any]:
        import numpy

        return {
            "event": "hello",
            "pid": os.getpid(),
            "netns": self.netns,
            "network_isolated": self.netns in ("netns", "userns+netns"),
            "privileges": self.privileges,
            "candidate_uid": self.uid,
            "subreaper": self.subreaper,
            "python": sys.version.split()[0],
            "numpy": numpy.__version__,
            "preloaded": len(self.preloaded),
        }

    # -- protocol --------------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, default=str) + "\n").encode("utf-8", "replace")
        view = memoryview(data)
        while view:
            n = os.write(self.proto_out, view)
            view = view[n:]

    def serve(self) -> None:
        self.send(self.hello())
        stdin = sys.stdin.buffer
        while True:
            line = stdin.readline()
            if not line:
                break
            try:
                message = json.loads(line)
            except ValueError:
                continue
            op = message.get("op")
            if op == "exit":
                break
            if op == "ping":
                self.send({"event": "pong", "id": message.get("id")})
                continue
            if op != "eval":
                continue
            try:
                result = self.evaluate(message)
            except BaseException as e:  # noqa: BLE001 - a worker bug must not kill the pool
                import traceback

                result = {
                    "status": "sandbox_error",
                    "message": f"worker error: {e!r}\n{traceback.format_exc()[-1500:]}",
                }
            self.send({"event": "result", "id": message.get("id"), "result": result})
        self.cleanup(None)

    # -- one candidate ---------------------------------------------------------------------
    def _instances(self, ref: str, setting_name: str) -> tuple[Any, Any, Any]:
        from aad_kit.tasks import get_task

        task = get_task(ref)
        setting = task.setting(setting_name)
        key = (ref, setting.name)
        if key not in self.instances:
            self.instances[key] = task.build_instances(setting)
        return task, setting, self.instances[key]

    def evaluate(self, job: dict[str, Any]) -> dict[str, Any]:
        try:
            task, setting, instances = self._instances(job["task"], job["setting"])
        except Exception as e:  # noqa: BLE001
            return {
                "status": "sandbox_error",
                "message": f"the worker could not load task {job['task']!r} / setting "
                f"{job['setting']!r}: {e!r} (a task class must be importable by module path)",
            }
        timeout = float(job["timeout_s"])
        memory_mb = int(job["memory_mb"])
        base_rss = isolation.rss_bytes()
        gc.freeze()  # the child's garbage collector then leaves inherited pages alone (no COW)
        r, w = os.pipe()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            _child_main(job, task, setting, instances, w, self.uid, self.keep_read)
        os.close(w)
        self.send({"event": "started", "id": job.get("id"), "child_pid": pid})
        try:
            raw, timed_out = self._wait(pid, r, t0 + timeout)
        finally:
            os.close(r)
        if timed_out:
            isolation.killpg_quiet(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _, wstatus, rusage = os.wait4(pid, 0)
        wall = time.monotonic() - t0
        self.cleanup(pid)  # anything the candidate left behind
        result = self._parse(raw)
        if result is None:
            result = self._classify_death(
                wstatus, rusage, timed_out, timeout, memory_mb, base_rss, wall, raw
            )
        result.setdefault("runtime_s", wall)
        return result

    @staticmethod
    def _wait(pid: int, rfd: int, deadline: float) -> tuple[bytes, bool]:
        """Read the child's result line until it is complete and the child exited, or deadline."""
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None
        poller = select.poll()
        poller.register(rfd, select.POLLIN | select.POLLHUP)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        buf = bytearray()
        reading, exited = True, False
        try:
            while True:
                if (not reading or b"\n" in buf) and exited:
                    return bytes(buf), False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return bytes(buf), True
                wait_ms = remaining * 1000 if pidfd is not None else min(remaining * 1000, 5)
                events = poller.poll(max(1, int(wait_ms)))
                for fd, _ in events:
                    if fd == rfd and reading:
                        chunk = os.read(rfd, 1 << 16)
                        if not chunk:
                            reading = False
                            poller.unregister(rfd)
                        else:
                            buf += chunk
                            if b"\n" in buf or len(buf) > _MAX_RESULT_BYTES:
                                reading = False
                                poller.unregister(rfd)
                    elif fd == pidfd:
                        exited = True
                        poller.unregister(pidfd)
                if pidfd is None and not exited:
                    exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
                if exited and reading:
                    # the child is gone; take what is in the pipe without waiting for EOF
                    # (a grandchild may still hold the write end)
                    os.set_blocking(rfd, False)
                    try:
                        while True:
                            chunk = os.read(rfd, 1 << 16)
                            if not chunk:
                                break
                            buf += chunk
                    except BlockingIOError:
                        pass
                    reading = False
        finally:
            if pidfd is not None:
                os.close(pidfd)

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any] | None:
        if b"\n" not in raw:  # nothing, or cut off mid-write: classify how the child died
            return None
        line = raw.split(b"\n", 1)[0]
        try:
            result = json.loads(line)
        except ValueError:
            return {
                "status": "runtime_error",
                "message": "the candidate process wrote a corrupt result (it tampered with the "
                "sandbox's result pipe)",
            }
        if not isinstance(result, dict) or "status" not in result:
            return {"status": "runtime_error", "message": "the candidate process wrote a malformed result"}
        return result

    @staticmethod
    def _classify_death(
        wstatus: int,
        rusage: Any,
        timed_out: bool,
        timeout: float,
        memory_mb: int,
        base_rss: int,
        wall: float,
        raw: bytes,
    ) -> dict[str, Any]:
        cpu = rusage.ru_utime + rusage.ru_stime
        growth = rusage.ru_maxrss * 1024 - base_rss
        near_cap = growth >= 0.5 * memory_mb * 2**20
        if timed_out:
            return {
                "status": "timeout",
                "message": f"exceeded the time limit of {timeout:g} s (wall clock); the candidate "
                "and its processes were killed",
                "runtime_s": wall,
            }
        if os.WIFSIGNALED(wstatus):
            sig = os.WTERMSIG(wstatus)
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= max(1, timeout)):
                return {
                    "status": "timeout",
                    "message": f"exceeded the CPU time limit ({cpu:.1f} s CPU used)",
                }
            if near_cap and sig in (
                signal.SIGKILL,
                signal.SIGSEGV,
                signal.SIGBUS,
                signal.SIGABRT,
            ):
                return {
                    "status": "memory_limit",
                    "message": f"killed by {name} after growing by {growth / 2**20:.0f} MB "
                    f"(memory cap: {memory_mb} MB)",
                }
            return {"status": "runtime_error", "message": f"the candidate process was killed by {name}"}
        code = os.WEXITSTATUS(wstatus)
        extra = " (result truncated)" if raw else ""
        return {
            "status": "runtime_error",
            "message": f"the candidate process exited with code {code} without a result{extra} "
            "(os._exit / a crash in native code?)",
        }

    def cleanup(self, pgid: int | None) -> None:
        """Kill and reap every descendant (process group, candidate uid, /proc tree)."""
        if pgid is not None:
            isolation.killpg_quiet(pgid)
        for attempt in range(200):
            if not self._reap():
                return
            if pgid is not None:
                isolation.killpg_quiet(pgid)
            if self.uid is not None:
                isolation.kill_uid_processes_as(self.uid)
            for pid in isolation.descendants(os.getpid()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.002 if attempt < 10 else 0.02)

    @staticmethod
    def _reap() -> bool:
        """Reap zombies; True if live children remain."""
        try:
            while True:
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    return True
        except ChildProcessError:
            return False


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    Worker(switch_uid="--no-switch-uid" not in args).serve()


if __name__ == "__main__":
    main()
