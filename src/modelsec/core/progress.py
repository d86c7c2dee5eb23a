"""Progress reporting that library code can call without knowing about terminals.

Long-running functions take a ``progress: Progress`` argument and wrap their work in
``with progress.task("PGD eps=0.1", total=n) as advance: ... advance(k)``. The default, :class:`NullProgress`,
does nothing; the CLI passes a :class:`RichProgress` (bars on a terminal, plain lines otherwise, nothing with
``--quiet``).

Work that shrinks as it goes (issue 16: an evasion attack spends nothing on a sample once it is broken, and an audit
runs each attack only on the samples every earlier one left standing) opens its task with :meth:`Progress.work`
instead. The :class:`Work` it yields advances the bar as ``task`` does, and also keeps an estimate of the work
*left*, in a unit that tracks cost (for the attacks: forward plus backward passes on the classifier, the unit of
:mod:`modelsec.attacks.cost`), re-estimated from the samples still standing. The remaining time shown is that
estimate divided by the rate observed so far (work done per second), not the items left at the rate so far, which
over-estimates as soon as samples break and knows nothing of the attacks still to come.

Three ways to feed the estimate, from the outside in:

- a task of items processed in groups (an attack's batches) opens each group with :meth:`Work.group`; until the
  code inside reports, the items left are priced at the cost per item measured on the finished groups;
- inside a group, the innermost loop of an algorithm reports :func:`standing` (``samples`` still standing, each with
  ``each`` units left in this loop) and each enclosing loop adds, through :func:`stage`, the cost of its later
  iterations on the samples standing (APGD's restarts, APGD-T's targets); both are module functions, so an
  algorithm needs no progress argument, and they cost a context-variable lookup when nobody listens;
- a task whose parts are tasks of their own (the audit's plan of attacks) sets :attr:`Work.later`, the cost of the
  parts after the current one given the samples the current one leaves standing; the part's own :class:`Work` is
  found as the innermost one open (:attr:`Work.child`).

Only a progress that shows the estimate listens (``Work.live``): :class:`NullProgress` and quiet or non-TTY output
yield a :class:`Work` that advances the bar and ignores the rest.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import IO, Any

Advance = Callable[[int], None]
# The cost of a task's later parts given the samples its current part leaves standing: (units, lower bound?).
Later = Callable[[int], tuple[float, bool]]


class Work:
    """The account of one task whose cost shrinks as it runs: the bar's items, the work spent and the work left.

    Args:
        description: the task's name.
        total: items (samples, plan steps): what the bar counts, advanced by :meth:`advance`.
        advance: the underlying task's advance function (items).
        spent: reads the work spent so far in the cost unit (called at start and whenever an estimate is read);
            ``None``: no cost measure, and the time left is the items left at the rate so far.
        live: whether anyone reads the estimate; a dead Work keeps none (:func:`standing` and :func:`stage` find
            no listener).
        clock: seconds (``time.perf_counter``; a fake one in tests).

    ``standing`` is the samples still standing (the items not yet finished, less those broken as far as the work
    knows; the caller sets the verified count at the end with :meth:`finish`).
    """

    def __init__(
        self,
        description: str,
        total: int,
        advance: Advance,
        spent: Callable[[], float] | None = None,
        *,
        live: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.description = description
        self.total = int(total)
        self.live = live
        self.finished = 0
        self.standing: int | None = None
        self.of = self.total  # what ``standing`` counts out of
        self.left: float | None = None  # this task's own estimate of the work left (unknown: None)
        self.lower_bound = False  # ``left`` leaves out work of unknown cost
        self.later: Later | None = None  # the parts after the current child (a plan of tasks)
        self.child: Work | None = None  # the innermost live Work opened inside this one, while it is open
        self.parent: Work | None = None
        self._advance = advance
        self._spent = spent
        self._clock = clock
        self._start = clock()
        self._spent_at_start = spent() if spent is not None else 0.0
        self._spent_finished = 0.0  # spent on finished groups
        self._grouped = 0  # items finished in groups (not those advanced outside one: work of an earlier run)
        self._survivors = 0  # samples standing at the end of finished groups
        self._group: int | None = None  # items in the group under way
        self._group_ceiling: float | None = None  # the group's first estimate per item (before anything broke)
        self._stages: list[Stage] = []
        self.watch: Callable[[Work], None] | None = None  # called after each change of a live estimate (tests)

    # -- the bar ------------------------------------------------------------------------------------------------

    def advance(self, n: int) -> None:
        """``n`` more items are finished (as the ``advance`` of :meth:`Progress.task`)."""
        self.finished += n
        self._advance(n)

    def finish(self, standing: int, of: int | None = None) -> None:
        """The task is done and ``standing`` samples (of ``of``, default :attr:`total`) survived it, as verified by
        the caller: shown with the task's line."""
        self.standing = int(standing)
        self.of = self.total if of is None else int(of)
        self.left, self.lower_bound = 0.0, False
        self._changed()

    # -- the estimate -------------------------------------------------------------------------------------------

    def spent(self) -> float:
        """Work spent since the task began (0 without a cost measure)."""
        return self._spent() - self._spent_at_start if self._spent is not None else 0.0

    @contextlib.contextmanager
    def group(self, n: int) -> Iterator[None]:
        """``n`` items processed together (an attack's batch), advanced by ``n`` at the end. While it is open,
        :func:`standing` and :func:`stage` report to this Work."""
        if not self.live:
            yield
            self.advance(n)
            return
        self._group, self._group_ceiling = n, None
        self.standing = self._survivors + self.total - self.finished
        self._estimate(n, 0.0, None)
        token = _LISTENER.set(self)
        try:
            yield
        finally:
            _LISTENER.reset(token)
        # the group's survivors: the last count reported inside it (all of it when nothing reported)
        self._survivors = self.standing - (self.total - self.finished - n)
        self._spent_finished = self.spent()
        self._grouped += n
        self._group, self._stages = None, []
        self.advance(n)
        per_item = self._per_item_cost()
        self.left, self.lower_bound = (None if per_item is None else per_item * (self.total - self.finished)), False
        self._changed()

    def _per_item_cost(self) -> float | None:
        """Work per item: measured over the finished groups, else the group's first estimate, else unknown."""
        if self._grouped:
            return self._spent_finished / self._grouped
        return self._group_ceiling

    def _estimate(self, samples: int, each: float, group_left: float | None) -> None:
        """The group under way has ``samples`` standing and ``group_left`` units left (``None``: not reported)."""
        assert self._group is not None
        pending = self.total - self.finished - self._group
        if group_left is not None and self._group_ceiling is None and samples:
            self._group_ceiling = group_left / samples  # nothing broken yet: the full cost of an item
        per_item = self._per_item_cost()
        if group_left is None:  # nothing reported yet: the whole group at the cost per item
            self.left = None if per_item is None else per_item * (pending + self._group)
        else:
            self.left = group_left + (0.0 if per_item is None else per_item * pending)
        self.lower_bound = False
        self.standing = self._survivors + samples + pending
        self._changed()

    def _changed(self) -> None:
        if self.watch is not None:
            self.watch(self)

    def remaining(self) -> tuple[float | None, bool]:
        """Work left (``None``: unknown) and whether that is a lower bound (some later part's cost is unknown)."""
        if self.later is None:
            return self.left, self.lower_bound
        child = self.child
        if child is None:  # between parts, or in one that reports nothing: unknown
            return None, True
        left, lower = child.remaining()
        after, after_lower = self.later(child.standing if child.standing is not None else child.total)
        if left is None:
            return after, True
        return left + after, lower or after_lower

    def fraction(self) -> float | None:
        """The part of the work done, spent over spent plus left (``None``: unknown); an upper bound while the
        work left is a lower bound."""
        left = self.remaining()[0]
        done = self.spent()
        if self._spent is None or left is None or done + left <= 0:
            return None
        return done / (done + left)

    def innermost(self) -> Work:
        """The innermost Work open inside this one (itself when none): whose samples are standing now."""
        work = self
        while work.child is not None:
            work = work.child
        return work

    def seconds_left(self) -> tuple[float | None, bool]:
        """The estimated seconds left (``None``: unknown yet) and whether it is a lower bound: the work left over
        the rate observed so far (work spent per second); without a cost measure, the items left at the rate so
        far."""
        elapsed = self._clock() - self._start
        if self._spent is None:
            if not self.finished or elapsed <= 0:
                return None, False
            return (self.total - self.finished) * elapsed / self.finished, False
        left, lower = self.remaining()
        done = self.spent()
        if left is None or done <= 0 or elapsed <= 0:
            return None, lower
        return left * elapsed / done, lower


class Stage:
    """An enclosing loop's part of the estimate: ``after(samples)``, the work of its later iterations on the
    ``samples`` the current one leaves standing (set at each iteration; see :func:`stage`)."""

    __slots__ = ("after",)

    def __init__(self) -> None:
        self.after: Callable[[int], float] = _nothing


def _nothing(samples: int) -> float:
    return 0.0


_LISTENER: ContextVar[Work | None] = ContextVar("modelsec_progress_listener", default=None)
_OPEN: ContextVar[Work | None] = ContextVar("modelsec_progress_open", default=None)


def standing(samples: int, each: float) -> None:
    """From the innermost loop of a group's work: ``samples`` still standing, each with ``each`` units of work left
    in this loop (APGD: the steps left times the passes per step). The enclosing :func:`stage` loops add the work
    of their later iterations. A context-variable lookup when nobody listens."""
    work = _LISTENER.get()
    if work is None:
        return
    left = samples * each
    for s in work._stages:
        left += s.after(samples)
    work._estimate(samples, each, left)


@contextlib.contextmanager
def stage() -> Iterator[Stage]:
    """An enclosing loop of a group's work (restarts, targets): set ``stage.after`` at each iteration to the work
    its later iterations will cost on the samples standing, e.g. ``lambda m: (restarts - r - 1) * m * per_run``."""
    work = _LISTENER.get()
    s = Stage()
    if work is None:
        yield s
        return
    work._stages.append(s)
    try:
        yield s
    finally:
        if s in work._stages:
            work._stages.remove(s)


class Progress:
    """The no-op base: ``task`` yields a function that ignores its argument; ``work`` a :class:`Work` that keeps
    no estimate."""

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        yield lambda n: None

    @contextlib.contextmanager
    def work(self, description: str, total: int, spent: Callable[[], float] | None = None) -> Iterator[Work]:
        """A task whose remaining work is re-estimated as it runs (see :class:`Work`); ``spent()`` reads the work
        spent so far in the cost unit. Here: the :meth:`task` of the same description and total, whose advance the
        Work calls; it keeps an estimate only when :meth:`listens` (a subclass that shows or records one)."""
        with self.task(description, total) as advance:
            work = Work(description, total, advance, spent, live=self.listens())
            with _linked(work):
                yield work

    def listens(self) -> bool:
        """Whether :meth:`work` keeps estimates (someone shows them)."""
        return False

    def note(self, message: str) -> None:
        """A one-line status message (shown by the CLI unless quiet)."""


NullProgress = Progress


class RichProgress(Progress):
    """Rich progress bars on a terminal; a plain line per finished task when the stream is not a TTY.

    On a terminal, the tasks open at once share one live display (an audit's plan above the attack under way); a
    task opened with :meth:`work` shows the part of its work done, the samples still standing and the survivor-based
    time left (``~0:01:05``, or ``>0:01:05`` while a later part's cost is still unknown); a finished task leaves one
    line. Off a terminal, a line per finished task: its seconds, and for :meth:`work` the samples still standing."""

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: Any = None  # the live rich display, while a task is open

    def listens(self) -> bool:
        return self.interactive and not self.quiet

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        with self.work(description, total) as work:
            yield work.advance

    @contextlib.contextmanager
    def work(self, description: str, total: int, spent: Callable[[], float] | None = None) -> Iterator[Work]:
        if self.quiet:
            yield Work(description, total, _ignore, spent)
            return
        start = time.perf_counter()
        if not self.interactive:
            work = Work(description, total, _ignore, spent)
            yield work
            print(f"{description}: done in {time.perf_counter() - start:.1f} s{_standing(work)}", file=self.stream)
            return
        with self._live() as bar:
            task_id = bar.add_task(description, total=max(total, 1))
            work = Work(description, total, lambda n: bar.advance(task_id, n), spent, live=True)
            bar.update(task_id, work=work)
            try:
                with _linked(work):
                    yield work
            finally:
                bar.remove_task(task_id)
            line = f"{description}: done in {time.perf_counter() - start:.1f} s{_standing(work)}"
            bar.console.print(line, markup=False, highlight=False)

    @contextlib.contextmanager
    def _live(self) -> Iterator[Any]:
        """The one live display, opened by the outermost task and closed with it."""
        if self._bar is not None:
            yield self._bar
            return
        from rich.console import Console
        from rich.progress import MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as _RichProgress

        columns = (
            TextColumn("{task.description}"),
            _bar_column(),
            MofNCompleteColumn(),
            _standing_column(),
            TimeElapsedColumn(),
            _time_left_column(),
        )
        with _RichProgress(*columns, console=Console(file=self.stream), transient=True) as bar:
            self._bar = bar
            try:
                yield bar
            finally:
                self._bar = None

    def note(self, message: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream)


@contextlib.contextmanager
def _linked(work: Work) -> Iterator[None]:
    """While ``work`` is open: the innermost open live Work, and its parent's child."""
    if not work.live:
        yield
        return
    work.parent = _OPEN.get()
    if work.parent is not None:
        work.parent.child = work
    token = _OPEN.set(work)
    try:
        yield
    finally:
        _OPEN.reset(token)
        if work.parent is not None:
            work.parent.child = None


def _ignore(n: int) -> None:
    return None


def _standing(work: Work) -> str:
    return f", {work.standing} of {work.of} standing" if work.standing is not None else ""


def format_left(seconds: float | None, lower_bound: bool) -> str:
    """``~0:01:05`` for an estimate, ``>0:01:05`` for a lower bound, ``-:--:--`` while unknown.

    >>> format_left(65.2, False), format_left(3725, True), format_left(None, False)
    ('~0:01:05', '>1:02:05', '-:--:--')
    """
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    s = max(0, round(seconds))
    return f"{'>' if lower_bound else '~'}{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _time_left_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class TimeLeft(ProgressColumn):
        """The survivor-based time left of a task's :class:`Work`."""

        def render(self, task: Any) -> Text:
            work = task.fields.get("work")
            text = format_left(*work.seconds_left()) if isinstance(work, Work) and not task.finished else "-:--:--"
            return Text(text, style="progress.remaining")

    return TimeLeft()


def _bar_column() -> Any:
    from rich.progress import BarColumn
    from rich.progress_bar import ProgressBar

    class WorkBar(BarColumn):
        """The part of a task's work done (:meth:`Work.fraction`), else of its items."""

        def render(self, task: Any) -> ProgressBar:
            work = task.fields.get("work")
            fraction = work.fraction() if isinstance(work, Work) and not task.finished else None
            if fraction is None:
                return super().render(task)
            return ProgressBar(
                total=1000,
                completed=round(1000 * fraction),
                width=None if self.bar_width is None else max(1, self.bar_width),
                animation_time=task.get_time(),
                style=self.style,
                complete_style=self.complete_style,
                finished_style=self.finished_style,
                pulse_style=self.pulse_style,
            )

    return WorkBar()


def _standing_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Standing(ProgressColumn):
        """The samples a task's :class:`Work` still has standing."""

        def render(self, task: Any) -> Text:
            work = task.fields.get("work")
            standing = work.innermost().standing if isinstance(work, Work) else None
            return Text("" if standing is None else f"{standing} standing", style="progress.data.speed")

    return Standing()
