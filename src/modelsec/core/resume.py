"""Exact resumption of long, nested loops: frames, deterministic save points, and a time-gated writer.

A long computation (an audit: phases -> attacks x epsilons -> batches -> an attack's restarts -> its iterations)
is a stack of loops. Each loop that can be resumed opens a *frame* with :func:`resumable`, tells it how to read
its state (``frame.capture``) and iterates with ``frame.steps(start, stop)``, which marks a *save point* at the top
of every iteration. At a save point the active :class:`Resumer` may write a snapshot: the state and position of
every open frame, outermost first, plus the *tracked* values shared by all of them (the attacks'
``torch.Generator`` and the classifier's query counter).

Conventions that make a resumed run equal an uninterrupted one, bit for bit on the CPU:

- a frame's state is its loop's state *at the start of the current iteration*, both at its own save points and
  while an inner frame is saving (so a loop mutates its captured variables only after the inner call returns, or
  the inner frame saves and restores what it mutates too, as APGD's restarts do with the output they share with
  APGD-T's targets);
- a save point sits where every random draw and every query of the iterations before it are done;
- on resume, frames are re-entered in the same order: each takes its saved state instead of initialising (and
  skips the random draws and queries of its initialisation), and when the innermost saved frame is entered the
  tracked values are restored, so whatever the path back in drew or queried is overwritten.

Whether a save point writes is decided by time (``interval`` seconds since the last write, or always at points
marked ``force``), never what is computed, so a run with checkpoints computes what a run without them does.
Without an active :class:`Resumer` (:func:`checkpointing`), frames restore nothing and save nothing: opening one
costs a context-variable lookup, a save point nothing measurable.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from modelsec.core.errors import ConfigError

State = dict[str, Any]
Payload = dict[str, Any]  # {"frames": [{"name", "where", "state"}, ...], "tracked": {...}, "where": str}


@dataclass(frozen=True)
class Tracked:
    """A value shared by every frame, captured at each write and restored when the innermost frame resumes."""

    get: Callable[[], Any]
    set: Callable[[Any], None]


def track_generator(generator: torch.Generator) -> Tracked:
    """A ``torch.Generator``'s state (``get_state`` / ``set_state``)."""

    def restore(state: Any) -> None:
        generator.set_state(state)

    return Tracked(generator.get_state, restore)


def track_queries(classifier: Any) -> Tracked:
    """A classifier's query counter (so ``queries`` and compute numbers stay those of an uninterrupted run)."""

    def restore(value: Any) -> None:
        classifier.queries = int(value)

    return Tracked(lambda: int(classifier.queries), restore)


class Frame:
    """One resumable loop. ``restored`` is its saved state on resume (else ``None``); ``capture`` tells it how to
    read its current state; ``steps`` runs the loop, from the saved position on resume, with a save point at the
    top of every iteration."""

    def __init__(self, name: str, restored: State | None, owner: Resumer | None) -> None:
        self.name = name
        self.restored = restored
        self.position: int | None = None
        self._owner = owner
        self._state: Callable[[], State] = dict
        self._where: Callable[[int], str] | None = None

    def capture(self, state: Callable[[], State], where: Callable[[int], str] | None = None) -> None:
        """``state()`` reads the loop's state at the start of the current iteration; ``where(position)`` says
        where the loop is, for progress messages ("query 1200/5000")."""
        self._state, self._where = state, where

    def steps(self, start: int, stop: int, *, force: bool = False) -> Iterator[int]:
        """``range(start, stop)``, or from the saved position on resume, with a save point before each iteration
        (where the active resumer writes when a write is due, and always with ``force``)."""
        first = int(self.restored["position"]) if self.restored is not None else start
        for i in range(first, stop):
            self.position = i
            if self._owner is not None:
                self._owner.point(force)
            yield i

    def restored_on(self, device: torch.device | str) -> State:
        """The saved state with its tensors on ``device``."""
        assert self.restored is not None
        return {k: _map_tensors(v, lambda t: t.to(device)) for k, v in self.restored.items()}

    def snapshot(self) -> dict[str, Any]:
        if self.position is None:  # an inner frame saved before this one's loop began: a bug
            raise RuntimeError(f"frame {self.name!r} was saved before its loop began")
        state = {k: _map_tensors(v, lambda t: t.detach().cpu()) for k, v in self._state().items()}
        state["position"] = self.position
        where = self._where(self.position) if self._where else ""
        return {"name": self.name, "where": where, "state": state}


class Resumer:
    """Writes snapshots at save points and replays a saved one on resume.

    Args:
        write: called with each snapshot (a dict of tensors and plain values); it must persist it before returning.
        saved: a snapshot written by an earlier run of the same computation, to resume from (``None``: start).
        tracked: the shared values, by name (see :func:`track_generator`, :func:`track_queries`).
        interval: seconds between writes at unforced save points (0: at every save point).
    """

    def __init__(
        self,
        *,
        write: Callable[[Payload], None],
        saved: Mapping[str, Any] | None = None,
        tracked: Mapping[str, Tracked] | None = None,
        interval: float = 60.0,
    ) -> None:
        if not interval >= 0:
            raise ConfigError(f"the checkpoint interval must be >= 0 seconds, got {interval}")
        self._write = write
        self._tracked = dict(tracked or {})
        self.interval = float(interval)
        self._stack: list[Frame] = []
        self._paused = 0
        self._last = time.monotonic()
        self.resumed_from: str | None = None  # where the saved snapshot was, for the progress message
        self._pending: list[Mapping[str, Any]] = []
        self._saved_tracked: Mapping[str, Any] = {}
        if saved is not None:
            self._pending = list(saved["frames"])
            self._saved_tracked = saved["tracked"]
            self.resumed_from = str(saved.get("where", ""))
            if set(self._saved_tracked) != set(self._tracked):
                raise CheckpointMismatch(
                    f"the checkpoint tracks {sorted(self._saved_tracked)}, this run {sorted(self._tracked)}"
                )
            if not self._pending:
                self._restore_tracked()

    @property
    def resuming(self) -> bool:
        """True until every saved frame has been re-entered."""
        return bool(self._pending)

    @contextlib.contextmanager
    def frame(self, name: str) -> Iterator[Frame]:
        if self._paused:
            yield Frame(name, None, None)
            return
        restored = None
        if self._pending:
            saved = self._pending[0]
            if saved["name"] != name:
                raise CheckpointMismatch(f"the checkpoint resumes {saved['name']!r} where this run enters {name!r}")
            self._pending.pop(0)
            restored = dict(saved["state"])
            if not self._pending:
                self._restore_tracked()
        frame = Frame(name, restored, self)
        self._stack.append(frame)
        try:
            yield frame
        finally:
            self._stack.pop()

    def point(self, force: bool = False) -> None:
        """A save point: write a snapshot when one is due (always with ``force``)."""
        if self._pending or self._paused:  # still on the way back in, or inside a part that is never saved
            return
        if not force and time.monotonic() - self._last < self.interval:
            return
        frames = [f.snapshot() for f in self._stack]
        payload: Payload = {
            "frames": frames,
            "tracked": {name: t.get() for name, t in self._tracked.items()},
            "where": ", ".join(f["where"] for f in frames if f["where"]),
        }
        self._write(payload)
        self._last = time.monotonic()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """A part that is redone from its start on resume: its frames restore nothing and its points never write."""
        if self._pending:
            raise CheckpointMismatch(f"the checkpoint resumes {self._pending[0]['name']!r} inside a part never saved")
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def _restore_tracked(self) -> None:
        for name, t in self._tracked.items():
            t.set(self._saved_tracked[name])


class CheckpointMismatch(ConfigError):
    """A checkpoint whose saved loops do not match the run resuming it."""


_ACTIVE: contextvars.ContextVar[Resumer | None] = contextvars.ContextVar("modelsec_resumer", default=None)


@contextlib.contextmanager
def checkpointing(resumer: Resumer) -> Iterator[Resumer]:
    """Make ``resumer`` the one that :func:`resumable` frames in this block (and the calls it makes) report to."""
    token = _ACTIVE.set(resumer)
    try:
        yield resumer
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def resumable(name: str) -> Iterator[Frame]:
    """Open the frame ``name`` of the active resumer (a frame that restores and saves nothing when none is
    active). Usage::

        with resumable("square.queries") as frame:
            if frame.restored is None:
                xa, margin = ...  # initialise (random draws, queries)
            else:
                saved = frame.restored_on(x.device)
                xa, margin = saved["xa"], saved["margin"]
            frame.capture(lambda: {"xa": xa, "margin": margin}, where=lambda i: f"query {i + 1}/{n}")
            for it in frame.steps(1, n):  # from the saved position on resume; a save point before each
                ...
    """
    resumer = _ACTIVE.get()
    if resumer is None:
        yield Frame(name, None, None)
        return
    with resumer.frame(name) as frame:
        yield frame


def replaying() -> bool:
    """True while the active resumer is on its way back into the saved loops: work done now was done, and counted,
    before the checkpoint (the attacks' pass counts skip it, as the tracked query count is restored over it)."""
    resumer = _ACTIVE.get()
    return resumer is not None and resumer.resuming


@contextlib.contextmanager
def unsaved() -> Iterator[None]:
    """A block that is redone from its start on resume (see :meth:`Resumer.paused`); a no-op without a resumer."""
    resumer = _ACTIVE.get()
    if resumer is None:
        yield
        return
    with resumer.paused():
        yield


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    return value
