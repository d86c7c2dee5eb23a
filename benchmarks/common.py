"""Helpers the benchmark scripts share: importing ART without writing to $HOME, a stopwatch, and the results file
of a benchmark over the model zoo."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def import_art(*submodules: str) -> Any:
    """Import ART and ``art.<submodule>`` for each name given, with HOME pointed at a temporary folder
    (``art.config`` creates ``~/.art`` on import) and matplotlib's config folder at another (ART imports
    matplotlib where it is installed)."""
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="modelsec-bench-mpl-"))
    saved = os.environ.get("HOME")
    os.environ["HOME"] = tempfile.mkdtemp(prefix="modelsec-bench-art-")
    try:
        import art

        for name in submodules:
            importlib.import_module(f"art.{name}")
    finally:
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved
    return art


@contextlib.contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["seconds"]``: wall time of the block."""
    box: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - start


def now() -> str:
    """The time in UTC, to the second, as the results files write it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ZooResults:
    """The JSON results file of a benchmark over the model zoo, kept across runs: the models benchmarked earlier
    stay unless benchmarked again (``fresh`` starts the file over), a model's parts not run now are kept, and each
    run records its date, models, samples and the load average at its start and end. ``data`` is the file's
    content; :meth:`add` records one model's entry, :meth:`write` writes the file (after every model, so that
    partial results survive)."""

    def __init__(
        self, benchmark: str, config: dict[str, Any], out: Path, *, fresh: bool, names: Sequence[str], samples: int,
        order: Sequence[str],
    ) -> None:  # fmt: skip
        import torch

        import modelsec

        self.out, self.order = out, list(order)
        self.data: dict[str, Any] = {
            "benchmark": benchmark,
            "date": now(),
            "config": config,
            "versions": {"modelsec": modelsec.__version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "models": {},
        }  # fmt: skip
        self.previous: dict[str, Any] = {}
        if out.exists() and not fresh:
            previous = json.loads(out.read_text(encoding="utf-8"))
            self.previous = previous.get("models", {})
            self.data["models"] = {k: v for k, v in self.previous.items() if k not in names}
            self.data["runs"] = previous.get("runs", [])
        if names:
            run = {"date": self.data["date"], "models": list(names), "samples": samples,
                   "load_average_start": os.getloadavg()}  # fmt: skip
            self.data.setdefault("runs", []).append(run)

    def add(self, name: str, entry: dict[str, Any]) -> None:
        """Record ``name``'s ``entry`` (dated now) over its earlier one, the models in the zoo's order."""
        entry["date"] = now()
        models = self.data["models"]
        models[name] = {**self.previous.get(name, {}), **entry}  # the parts not run now are kept
        self.data["models"] = {k: models[k] for k in self.order if k in models}
        self.data["runs"][-1]["load_average_end"] = os.getloadavg()

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")
