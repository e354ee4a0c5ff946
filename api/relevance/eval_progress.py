"""Progress of ``sieve eval``'s long steps: a live bar on a terminal, plain lines in a log.

A log (output redirected, a CI job) gets one line every ``every_s`` seconds and one at the end, e.g.
``indexing documents: 1,200/5,183 (23.2/s, ETA 2m52s)``; a terminal gets rich's bar instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn


def duration(seconds: float) -> str:
    """``2m52s``, ``1h03m``, ``9s``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class LogProgress:
    """Counts done items and prints a line at most every ``every_s`` seconds (and when complete)."""

    def __init__(
        self,
        console: Console,
        label: str,
        total: int,
        *,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console, self.label, self.total, self.every_s = console, label, total, every_s
        self._clock = clock
        self.started = self._clock()
        self._last = self.started
        self.done = 0

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = self._clock()
        if self.done >= self.total or now - self._last >= self.every_s:
            self._last = now
            self.console.print(self.line(now), markup=False, highlight=False)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.label}: {self.done:,}/{self.total:,} ({rate:.1f}/s"
        if self.done < self.total and rate > 0:
            text += f", ETA {duration((self.total - self.done) / rate)}"
        elif self.done >= self.total:
            text += f", {duration(elapsed)}"
        return text + ")"


@contextmanager
def progress(console: Console, label: str, total: int) -> Iterator[LogProgress | _Bar]:
    """An object with ``advance(n=1)``: rich's bar on a terminal, ``LogProgress`` lines otherwise."""
    if not console.is_terminal:
        yield LogProgress(console, label, total)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        yield _Bar(bar, bar.add_task(label, total=total))


class _Bar:
    def __init__(self, bar: Progress, task: TaskID) -> None:
        self._bar, self._task = bar, task

    def advance(self, count: int = 1) -> None:
        self._bar.advance(self._task, count)
