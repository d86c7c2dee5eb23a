"""Where independent pieces of an audit run: in this process, in local worker processes, or as tasks on Ray.

An audit's heavy parts split into independent tasks: one reference model each (LiRA, RMIA, the shadow-model
attack), one shard of the attacked records each (the evasion audit). An :class:`Executor` runs a list of such tasks
and returns their results in the order given, whatever order they finished in:

- :class:`LocalExecutor` (the default, nothing to install or start): one task after another in this process, or
  ``workers`` processes forked from it (as PyTorch's DataLoader workers are on Linux: the shared arrays are
  inherited, not copied, and a user's script needs no ``__main__`` guard);
- :class:`RayExecutor` (``--executor ray``, the ``ray`` extra): tasks on a Ray cluster (Moritz et al. 2018, "Ray: A
  Distributed Framework for Emerging AI Applications"), or on a Ray instance started on this machine when no
  address is given. The shared arrays go into Ray's object store once (``ray.put``) and every task reads them from
  there; a task whose worker dies is retried by Ray (``max_retries``); Ctrl-C cancels the tasks under way.

A task is a module-level function ``fn(shared, *item)``: it travels by reference (its module name), never as
pickled code, and what it needs beyond the shared arrays comes in ``item`` (plain values, arrays, modelsec's own
dataclasses; a model travels as safetensors bytes and its model card, see :mod:`modelsec.models.transport`).
Results do not depend on the executor: every random choice of a task is a function of the audit's seed and the
task's index (:func:`modelsec.core.seeding.spawned_seeds`), never of which worker ran it or when.

When a run stops, nothing of it keeps running: a task that raises (its own exception reaches the caller, not a
wrapper), Ctrl-C, or an exception in ``on_result`` ends the local worker processes and cancels the Ray tasks
submitted. A worker that dies (killed, out of memory) ends the run with :class:`WorkerLostError` once Ray's
retries are used up, at once for a local worker (a local task is not rerun).
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import importlib.util
import multiprocessing
import os
import platform
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

import torch

from modelsec.core.errors import ConfigError, ModelsecError, printable
from modelsec.core.options import OneOf
from modelsec.core.progress import NullProgress, Progress

R = TypeVar("R")
Task = Callable[..., Any]

EXECUTORS = ("local", "ray")
RAY_ADDRESS_ENV = "MODELSEC_RAY_ADDRESS"
"""The environment variable that gives the Ray cluster's address when ``--ray-address`` does not."""


class WorkerLostError(ModelsecError):
    """A task's worker process died (killed, out of memory, its node lost) and the task could not be rerun: a local
    worker is not rerun; a Ray task is, ``max_retries`` times. Nothing is wrong with the inputs, so the message
    says what to change (fewer workers, more memory) and that finished work is kept (reference models are cached as
    each finishes), so a rerun continues."""


@dataclass(frozen=True, kw_only=True)
class ExecutorConfig:
    """Where an audit's tasks run (none of it changes a result; none of it is part of a checkpoint's identity).

    Args:
        executor: "local" (this machine: this process, or forked worker processes) or "ray" (a Ray cluster).
        workers: local worker processes (default: one per CPU core, at most one per task; 1 runs every task in this
            process). Ray ignores it: the cluster's free CPUs decide how many tasks run at once.
        ray_address: the Ray cluster to join: "auto" (the one started on this machine with ``ray start``),
            "HOST:PORT" or "ray://HOST:PORT"; default: $MODELSEC_RAY_ADDRESS, else a Ray instance started on this
            machine for the run (with one CPU per core).
        cpus_per_task: CPUs each Ray task reserves, and torch threads each task (local or Ray) uses.
        gpus_per_task: GPUs each Ray task reserves (fractions share a GPU); 0 runs tasks on CPUs.
    """

    executor: Annotated[str, OneOf(*EXECUTORS)] = "local"
    workers: int | None = None
    ray_address: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if not 0 < self.cpus_per_task < float("inf"):
            raise ConfigError(f"--cpus-per-task must be a number > 0, got {self.cpus_per_task}")
        if not 0 <= self.gpus_per_task < float("inf"):
            raise ConfigError(f"--gpus-per-task must be a number >= 0, got {self.gpus_per_task}")
        if self.ray_address is not None and self.executor != "ray":
            raise ConfigError("--ray-address is for --executor ray; add --executor ray or drop --ray-address")
        if self.ray_address is not None:
            check_ray_address(self.ray_address)
        if self.gpus_per_task and self.executor != "ray":
            raise ConfigError("--gpus-per-task is for --executor ray (a local run uses --device)")
        if self.executor == "ray" and importlib.util.find_spec("ray") is None:  # before any work, not hours in
            raise ConfigError(RAY_MISSING)

    @property
    def threads_per_task(self) -> int:
        """torch threads a task runs with: its CPUs, at least one."""
        return max(1, int(self.cpus_per_task))


def make_executor(config: ExecutorConfig | None = None) -> Executor:
    """The executor ``config`` asks for (the local one by default)."""
    config = config or ExecutorConfig()
    if config.executor == "ray":
        return RayExecutor(config)
    return LocalExecutor(config)


class Executor(abc.ABC):
    """Runs independent tasks and returns their results in order (see the module's docstring)."""

    name: str

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def parallel(self, tasks: int) -> int:
        """How many of ``tasks`` tasks can run at once (1: one after another in this process)."""

    @abc.abstractmethod
    def map(
        self,
        fn: Task,
        items: Sequence[tuple[Any, ...]],
        *,
        shared: Mapping[str, Any] | None = None,
        description: str,
        progress: Progress | None = None,
        weights: Sequence[int] | None = None,
        on_result: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        """``[fn(shared, *item) for item in items]``, run where this executor runs tasks.

        Args:
            fn: a module-level function (it travels by name).
            items: each task's arguments after ``shared``.
            shared: read-only values every task needs (large arrays): handed to each worker once, not per task.
            description, progress: one progress bar for all tasks, advanced by ``weights[i]`` (default 1) when
                task ``i`` finishes, wherever it ran.
            on_result: called in this process with ``(i, result)`` as each task finishes (e.g. to cache it), in
                the order they finish.
        """

    def describe(self, tasks: int | None = None) -> str:
        """How ``tasks`` tasks run, for progress lines and reports ("2 processes", "Ray")."""
        return self.name


def _advance_by(weights: Sequence[int] | None, count: int) -> list[int]:
    if weights is None:
        return [1] * count
    if len(weights) != count:
        raise ValueError(f"{len(weights)} weights for {count} tasks")
    return [int(w) for w in weights]


# -- worker processes ---------------------------------------------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_FREED_BYTES = 1 << 30
"""Freed heap memory a worker process keeps for its next allocation instead of returning it to the system."""
LARGE_ALLOCATION_BYTES = 32 << 20
"""Allocations of at least this size (glibc's largest allowed threshold) get their own pages from the system."""
_malloc_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep freed memory in this worker process (once per process; True when applied).

    Training frees and reallocates the same activations every step. glibc hands freed memory back to the system
    (heap trimming, and a dynamic mmap threshold that starts at 128 KiB), and a long-lived worker that has run
    other work, such as a Ray worker, keeps doing so: measured on this project's 2-core machine, a small-cnn
    reference model took 50,000-300,000 minor page faults in a Ray worker (a few hundred after this call) and
    10-20% more time than in a fresh process. Fixed thresholds stop that, at the cost of the worker keeping up to
    its peak memory. Elsewhere than glibc (macOS, musl) this does nothing and returns False.
    """
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            with contextlib.suppress(OSError, AttributeError):  # no mallopt: this libc is left as it is
                mallopt = ctypes.CDLL(None).mallopt
                mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                _malloc_tuned = bool(
                    mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES) and mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION_BYTES)
                )
    return _malloc_tuned


# -- local --------------------------------------------------------------------------------------------------------

_SHARED: dict[str, Any] = {}
"""The shared values of the local worker process (set by its initializer, inherited from the parent by fork)."""


def _init_local_worker(shared: Mapping[str, Any], threads: int) -> None:
    keep_freed_memory()
    torch.set_num_threads(threads)
    _SHARED.clear()
    _SHARED.update(shared)


def _run_local(fn: Task, item: tuple[Any, ...]) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(_SHARED, *item), time.perf_counter() - start


def _preload() -> None:
    """Import here what a torch optimizer imports on its first use (``torch._dynamo``: seconds), so that forked
    workers inherit it instead of each importing it again."""
    import torch._dynamo  # noqa: F401


def _start_method() -> str:
    """``fork`` where the platform has it, else ``spawn`` (whose workers import the task's module again)."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class LocalExecutor(Executor):
    """Tasks on this machine: in this process when one runs at a time, else in forked worker processes (one torch
    thread each by default: ``cpus_per_task``)."""

    name = "local"

    def parallel(self, tasks: int) -> int:
        workers = self.config.workers or (os.cpu_count() or 1)
        return max(1, min(workers, tasks))

    def describe(self, tasks: int | None = None) -> str:
        n = self.parallel(tasks if tasks is not None else 1 << 30)
        return "this process" if n == 1 else f"{n} processes"

    def map(
        self,
        fn: Task,
        items: Sequence[tuple[Any, ...]],
        *,
        shared: Mapping[str, Any] | None = None,
        description: str,
        progress: Progress | None = None,
        weights: Sequence[int] | None = None,
        on_result: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        progress = progress or NullProgress()
        advance_by = _advance_by(weights, len(items))
        results: list[Any] = [None] * len(items)
        shared = dict(shared or {})
        workers = self.parallel(len(items))
        with progress.task(f"{description} ({self.describe(len(items))})", total=sum(advance_by)) as advance:
            if workers == 1:
                for i, item in enumerate(items):
                    results[i] = fn(shared, *item)
                    if on_result is not None:
                        on_result(i, results[i])
                    advance(advance_by[i])
                return results
            _preload()
            context = multiprocessing.get_context(_start_method())
            initargs = (shared, self.config.threads_per_task)
            pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_local_worker, initargs=initargs)
            finished = 0
            try:
                futures: dict[Future[tuple[Any, float]], int] = {
                    pool.submit(_run_local, fn, item): i for i, item in enumerate(items)
                }
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        i = futures[future]
                        results[i], _ = future.result()
                        finished += 1
                        if on_result is not None:
                            on_result(i, results[i])
                        advance(advance_by[i])
            except BrokenProcessPool:  # a worker died: the pool cannot run the rest (a local task is not rerun)
                _stop(pool)
                raise WorkerLostError(
                    f"{description}: a worker process died (killed, or out of memory?) with "
                    f"{len(items) - finished} of {len(items)} tasks unfinished; use fewer --workers (or more "
                    "memory), then rerun (finished work is kept)"
                ) from None
            except BaseException:
                _stop(pool)  # Ctrl-C or a failed task: nothing more starts, nothing keeps running
                raise
            pool.shutdown()
        return results


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel ``pool``'s queued tasks, end its worker processes (tasks under way included: a worker would otherwise
    run its task to the end, long after the caller gave up on it) and wait until they are gone."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public way before Python 3.14
    for process in processes:
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
    for process in processes:
        process.join()


# -- Ray ----------------------------------------------------------------------------------------------------------


RAY_MISSING = "--executor ray needs Ray: pip install 'modelsec[ray]' (or use the default --executor local)"


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def ray_address(config: ExecutorConfig) -> str | None:
    """The cluster to join: ``--ray-address``, else ``$MODELSEC_RAY_ADDRESS``; ``None``: start one here."""
    return config.ray_address or os.environ.get(RAY_ADDRESS_ENV) or None


_ADDRESS = re.compile(r"(?:ray://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(?P<port>[0-9]{1,5})")


def check_ray_address(address: str, source: str = "--ray-address") -> tuple[str, int] | None:
    """The host and port of ``address`` ("HOST:PORT" or "ray://HOST:PORT"; ``None`` for "auto"), or a
    :class:`ConfigError` naming ``source`` (the option or the environment variable it came from)."""
    if address == "auto":
        return None
    match = _ADDRESS.fullmatch(address.strip())
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ConfigError(f"{source} must be auto, HOST:PORT or ray://HOST:PORT, got {printable(address)!r}")
    return match["host"].strip("[]"), int(match["port"])


def _reachable(address: str, source: str, timeout: float = 10.0) -> None:
    """Refuse at once a HOST:PORT where nothing listens (``ray.init`` would wait for minutes, then exit)."""
    where = check_ray_address(address, source)
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r} ({source}): {printable(exc, max_chars=120)}; check that "
            "the cluster runs (ray status) and the address: the head node's HOST:PORT (port 6379 by default), or "
            "ray://HOST:10001 for Ray Client"
        ) from None


def _run_ray(fn: Task, shared: Mapping[str, Any] | None, threads: int, *item: Any) -> Any:
    """A task on a Ray worker: ``fn(shared, *item)`` with ``threads`` torch threads (the CPUs it reserved)."""
    keep_freed_memory()
    torch.set_num_threads(threads)
    return fn(dict(shared or {}), *item)


class RayExecutor(Executor):
    """Tasks on Ray. Joins the cluster at :func:`ray_address` (or the Ray instance this process already started),
    else starts a Ray instance on this machine, with one CPU per core, that lives as long as this process."""

    name = "ray"
    max_retries = 3
    """How often Ray reruns a task whose worker died (a crashed or killed process, a lost node)."""
    started_here: ClassVar[bool] = False
    """This process runs the Ray instance it started (not a cluster's: no autoscaler adds nodes to it)."""

    def parallel(self, tasks: int) -> int:
        ray = self._connect()
        resources = ray.cluster_resources()
        fit = int(float(resources.get("CPU", 0.0)) // self.config.cpus_per_task)
        if self.config.gpus_per_task:
            fit = min(fit, int(float(resources.get("GPU", 0.0)) // self.config.gpus_per_task))
        return max(1, min(tasks, fit))  # at least 1: an autoscaling cluster may add the nodes its tasks need

    def describe(self, tasks: int | None = None) -> str:
        return "Ray"

    def _connect(self) -> Any:
        ray = _ray()
        if ray.is_initialized():
            return ray
        address = ray_address(self.config)
        try:
            if address:
                _reachable(address, "--ray-address" if self.config.ray_address else f"${RAY_ADDRESS_ENV}")
                ray.init(address=address, log_to_driver=False)
                RayExecutor.started_here = False
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
                RayExecutor.started_here = True
        except ConnectionError as exc:
            raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {printable(exc, max_chars=200)}") from None
        return ray

    def _check_fits(self, ray: Any, progress: Progress) -> None:
        """A task that no node can hold waits for ever (Ray leaves it pending): on the Ray instance started here,
        which no autoscaler grows, that is a user error; on a cluster, a note (its autoscaler may add the node)."""
        cpus, gpus = self.config.cpus_per_task, self.config.gpus_per_task
        nodes: list[dict[str, float]] = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
        if any(float(r.get("CPU", 0)) >= cpus and float(r.get("GPU", 0)) >= gpus for r in nodes):
            return
        largest: dict[str, float] = max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)), default={})
        wanted = f"{cpus:g} CPUs" + (f" and {gpus:g} GPUs" if gpus else "")
        have = f"{float(largest.get('CPU', 0)):g} CPUs and {float(largest.get('GPU', 0)):g} GPUs"
        if self.started_here:
            raise ConfigError(
                f"each task asks for {wanted} and the Ray instance started on this machine has {have}; lower "
                "--cpus-per-task / --gpus-per-task, or give a cluster that has such nodes (--ray-address)"
            )
        progress.note(
            f"no node of the Ray cluster has {wanted} for a task now (the largest: {have}); the tasks wait until "
            "the cluster's autoscaler adds one"
        )

    def map(
        self,
        fn: Task,
        items: Sequence[tuple[Any, ...]],
        *,
        shared: Mapping[str, Any] | None = None,
        description: str,
        progress: Progress | None = None,
        weights: Sequence[int] | None = None,
        on_result: Callable[[int, Any], None] | None = None,
    ) -> list[Any]:
        progress = progress or NullProgress()
        ray = self._connect()
        if items:
            self._check_fits(ray, progress)
        advance_by = _advance_by(weights, len(items))
        results: list[Any] = [None] * len(items)
        shared_ref = ray.put(dict(shared)) if shared else None  # once, into the object store
        remote = ray.remote(_run_ray).options(
            num_cpus=self.config.cpus_per_task,
            num_gpus=self.config.gpus_per_task,
            max_retries=self.max_retries,
            retry_exceptions=False,  # a task that raises is a bug or a user error: retrying cannot help
        )
        threads = self.config.threads_per_task
        with progress.task(f"{description} (Ray)", total=sum(advance_by)) as advance:
            refs: dict[Any, int] = {}
            pending: list[Any] = []
            try:
                for i, item in enumerate(items):  # in the try: Ctrl-C while submitting cancels those submitted
                    ref = remote.remote(fn, shared_ref, threads, *item)
                    refs[ref] = i
                    pending.append(ref)
                while pending:
                    done, pending = ray.wait(pending, num_returns=1)
                    for ref in done:
                        i = refs[ref]
                        try:
                            results[i] = ray.get(ref)
                        except ray.exceptions.RayTaskError as exc:  # the task raised: its own exception
                            cause = getattr(exc, "cause", None)
                            raise (cause if isinstance(cause, Exception) else exc) from None
                        except ray.exceptions.RayError as exc:  # its worker or node died, retries used up
                            raise WorkerLostError(
                                f"{description}: task {i} failed on Ray after {self.max_retries} retries "
                                f"({type(exc).__name__}: {printable(exc, max_chars=200)}): its worker died each "
                                "time (killed, out of memory, a node lost); give tasks more memory (fewer at once "
                                "with a larger --cpus-per-task) or check the cluster's nodes, then rerun "
                                "(finished work is kept)"
                            ) from None
                        if on_result is not None:
                            on_result(i, results[i])
                        advance(advance_by[i])
            except BaseException:
                for ref in pending:  # Ctrl-C or a failed task: the cluster stops the rest
                    ray.cancel(ref, force=True)
                raise
        return results
