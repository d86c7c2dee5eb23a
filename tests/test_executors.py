"""Executors (issue 14): the local one (this process, forked workers) and Ray run the same tasks with the same
results, in item order; a task's error surfaces as itself; a worker killed mid-task is retried by Ray with no
reference model lost or trained twice; Ctrl-C stops every task; audits give identical numbers wherever their
reference models train, and share their cache entries.

The task functions and the recipe below are module-level: Ray workers import them as ``tests.test_executors.X``
(the ``ray_instance`` fixture puts the repository on their path)."""

from __future__ import annotations

import dataclasses
import importlib.util
import multiprocessing
import os
import platform
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelsec.audits import AuditConfig
from modelsec.audits.membership_pool import MembershipPool, build_pool, model_seeds, reference_signals
from modelsec.audits.reference_models import BuiltinRecipe, ReferenceConfig
from modelsec.audits.runner import run_audit
from modelsec.core import executors
from modelsec.core.errors import ConfigError
from modelsec.core.executors import (
    RAY_ADDRESS_ENV,
    Executor,
    ExecutorConfig,
    LocalExecutor,
    RayExecutor,
    WorkerLostError,
    make_executor,
)
from modelsec.core.progress import Advance, Progress
from modelsec.data import load_splits
from modelsec.defenses.training import TrainingConfig
from modelsec.results.audit import AuditResult
from modelsec.store.cache import SignalCache

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="Ray is not installed (pip install 'modelsec[ray]')")
GOLDEN = Path(__file__).parent / "data" / "golden-digits-mlp.safetensors"
LONG = 300.0
"""Seconds a task sleeps that must be stopped: far longer than any bound the tests wait."""


# -- tasks (module-level: they travel by name) -----------------------------------------------------------------


def square_after(shared: dict[str, Any], i: int, delay: float) -> tuple[int, int]:
    """``shared["offset"] + i * i`` after ``delay`` seconds, and the process that computed it."""
    time.sleep(delay)
    return shared["offset"] + i * i, os.getpid()


def refuse(shared: dict[str, Any], i: int) -> int:
    if i == shared["bad"]:
        raise ConfigError(f"bad option in task {i}: use another")
    return i


def nap(shared: dict[str, Any], i: int, seconds: float) -> int:
    """Marks that it started, sleeps ``seconds``, marks that it finished."""
    folder = Path(shared["markers"])
    (folder / f"started-{i}-{uuid.uuid4().hex}").touch()
    time.sleep(seconds)
    (folder / f"finished-{i}-{uuid.uuid4().hex}").touch()
    return i


def die(shared: dict[str, Any], i: int) -> int:
    """Kills its own process (as the OOM killer would)."""
    if i == shared["victim"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return i


@dataclasses.dataclass(frozen=True, kw_only=True)
class KillingRecipe(BuiltinRecipe):
    """The built-in recipe, except that the first attempt at the model seeded ``kill_seed`` kills its own process
    before training. Markers in ``markers`` record every attempt (``started-SEED-*``) and every training that ran to
    completion (``trained-SEED-*``)."""

    markers: str
    kill_seed: int

    def train_logits(self, x_in: Any, y_in: Any, x_pool: Any, **kwargs: Any) -> Any:
        folder, seed = Path(self.markers), kwargs["seed"]
        (folder / f"started-{seed}-{uuid.uuid4().hex}").touch()
        if seed == self.kill_seed:
            try:
                (folder / "killed").open("x").close()  # exclusive: only the first attempt gets here
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        logits = super().train_logits(x_in, y_in, x_pool, **kwargs)
        (folder / f"trained-{seed}-{uuid.uuid4().hex}").touch()
        return logits


# -- helpers -------------------------------------------------------------------------------------------------------


class RecordingProgress(Progress):
    """Records each task's description and total, and every advance."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, int, list[int]]] = []
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        advances: list[int] = []
        self.tasks.append((description, total, advances))
        yield advances.append


@pytest.fixture(params=["local-1", "local-2", "ray"])
def executor(request: pytest.FixtureRequest) -> Executor:
    if request.param == "ray":
        request.getfixturevalue("ray_instance")
        return make_executor(ExecutorConfig(executor="ray"))
    return make_executor(ExecutorConfig(workers=int(request.param.split("-")[1])))


@contextmanager
def interrupt_when(condition: Callable[[], bool]) -> Iterator[None]:
    """Sends this process SIGINT (Ctrl-C) once ``condition()`` holds (polled from a thread), or after a minute.
    Python's own SIGINT handler is installed for the block: a shell that starts pytest in the background without job
    control makes it ignore SIGINT, and the test would then wait for ever."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    deadline = time.monotonic() + 60  # a test that waits in vain fails (nothing started) instead of hanging

    def watch() -> None:
        while not stop.is_set():
            if condition() or time.monotonic() > deadline:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        signal.signal(signal.SIGINT, previous)


def record_ray_tasks(ray: Any, monkeypatch: pytest.MonkeyPatch, interrupt_at: int | None = None) -> list[Any]:
    """The refs of the tasks a :class:`RayExecutor` submits from now on (it sees ``ray`` through a proxy), in
    order; ``interrupt_at``: Ctrl-C (KeyboardInterrupt) instead of submitting that task."""
    refs: list[Any] = []

    class Submitter:
        def __init__(self, remote: Any) -> None:
            self.remote_fn = remote

        def options(self, **options: Any) -> Submitter:
            return Submitter(self.remote_fn.options(**options))

        def remote(self, *args: Any) -> Any:
            if len(refs) == interrupt_at:
                raise KeyboardInterrupt
            refs.append(self.remote_fn.remote(*args))
            return refs[-1]

    class RayProxy:
        def __getattr__(self, name: str) -> Any:
            return getattr(ray, name)

        def remote(self, fn: Any) -> Submitter:
            return Submitter(ray.remote(fn))

    monkeypatch.setattr(executors, "_ray", RayProxy)
    return refs


def assert_cancelled(ray: Any, refs: list[Any]) -> None:
    """Every task of ``refs`` ends cancelled (within a minute: far less than the tasks would run)."""
    for ref in refs:
        with pytest.raises(ray.exceptions.TaskCancelledError):
            ray.get(ref, timeout=60)
    assert ray_cpus_free(ray)


def ray_cpus_free(ray: Any, within: float = 60.0) -> bool:
    """Whether every CPU of the Ray instance is free again (no task holds one) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0.0) == ray.cluster_resources().get("CPU"):
            return True
        time.sleep(0.2)
    return False


# -- the executor contract -------------------------------------------------------------------------------------


def test_results_come_in_item_order_with_shared_values_callbacks_and_weighted_progress(executor: Executor) -> None:
    n = 6
    items = [(i, 0.05 * (n - i)) for i in range(n)]  # later items finish first where tasks run side by side
    weights = [i + 1 for i in range(n)]
    calls: list[tuple[int, Any]] = []
    progress = RecordingProgress()
    results = executor.map(
        square_after,
        items,
        shared={"offset": 1000},
        description="squares",
        progress=progress,
        weights=weights,
        on_result=lambda i, result: calls.append((i, result)),
    )
    assert [value for value, _ in results] == [1000 + i * i for i in range(n)]
    assert sorted(calls) == sorted(enumerate(results))  # once per task, with its result
    [(description, total, advances)] = progress.tasks
    assert description.startswith("squares (") and total == sum(weights)
    assert sorted(advances) == weights  # each task advanced the bar by its own weight
    assert [weights[i] for i, _ in calls] == advances  # as it finished
    pids = {pid for _, pid in results}
    if executor.parallel(n) == 1 and isinstance(executor, LocalExecutor):
        assert pids == {os.getpid()} and [i for i, _ in calls] == list(range(n))
    else:
        assert os.getpid() not in pids


def malloc_tuned(shared: dict[str, Any], i: int) -> tuple[bool | None, int]:
    """Whether this process's malloc keeps freed memory (:func:`keep_freed_memory` ran), and its pid."""
    return executors._malloc_tuned, os.getpid()


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="malloc is tuned with glibc's mallopt"
)
def test_worker_processes_keep_freed_memory_and_this_process_is_left_alone(executor: Executor) -> None:
    results = executor.map(malloc_tuned, [(i,) for i in range(4)], description="malloc")
    for tuned, pid in results:
        assert bool(tuned) is (pid != os.getpid()), "worker processes tune malloc; the user's own process is left alone"


def test_a_task_that_raises_a_user_error_surfaces_as_that_error(executor: Executor) -> None:
    with pytest.raises(ConfigError, match="bad option in task 2: use another") as raised:
        executor.map(refuse, [(i,) for i in range(4)], shared={"bad": 2}, description="refusals")
    assert type(raised.value) is ConfigError  # not Ray's RayTaskError, nor a wrapper
    assert multiprocessing.active_children() == []  # the other local workers were ended, not left running
    assert executor.map(refuse, [(i,) for i in range(3)], shared={"bad": -1}, description="fine") == [0, 1, 2]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"executor": "dask"}, "--executor must be one of local, ray"),
        ({"workers": 0}, "--workers must be >= 1"),
        ({"cpus_per_task": 0}, "--cpus-per-task must be a number > 0"),
        ({"cpus_per_task": -1.0}, "--cpus-per-task must be a number > 0"),
        ({"cpus_per_task": float("nan")}, "--cpus-per-task must be a number > 0"),
        ({"executor": "ray", "gpus_per_task": -0.5}, "--gpus-per-task must be a number >= 0"),
        ({"executor": "ray", "gpus_per_task": float("inf")}, "--gpus-per-task must be a number >= 0"),
        ({"ray_address": "auto"}, "--ray-address is for --executor ray"),
        ({"gpus_per_task": 1.0}, "--gpus-per-task is for --executor ray"),
    ],
)
def test_executor_config_refuses_bad_settings(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        ExecutorConfig(**options)
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):  # the audit's options, before any work
        AuditConfig(**options)


def test_executor_ray_without_ray_installed_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from modelsec.cli.main import main

    ray_executor = make_executor(ExecutorConfig(executor="ray")) if HAS_RAY else None  # while Ray is there
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, as without Ray
    if ray_executor is not None:
        with pytest.raises(ConfigError, match=r"pip install 'modelsec\[ray\]'"):
            ray_executor.map(square_after, [(1, 0.0)], shared={"offset": 0}, description="x")
    with pytest.raises(ConfigError, match=r"pip install 'modelsec\[ray\]'"):  # the settings, before any work
        ExecutorConfig(executor="ray")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["audit", "--model", str(GOLDEN), "--data", "digits", "--executor", "ray", "--reference-models", "2"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "pip install 'modelsec[ray]'" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # refused before any work: not even a checkpoint


class FakeRay:
    """Records how the executor starts or joins Ray."""

    def __init__(self, refuse: bool = False) -> None:
        self.inits: list[dict[str, Any]] = []
        self.refuse = refuse

    def is_initialized(self) -> bool:
        return bool(self.inits)

    def init(self, **kwargs: Any) -> None:
        if self.refuse:
            raise ConnectionError("no cluster there")
        self.inits.append(kwargs)


@pytest.fixture
def listening() -> Iterator[list[str]]:
    """Two addresses where something listens (as a Ray head node would), on this machine."""
    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    try:
        yield [f"127.0.0.1:{server.getsockname()[1]}" for server in servers]
    finally:
        for server in servers:
            server.close()


def free_address() -> str:
    """An address where nothing listens (a port that was free a moment ago)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        return f"127.0.0.1:{server.getsockname()[1]}"


@needs_ray
@pytest.mark.parametrize(
    ("option", "env", "joined"),
    [
        ("0", "1", "0"),  # --ray-address first
        (None, "1", "1"),  # then $MODELSEC_RAY_ADDRESS
        ("ray://0", None, "ray://0"),  # Ray Client
        ("auto", "1", "auto"),
        (None, "", None),  # an empty variable is no address: a local instance
        (None, None, None),
    ],
)
def test_ray_address_comes_from_the_option_then_the_environment_else_a_local_instance(
    option: str | None, env: str | None, joined: str | None, listening: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def address(value: str | None) -> str | None:  # "0", "1": the listening addresses
        return value and re.sub(r"[01]$", lambda m: listening[int(m[0])], value)

    option, env, joined = address(option), address(env), address(joined)
    if env is None:
        monkeypatch.delenv(RAY_ADDRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(RAY_ADDRESS_ENV, env)
    fake = FakeRay()
    monkeypatch.setattr(executors, "_ray", lambda: fake)
    monkeypatch.setattr(RayExecutor, "started_here", RayExecutor.started_here)  # restored afterwards
    config = ExecutorConfig(executor="ray", ray_address=option)
    assert executors.ray_address(config) == joined
    RayExecutor(config)._connect()
    [kwargs] = fake.inits
    if joined is None:
        assert "address" not in kwargs and kwargs["num_cpus"] == (os.cpu_count() or 1)
    else:
        assert kwargs["address"] == joined
    assert RayExecutor.started_here is (joined is None)
    RayExecutor(config)._connect()  # an instance already running is reused
    assert len(fake.inits) == 1


@needs_ray
@pytest.mark.parametrize("bad", ["garbage", "host:", ":6379", "host:0", "host:70000", "http://host:6379", "a b:1", ""])
def test_a_malformed_ray_address_is_refused_with_the_forms_it_may_take(
    bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="--ray-address must be auto, HOST:PORT or ray://HOST:PORT"):
        ExecutorConfig(executor="ray", ray_address=bad)
    monkeypatch.setenv(RAY_ADDRESS_ENV, bad or " ")
    fake = FakeRay()
    monkeypatch.setattr(executors, "_ray", lambda: fake)
    with pytest.raises(ConfigError, match=f"\\${RAY_ADDRESS_ENV} must be auto, HOST:PORT"):
        RayExecutor(ExecutorConfig(executor="ray"))._connect()
    assert fake.inits == []


@needs_ray
def test_an_unreachable_ray_cluster_is_a_user_error_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listens at the address: refused before ``ray.init`` (which would wait for minutes, then exit); a
    cluster that refuses the connection (``ray.init`` raises ConnectionError) is a user error too."""
    fake = FakeRay()
    monkeypatch.setattr(executors, "_ray", lambda: fake)
    nowhere = free_address()
    with pytest.raises(
        ConfigError, match=f"cannot reach the Ray cluster at '{re.escape(nowhere)}' \\(--ray-address\\)"
    ):
        RayExecutor(ExecutorConfig(executor="ray", ray_address=nowhere))._connect()
    assert fake.inits == []
    monkeypatch.setattr(executors, "_ray", lambda: FakeRay(refuse=True))
    with pytest.raises(ConfigError, match="cannot reach the Ray cluster at 'auto': no cluster there"):
        RayExecutor(ExecutorConfig(executor="ray", ray_address="auto"))._connect()


class FakeCluster(FakeRay):
    def __init__(self, resources: dict[str, float]) -> None:
        super().__init__()
        self.inits.append({})
        self.resources = resources

    def cluster_resources(self) -> dict[str, float]:
        return self.resources


@needs_ray
@pytest.mark.parametrize(
    ("resources", "cpus", "gpus", "tasks", "expected"),
    [
        ({"CPU": 8.0}, 1.0, 0.0, 100, 8),
        ({"CPU": 8.0}, 1.0, 0.0, 3, 3),
        ({"CPU": 8.0}, 3.0, 0.0, 100, 2),
        ({"CPU": 64.0, "GPU": 4.0}, 1.0, 0.5, 100, 8),  # the GPUs decide
        ({"CPU": 64.0, "GPU": 4.0}, 1.0, 1.0, 100, 4),
        ({"CPU": 0.0}, 1.0, 0.0, 100, 1),  # a head node without CPUs: workers may join
        ({"CPU": 8.0}, 1.0, 1.0, 100, 1),  # no GPU yet (an autoscaling cluster adds them)
    ],
)
def test_ray_parallelism_counts_the_resources_each_task_reserves(
    resources: dict[str, float], cpus: float, gpus: float, tasks: int, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(executors, "_ray", lambda: FakeCluster(resources))
    config = ExecutorConfig(executor="ray", cpus_per_task=cpus, gpus_per_task=gpus)
    assert RayExecutor(config).parallel(tasks) == expected


def test_tasks_that_no_node_can_hold_are_refused_on_the_instance_started_here(
    ray_instance: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray leaves such tasks pending for ever: on a Ray instance started here (no autoscaler), a user error before
    any task is submitted; on a cluster, a note that they wait for the autoscaler."""
    progress = RecordingProgress()
    RayExecutor(ExecutorConfig(executor="ray", cpus_per_task=2))._check_fits(ray_instance, progress)
    assert progress.notes == []  # the session's instance has 2 CPUs
    too_big = [ExecutorConfig(executor="ray", cpus_per_task=3), ExecutorConfig(executor="ray", gpus_per_task=0.5)]
    for config in too_big:
        RayExecutor(config)._check_fits(ray_instance, progress)
    assert len(progress.notes) == 2 and all("wait until the cluster's autoscaler adds one" in n for n in progress.notes)
    monkeypatch.setattr(RayExecutor, "started_here", True)
    for config, wanted in zip(too_big, ["3 CPUs", "1 CPUs and 0.5 GPUs"], strict=True):
        message = f"each task asks for {wanted} and the Ray instance started on this machine has 2 CPUs and 0 GPUs"
        with pytest.raises(ConfigError, match=re.escape(message)):
            RayExecutor(config).map(square_after, [(1, 0.0)], shared={"offset": 0}, description="x")


# -- workers that die, Ctrl-C --------------------------------------------------------------------------------------


def test_a_local_worker_that_dies_is_a_clear_error_and_leaves_no_process() -> None:
    pool = LocalExecutor(ExecutorConfig(workers=2))
    with pytest.raises(WorkerLostError, match=r"a worker process died .* use fewer --workers"):
        pool.map(die, [(i,) for i in range(4)], shared={"victim": 1}, description="deaths")
    assert multiprocessing.active_children() == []


def die_training(shared: dict[str, Any], recipe: Any, members: Any, seed: int) -> Any:
    """In place of :func:`~modelsec.audits.reference_models.train_one_reference_model`: the OOM killer's victim."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_the_cli_exits_2_with_what_to_do_when_a_worker_dies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from modelsec.audits import reference_models
    from modelsec.cli.main import main

    monkeypatch.setattr(reference_models, "train_one_reference_model", die_training)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["audit", "--model", str(GOLDEN), "--data", "digits", "--reference-models", "2", "--workers", "2",
              "--mia-samples", "20", "--samples", "5", "--attacks", "fgsm", "--eps", "0.1", "--no-checks", "-q",
              "--out", "out"])  # fmt: skip
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    assert "a worker process died (killed, or out of memory?)" in err and "use fewer --workers" in err
    assert multiprocessing.active_children() == []


def test_a_ray_task_whose_worker_dies_at_every_retry_is_a_clear_error(ray_restarted_after: Any) -> None:
    ray_instance = ray_restarted_after
    ray_executor = RayExecutor(ExecutorConfig(executor="ray"))
    ray_executor.max_retries = 1  # two attempts, both killed
    with pytest.raises(WorkerLostError, match="task 1 failed on Ray after 1 retries"):
        ray_executor.map(die, [(i,) for i in range(3)], shared={"victim": 1}, description="deaths")
    assert ray_cpus_free(ray_instance)


@pytest.mark.parametrize("where", ["local-2", "ray"])
def test_ctrl_c_stops_every_task_under_way_and_queued(
    where: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SIGINT while tasks that would sleep for minutes run: the call raises KeyboardInterrupt at once (bound: a
    fraction of the tasks' sleep), no task ran to its end, and nothing keeps running (no local worker process; every
    Ray CPU free again)."""
    ray = request.getfixturevalue("ray_restarted_after") if where == "ray" else None
    pool = make_executor(ExecutorConfig(executor="ray") if ray else ExecutorConfig(workers=2))
    submitted = record_ray_tasks(ray, request.getfixturevalue("monkeypatch")) if ray else []
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt), interrupt_when(lambda: any(tmp_path.glob("started-*"))):
        pool.map(nap, [(i, LONG) for i in range(5)], shared={"markers": str(tmp_path)}, description="naps")
    assert time.monotonic() - start < LONG / 3
    if ray is None:
        assert multiprocessing.active_children() == []
    else:
        assert len(submitted) == 5
        assert_cancelled(ray, submitted)  # those running and those queued
    assert any(tmp_path.glob("started-*")) and not any(tmp_path.glob("finished-*"))
    # the executor still works afterwards
    assert pool.map(nap, [(i, 0.0) for i in range(3)], shared={"markers": str(tmp_path)}, description="x") == [0, 1, 2]


def test_ctrl_c_while_ray_tasks_are_submitted_cancels_those_already_submitted(
    ray_restarted_after: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Submitting hundreds of tasks takes a while: Ctrl-C then (here: at the third) stops the ones submitted."""
    ray_instance = ray_restarted_after
    submitted = record_ray_tasks(ray_instance, monkeypatch, interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        RayExecutor(ExecutorConfig(executor="ray")).map(
            nap, [(i, LONG) for i in range(5)], shared={"markers": str(tmp_path)}, description="naps"
        )
    assert len(submitted) == 2
    assert_cancelled(ray_instance, submitted)


@pytest.mark.parametrize("workers", [1, 2])
def test_an_interrupt_raised_by_a_callback_stops_the_other_local_tasks(workers: int, tmp_path: Path) -> None:
    """Ctrl-C that lands in ``on_result`` (e.g. while a finished model is cached) stops the tasks as one in the
    wait does. (Local only: a local pool starts its tasks in the order given, so the quick first one is among the
    first to run; Ray does not promise an order, and the SIGINT test above covers it.)"""
    pool = LocalExecutor(ExecutorConfig(workers=workers))

    def interrupt(i: int, result: Any) -> None:
        raise KeyboardInterrupt

    quick_then_long = [(0, 0.0)] + [(i, LONG) for i in range(1, 4)]
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pool.map(nap, quick_then_long, shared={"markers": str(tmp_path)}, description="naps", on_result=interrupt)
    assert time.monotonic() - start < LONG / 3
    assert [p.name.split("-")[1] for p in tmp_path.glob("finished-*")] == ["0"]
    assert multiprocessing.active_children() == []


# -- audits: the same numbers wherever the reference models train -------------------------------------------------

TINY_RMIA = {
    "eps": (0.1,),
    "samples": 10,
    "attacks": ("fgsm",),
    "checks": False,
    "mia_samples": 60,
    "reference_models": 8,
    "reference_epochs": 1,
}
"""A digits audit with 8 online reference models trained for one epoch each (a second of training in all)."""


def privacy_numbers(result: AuditResult) -> dict[str, Any]:
    """Every number of the membership audit (each attack's AUC, TPRs, CIs, ROC, advantage, epsilon bound and its
    evidence; the most exposed members and their scores), without the timings."""
    assert result.privacy is not None
    attacks = [{k: v for k, v in dataclasses.asdict(a).items() if k != "seconds"} for a in result.privacy.attacks]
    exposed = [dataclasses.asdict(e) for e in result.privacy.exposed_records]
    return {"attacks": attacks, "exposed": exposed}


def test_an_rmia_audit_gives_identical_numbers_on_one_process_two_processes_and_ray(
    ray_instance: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelsec.cli.main import main

    runs = {
        where: run_audit(GOLDEN, None, config=AuditConfig(**TINY_RMIA, **options)).result
        for where, options in {
            "local-1": {"workers": 1},
            "local-2": {"workers": 2},
            "ray": {"executor": "ray"},
        }.items()
    }
    numbers = privacy_numbers(runs["local-1"])
    assert {"rmia", "rmia-offline", "lira", "shadow"} <= {a["attack"] for a in numbers["attacks"]}
    for where, result in runs.items():
        assert result.privacy is not None
        compute = result.privacy.compute
        assert compute["reference_models"] == 8 and not compute["from_cache"], where
        assert compute["executor"] == where.split("-")[0] and compute["workers"] == (1 if where == "local-1" else 2)
        assert privacy_numbers(result) == numbers, where

    # the command line, in this process: it joins the session's Ray instance
    monkeypatch.chdir(tmp_path)
    main(["audit", "--model", str(GOLDEN), "--data", "digits", "--executor", "ray", "--reference-models", "8",
          "--reference-epochs", "1", "--mia-samples", "60", "--samples", "10", "--attacks", "fgsm", "--eps", "0.1",
          "--no-checks", "--out", "out", "-q"])  # fmt: skip
    cli = AuditResult.load(tmp_path / "out" / "result.json")
    assert cli.privacy is not None and cli.privacy.compute["executor"] == "ray"
    assert privacy_numbers(cli) == numbers


def digits_pool(models: int) -> tuple[MembershipPool, ReferenceConfig]:
    """A membership pool of 240 digits records (60 candidate members, 60 non-members, 120 population records) and
    ``models`` online reference models on it."""
    config = ReferenceConfig(models=models, train_size=120, seed=5)
    pool = build_pool(load_splits("digits", seed=0), members=60, nonmembers=60, rng=np.random.default_rng(1),
                      reference=config)  # fmt: skip
    return pool, config


ONE_EPOCH = TrainingConfig(epochs=1, batch_size=32)


def test_a_killed_ray_worker_is_retried_and_no_reference_model_is_lost_or_trained_twice(
    ray_restarted_after: Any, tmp_path: Path
) -> None:
    pool, config = digits_pool(8)
    seeds = model_seeds(config)
    markers = tmp_path / "markers"
    markers.mkdir()
    killing = KillingRecipe(arch="mlp", training=ONE_EPOCH, markers=str(markers), kill_seed=seeds[3])
    cache = SignalCache(tmp_path / "cache")
    ray_executor = make_executor(ExecutorConfig(executor="ray"))
    trained = reference_signals(pool, config, recipe=killing, cache=cache, executor=ray_executor)

    assert (markers / "killed").exists()  # the kill happened: model 3's first attempt died

    def count(kind: str) -> dict[int, int]:
        return {s: len(list(markers.glob(f"{kind}-{s}-*"))) for s in seeds}

    assert count("started") == {s: 2 if s == seeds[3] else 1 for s in seeds}  # one retry, for the killed model only
    assert count("trained") == dict.fromkeys(seeds, 1)  # every model trained to the end exactly once

    plain = reference_signals(
        pool, config, recipe=BuiltinRecipe(arch="mlp", training=ONE_EPOCH), executor=LocalExecutor(ExecutorConfig())
    )  # one process, nothing killed
    assert np.array_equal(trained.signals.logits, plain.signals.logits)
    assert np.array_equal(trained.signals.inclusion, plain.signals.inclusion)
    again = reference_signals(pool, config, recipe=killing, cache=cache, executor=ray_executor)
    assert again.cached and np.array_equal(again.signals.logits, trained.signals.logits)  # all 8 were cached
    assert count("trained") == dict.fromkeys(seeds, 1)


def test_ray_and_local_runs_share_the_reference_models_cache(ray_instance: Any, tmp_path: Path) -> None:
    pool, config = digits_pool(4)
    recipe = BuiltinRecipe(arch="mlp", training=ONE_EPOCH)
    cache = SignalCache(tmp_path / "cache")
    on_ray = reference_signals(
        pool, config, recipe=recipe, cache=cache, executor=make_executor(ExecutorConfig(executor="ray"))
    )
    local = reference_signals(
        pool, config, recipe=recipe, cache=cache, executor=LocalExecutor(ExecutorConfig(workers=2))
    )
    assert not on_ray.cached and on_ray.executor == "ray"
    assert local.cached and local.compute()["from_cache"] and local.workers == 0  # trained nothing
    assert np.array_equal(local.signals.logits, on_ray.signals.logits)
    # and the other way: 8 models locally reuse the 4 from Ray and train 4; Ray then trains none
    more = dataclasses.replace(config, models=8)
    local8 = reference_signals(
        pool, more, recipe=recipe, cache=cache, executor=LocalExecutor(ExecutorConfig(workers=1))
    )
    assert not local8.cached and np.array_equal(local8.signals.logits[:4], on_ray.signals.logits)
    ray8 = reference_signals(
        pool, more, recipe=recipe, cache=cache, executor=make_executor(ExecutorConfig(executor="ray"))
    )
    assert ray8.cached and np.array_equal(ray8.signals.logits, local8.signals.logits)


def test_an_audit_on_ray_and_one_run_locally_share_cache_entries(ray_instance: Any, tmp_path: Path) -> None:
    from modelsec.store import RunStore

    cache = RunStore(tmp_path / "runs.sqlite").signal_cache
    small = {**TINY_RMIA, "reference_models": 4}
    on_ray = run_audit(GOLDEN, None, config=AuditConfig(**small, executor="ray"), cache=cache).result
    local = run_audit(GOLDEN, None, config=AuditConfig(**small, workers=2), cache=cache).result
    assert on_ray.privacy is not None and local.privacy is not None
    assert not on_ray.privacy.compute["from_cache"] and local.privacy.compute["from_cache"]
    assert privacy_numbers(local) == privacy_numbers(on_ray)


def test_compare_on_ray_trains_the_reference_models_once_for_models_trained_alike(
    ray_instance: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``compare --executor ray``: each model's audit trains its reference models on Ray; a second model trained
    with the same recipe (another seed) gets them from the cache, as the reference models do not depend on the
    target's own seed."""
    from modelsec.cli.main import main
    from modelsec.defenses.training import train_and_save

    other = tmp_path / "other.safetensors"
    train_and_save(data="digits", arch="mlp", out=other, config=TrainingConfig(epochs=10, batch_size=32, seed=1))
    monkeypatch.chdir(tmp_path)
    main(["compare", str(GOLDEN), str(other), "--data", "digits", "--executor", "ray", "--reference-models", "4",
          "--reference-epochs", "1", "--mia-samples", "60", "--samples", "10", "--attacks", "fgsm", "--eps", "0.1",
          "--no-checks", "--out", "cmp", "-q"])  # fmt: skip
    first = AuditResult.load(tmp_path / "cmp" / "golden-digits-mlp" / "result.json").privacy
    second = AuditResult.load(tmp_path / "cmp" / "other" / "result.json").privacy
    assert first is not None and second is not None
    assert first.compute["executor"] == "ray" and not first.compute["from_cache"]
    assert second.compute["from_cache"] and second.compute["reference_models"] == 4
