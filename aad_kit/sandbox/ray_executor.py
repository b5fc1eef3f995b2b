"""``executor="ray"``: the sandbox's workers as Ray actors, so a cluster of CPU machines evaluates.

Why actors and not a new worker: each actor owns one ordinary sandbox worker process
(:class:`~aad_kit.sandbox.pool._WorkerProcess`, the same ``python -m aad_kit.sandbox.worker``
with its forked child, rlimits, uid switch and network namespace) and runs every job through
:func:`~aad_kit.sandbox.pool.run_job`, the function the local pool uses. Limits, timeouts and
statuses are therefore the local pool's by construction; only *where* the worker lives changes.
The parent keeps the static policy check, the result cache and the job message, so rejected
code never leaves the parent's machine and a cached result never costs a round trip.

* One actor per ``SandboxConfig.workers``, each asking Ray for one CPU; Ray places them on the
  cluster's nodes. Every node needs the kit installed (same version) and, for the uid switch,
  must run Ray as root; otherwise the worker runs without it and says so in ``info()``.
* ``ray_address`` (or ``$RAY_ADDRESS``) joins a running cluster; with neither, a Ray instance
  of this machine is started by the first sandbox that needs it and kept for the process's
  later sandboxes (starting one costs ~20 s; notebook 03 opens two in a row), then shut down
  at interpreter exit or by :func:`shutdown_local_ray`. Its actors end with their sandbox.
* An actor that dies (its node went away) is replaced and the job retried once; a second loss
  is a ``sandbox_error`` naming Ray, never a silent drop.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
from typing import Any

from aad_kit.result import Status

_INSTALL_HINT = "executor='ray' needs Ray: pip install 'aad-kit[ray]' (or pip install ray)"


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(_INSTALL_HINT) from err
    return ray


class _RemoteWorker:
    """Body of the Ray actor: one sandbox worker process on whichever node Ray chose."""

    def __init__(self, index: int, switch_uid: bool) -> None:
        from aad_kit.sandbox.pool import _WorkerProcess

        self.worker = _WorkerProcess(index, switch_uid)

    def run(self, job: dict[str, Any], timeout_s: float, grace_s: float,
            setup_timeout_s: float) -> tuple[dict[str, Any], dict[str, Any] | None]:
        from aad_kit.sandbox.pool import run_job

        return run_job(self.worker, job, timeout_s=timeout_s, grace_s=grace_s,
                       setup_timeout_s=setup_timeout_s)

    def hello(self, setup_timeout_s: float) -> dict[str, Any]:
        if not self.worker.alive():
            self.worker.start(setup_timeout_s)
        return dict(self.worker.info)

    def stats(self) -> dict[str, Any]:
        import ray

        return {**self.worker.stats(), "node": ray.util.get_node_ip_address()}

    def close(self) -> None:
        self.worker.close()


_RAY_LOCK = threading.Lock()
_users = 0  # RayWorkers alive in this process
_started_here = False  # whether this process started the Ray instance they share


def _acquire_ray(workers: int, address: str | None) -> Any:
    """Ray, initialised once per process (a local one is kept for later sandboxes)."""
    global _users, _started_here
    ray = _import_ray()
    with _RAY_LOCK:
        if not ray.is_initialized():
            address = address or os.environ.get("RAY_ADDRESS") or None
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning",
                                       "log_to_driver": False}
            if address is None:  # a Ray of this machine, sized so every actor gets its CPU
                options.update(num_cpus=max(workers, os.cpu_count() or 1),
                               object_store_memory=100 * 1024 * 1024)
            ray.init(address=address, **options)
            if address is None and not _started_here:
                atexit.register(shutdown_local_ray)
            _started_here = address is None
        _users += 1
    return ray


def _release_ray() -> None:
    global _users
    with _RAY_LOCK:
        _users -= 1


def shutdown_local_ray() -> bool:
    """Shut down the Ray instance the kit started on this machine, if no sandbox still uses it;
    returns whether it did. A Ray joined by address, or started by the caller, is left alone."""
    global _started_here
    with _RAY_LOCK:
        if not _started_here or _users > 0:
            return False
        import ray

        if ray.is_initialized():
            ray.shutdown()
        _started_here = False
        return True


class RayWorkers:
    """``workers`` Ray actors, lent to one job at a time (the pool's idle queue, remotely)."""

    def __init__(self, workers: int, *, switch_uid: bool = True, address: str | None = None,
                 call_margin_s: float = 60.0, ready_timeout_s: float = 120.0) -> None:
        ray = _acquire_ray(workers, address)
        self._ray = ray
        self._closed = False
        self.switch_uid = switch_uid
        self.call_margin_s = call_margin_s
        self._actor_class = ray.remote(num_cpus=1, max_concurrency=1)(_RemoteWorker)
        self._actors = [self._new_actor(i) for i in range(workers)]
        self._idle: queue.LifoQueue[int] = queue.LifoQueue()
        for i in reversed(range(workers)):
            self._idle.put(i)
        self._lock = threading.Lock()
        self.replaced = 0
        self._wait_until_placed(ready_timeout_s)

    def _wait_until_placed(self, timeout_s: float) -> None:
        """Fail now, and say why, if the cluster cannot place every actor (each wants a CPU)."""
        ray = self._ray
        try:
            ray.get([a.stats.remote() for a in self._actors], timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            total = ray.cluster_resources().get("CPU", 0)
            free = ray.available_resources().get("CPU", 0)
            self.close()
            raise RuntimeError(
                f"the Ray cluster did not place the sandbox's {len(self._actors)} worker actors "
                f"(1 CPU each) within {timeout_s:g} s: it has {total:g} CPUs, {free:g} free. "
                "Use fewer workers, close other sandboxes on this cluster, or add nodes."
            ) from None

    def _new_actor(self, index: int) -> Any:
        return self._actor_class.remote(index, self.switch_uid)

    def run(self, job: dict[str, Any], *, timeout_s: float, grace_s: float,
            setup_timeout_s: float) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """What :func:`~aad_kit.sandbox.pool.run_job` returns, computed on an actor."""
        ray = self._ray
        index = self._idle.get()
        try:
            # The worker's own deadlines come first; this one only catches a lost node.
            deadline = setup_timeout_s + timeout_s + grace_s + self.call_margin_s
            last = ""
            for _attempt in range(2):
                actor = self._actors[index]
                try:
                    return ray.get(actor.run.remote(job, timeout_s, grace_s, setup_timeout_s),
                                   timeout=deadline)
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
                    last = f"{type(err).__name__}: {err}"
                    with self._lock:
                        ray.kill(actor, no_restart=True)
                        self._actors[index] = self._new_actor(index)
                        self.replaced += 1
            return {"status": Status.SANDBOX_ERROR.value,
                    "message": f"the Ray actor running this candidate was lost twice: {last}"}, None
        finally:
            self._idle.put(index)

    def hello(self, setup_timeout_s: float) -> dict[str, Any]:
        return self._ray.get(self._actors[0].hello.remote(setup_timeout_s))

    def stats(self) -> list[dict[str, Any]]:
        return self._ray.get([a.stats.remote() for a in self._actors])

    def close(self) -> None:
        """Stop every actor's worker, then the actors (and the Ray started for them)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        ray = self._ray
        try:
            if ray.is_initialized():
                try:
                    ray.get([a.close.remote() for a in self._actors], timeout=30)
                except Exception:  # noqa: BLE001 - best effort: a lost actor has no worker
                    pass
                for actor in self._actors:
                    try:
                        ray.kill(actor, no_restart=True)
                    except Exception:  # noqa: BLE001
                        pass
        finally:
            _release_ray()


__all__ = ["RayWorkers"]
