"""How a result shows itself in Jupyter (``_repr_html_``) and in a web browser (``show()``), through a hook that the
report fills: the results layer renders nothing itself.

The HTML comes from :mod:`modelsec.report` (its table builders, plots and templates), a layer above this one that
results must never import (the layers contract in ``pyproject.toml``; DESIGN.md: "the report never runs a model",
results never render). So this module holds only the hook: a :class:`DisplayBackend`, two functions that
:mod:`modelsec.report.notebook` registers with :func:`register_backend` when it is imported. The result classes'
``_repr_html_`` and ``show`` call :func:`repr_html` and :func:`show` here, which ask :func:`backend`.

When nothing is registered yet (a result read with ``AuditResult.load`` in a fresh kernel, before anything imported
the report), :func:`backend` imports the module named by :data:`DEFAULT_BACKEND` by name, whose import registers it:
a plugin found at run time, as pandas finds its plotting backend and :mod:`modelsec.models.adapters` its adapters,
not a static import, so the dependency still points from report to results and the contract holds. A test, or a
program with its own rendering, can register another backend.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_BACKEND = "modelsec.report.notebook"
"""The module imported, when no backend is registered, to register one (:func:`backend`)."""


@dataclass(frozen=True)
class DisplayBackend:
    """What displays a result (an ``AuditResult``, a ``Comparison`` or a ``DPAuditResult``): ``repr_html`` returns a
    self-contained HTML fragment for a notebook's output cell; ``show`` writes the full report to a file, opens it in
    the web browser and returns the file's path."""

    repr_html: Callable[[Any], str]
    show: Callable[[Any], Path]


_registered: list[DisplayBackend] = []  # the backend in use, at most one (a list: no ``global`` statement needed)


def register_backend(display: DisplayBackend) -> None:
    """Use ``display`` for every result from now on (replacing any backend registered before)."""
    _registered[:] = [display]


def backend() -> DisplayBackend:
    """The registered backend; the first call without one imports :data:`DEFAULT_BACKEND`, which registers it."""
    if not _registered:
        importlib.import_module(DEFAULT_BACKEND)
    if not _registered:
        raise RuntimeError(f"importing {DEFAULT_BACKEND} registered no display backend")
    return _registered[0]


def repr_html(result: Any) -> str:
    """``result`` as an HTML fragment for Jupyter, from the registered backend."""
    return backend().repr_html(result)


def show(result: Any) -> Path:
    """Open ``result``'s full report in the web browser, through the registered backend; returns the file it wrote."""
    return backend().show(result)
