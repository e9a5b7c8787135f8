"""Progress of long work: rich bars (counts and ETA) in a terminal, periodic log lines elsewhere
(Databricks job output, CI logs, a redirected stream)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol

log = logging.getLogger("lewin.progress")


class ProgressTask(Protocol):
    def update(self, done: int, total: int | None = None) -> None: ...

    def advance(self, n: int = 1) -> None: ...


class _LogTask:
    """A task that logs ``label: done/total (rate, ETA)`` at most every ``every_s`` seconds."""

    def __init__(self, label: str, unit: str, total: int | None, every_s: float):
        self.label, self.unit, self.total, self.every_s = label, unit, total, every_s
        self.done = 0
        self._t0 = self._last = time.monotonic()

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if now - self._last >= self.every_s or finished:
            self._last = now
            rate = self.done / max(now - self._t0, 1e-9)
            eta = ""
            if self.total and rate > 0 and not finished:
                eta = f", ETA {(self.total - self.done) / rate:.0f}s"
            of = f"/{self.total}" if self.total is not None else ""
            log.info("%s: %d%s %s (%.1f/s%s)", self.label, self.done, of, self.unit, rate, eta)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)


class _RichTask:
    def __init__(self, progress, task_id):
        self._p, self._id = progress, task_id
        self.done = 0

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self._p.update(self._id, completed=done, total=total)
        else:
            self._p.update(self._id, completed=done)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)


class StageProgress:
    """Hands out progress tasks; one rich display for the whole process when on a TTY."""

    def __init__(self, rich_progress=None, every_s: float = 30.0):
        self._rich = rich_progress
        self.every_s = every_s

    @classmethod
    def for_terminal(cls, every_s: float = 30.0) -> "StageProgress":
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=False)
            return cls(progress, every_s)
        return cls(None, every_s)

    def task(self, label: str, unit: str, total: int | None = None) -> ProgressTask:
        if self._rich is None:
            return _LogTask(label, unit, total, self.every_s)
        if not self._rich.live.is_started:
            self._rich.start()
        return _RichTask(self._rich, self._rich.add_task(label, total=total, unit=unit))

    def close(self) -> None:
        if self._rich is not None and self._rich.live.is_started:
            self._rich.stop()
