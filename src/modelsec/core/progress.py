"""Progress reporting that library code can call without knowing about terminals.

Long-running functions take a ``progress: Progress`` argument and wrap their work in
``with progress.task("PGD eps=0.1", total=n) as advance: ... advance(k)``. The default, :class:`NullProgress`,
does nothing; the CLI passes a :class:`RichProgress` (bars on a terminal, plain lines otherwise, nothing with
``--quiet``).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO

Advance = Callable[[int], None]


class Progress:
    """The no-op base: ``task`` yields a function that ignores its argument."""

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        yield lambda n: None

    def note(self, message: str) -> None:
        """A one-line status message (shown by the CLI unless quiet)."""


NullProgress = Progress


class RichProgress(Progress):
    """Rich progress bars on a terminal; a plain line per finished task when the stream is not a TTY."""

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        if self.quiet:
            yield lambda n: None
            return
        start = time.perf_counter()
        if self.interactive:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as _RichProgress

            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            with _RichProgress(*columns, console=Console(file=self.stream), transient=False) as bar:
                task_id = bar.add_task(description, total=max(total, 1))
                yield lambda n: bar.advance(task_id, n)
        else:
            yield lambda n: None
            print(f"{description}: done in {time.perf_counter() - start:.1f} s", file=self.stream)

    def note(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream)
