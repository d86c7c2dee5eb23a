"""Shared fixtures. Every test runs with HOME, XDG folders, matplotlib's cache and the run store in a temporary
folder, so nothing writes to the real home directory, and without ``$MLFLOW_TRACKING_URI``, so nothing is logged to
a real MLflow server."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("MPLCONFIGDIR", str(home / "mpl"))
    monkeypatch.setenv("MODELSEC_STORE", str(home / "runs.sqlite"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # a developer's tracking server gets no test runs
    return home


os.environ.setdefault("MPLCONFIGDIR", "/tmp/modelsec-test-mpl")
# Tiny models: one thread avoids contention. `make test-numerics` (run by .ci/run after `make test`) reruns the
# numerically sensitive tests with 2 threads and ATEN_CPU_CAPABILITY=default, so that a green CI on one CPU also
# means green on another (thread count and SIMD width change float reduction orders).
TEST_THREADS = int(os.environ.get("MODELSEC_TEST_THREADS", "1"))
torch.set_num_threads(TEST_THREADS)

FASHION_MNIST_DIR = Path(os.environ.get("MODELSEC_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)


class LinearBinary(nn.Module):
    """logits = [0, w.x + b]: class 1 where w.x + b > 0. Its minimal L-inf adversarial distance is
    |w.x + b| / ||w||_1 and its minimal L2 distance |w.x + b| / ||w||_2 (with no bounds in the way)."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.b = nn.Parameter(torch.tensor(float(b)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(z), z], dim=1)


@pytest.fixture(scope="module")
def keras(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Keras on the torch backend (imported through modelsec's adapter), its home (keras.json, caches) in a
    temporary folder; the test is skipped where Keras is not installed."""
    if importlib.util.find_spec("keras") is None:
        pytest.skip("Keras is not installed")
    from modelsec.models.adapters import keras as keras_adapter

    before = os.environ.get("KERAS_HOME")
    os.environ["KERAS_HOME"] = str(tmp_path_factory.mktemp("keras-home"))
    try:
        yield keras_adapter.import_keras()
    finally:
        if before is None:
            os.environ.pop("KERAS_HOME", None)
        else:
            os.environ["KERAS_HOME"] = before


@pytest.fixture
def linear_problem() -> tuple[LinearBinary, torch.Tensor, torch.Tensor]:
    """A linear classifier in 8 dimensions and 200 correctly labelled points in [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, generator=g)
    model = LinearBinary(w, 0.1)
    x = torch.rand((200, 8), generator=g) * 2 - 1
    with torch.no_grad():
        y = (model(x)[:, 1] > 0).long()
    return model, x, y


def make_blobs(n: int = 600, d: int = 10, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable Gaussian blobs in [0, 1]^d."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.2, 0.8, size=(classes, d))
    y = rng.integers(0, classes, size=n)
    x = np.clip(centers[y] + rng.normal(0, 0.05, size=(n, d)), 0, 1).astype(np.float32)
    return x, y.astype(np.int64)


_RAY_ROOT: list[Path] = []
"""The session's Ray folder (its temporary folder and HOME)."""


def _start_ray(ray: Any, root: Path) -> None:
    """``ray.init`` with 2 CPUs, its temporary folder and HOME under ``root``, and the test modules on its workers'
    path (the raylet and its workers inherit this process's environment at this moment)."""
    saved = {k: os.environ.get(k) for k in ("HOME", "PYTHONPATH", "RAY_USAGE_STATS_ENABLED")}
    os.environ["HOME"] = str(root / "home")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, str(Path(here).parent), saved["PYTHONPATH"]) if p)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(root / "tmp"))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def ray_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real local Ray instance with 2 CPUs for the whole session (started once: seconds), its temporary folder
    and its HOME in the test's temporary folder; its workers import modelsec and the test modules as this process
    does. Skipped where Ray is not installed. Shut down at the end of the session."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed")
    import ray

    _RAY_ROOT.append(tmp_path_factory.mktemp("ray"))
    _start_ray(ray, _RAY_ROOT[0])
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def ray_restarted_after(ray_instance: Any) -> Iterator[Any]:
    """The session's Ray instance for a test that kills Ray workers or force-cancels tasks; afterwards Ray is
    restarted fresh, so that no later test runs on an instance whose workers were killed (Ray 2.60 was seen, rarely,
    to leave a later task unscheduled there)."""
    try:
        yield ray_instance
    finally:
        ray_instance.shutdown()
        _start_ray(ray_instance, _RAY_ROOT[0])  # the same folder: Ray keeps one temporary folder per process
