"""Progress bars on a terminal while ``phobos run`` works (rich, imported lazily).

One bar per running step (so one per host of a parallel pull) with what its program
reports (bytes, files, rate), the time it has taken and the time left: the program's
own estimate, otherwise the job's typical duration counted from its first step. The
run's log lines are printed above the bars, which disappear when the run ends. Used only
when stderr is a terminal; elsewhere the run logs one progress line a minute instead
(:class:`~phobos.core.progress.RunTracker`).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

from phobos.core.model import format_duration, format_size
from phobos.core.progress import ActiveStep


class TerminalBars:
    """A :class:`~phobos.core.progress.ProgressListener` drawing rich progress bars on
    stderr; ``typical`` is the job's usual duration in seconds (None: unknown)."""

    def __init__(self, typical: float | None = None, *, console: Any = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console if console is not None else Console(stderr=True)
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24),
                             TextColumn("{task.fields[told]}"), TimeElapsedColumn(),
                             _time_left_column(self), console=self.console,
                             transient=True, refresh_per_second=4)
        self.typical = typical
        self._first_step: float | None = None
        self._tasks: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> TerminalBars:
        self.bars.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.bars.stop()

    def echo(self, line: str) -> None:
        """A log line, printed above the bars."""
        self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def show(self, key: int, step: ActiveStep | None) -> None:
        with self._lock:
            task = self._tasks.get(key)
            if step is None:
                if task is not None:
                    self.bars.remove_task(self._tasks.pop(key))
                return
            if self._first_step is None:
                self._first_step = step.started
            share = step.progress.share if step.progress is not None else None
            told, eta = self._told(step), step.eta
            if task is None:
                task = self.bars.add_task(self._name(step), total=None, told=told, eta=eta)
                self._tasks[key] = task
            if share is None:
                self.bars.update(task, total=None, told=told, eta=eta)
            else:
                self.bars.update(task, total=1.0, completed=share, told=told, eta=eta)

    @staticmethod
    def _name(step: ActiveStep) -> str:
        return step.step if not step.label or step.label in step.step \
            else f"{step.label}: {step.step}"

    @staticmethod
    def _told(step: ActiveStep) -> str:
        """Short: the bar shows the share, the log line says everything."""
        told = step.progress
        if told is None:
            return ""
        parts = []
        if told.segments_done is not None and told.segments_total:
            parts.append(f"{told.segments_done}/{told.segments_total} segments")
        if told.bytes_done is not None:
            parts.append(format_size(told.bytes_done))
        if told.files_done is not None:
            parts.append(f"{told.files_done} files")
        if told.rate:
            parts.append(f"{format_size(told.rate)}/s")
        if told.detail and not parts:
            parts.append(told.detail)
        return ", ".join(parts)

    def time_left(self, eta: float | None) -> str:
        """The program's own time left (``eta``, a timestamp), else the typical
        duration's; empty when neither is known."""
        if eta is not None:
            return f"{_short(max(0.0, eta - time.time()))} left"
        if self.typical is None or self._first_step is None:
            return ""
        left = self._first_step + self.typical - time.time()
        if left <= 0:
            return f"over the usual {_short(self.typical)}"
        return f"~{_short(left)} left"


def _time_left_column(bars: TerminalBars) -> Any:
    """A rich column showing :meth:`TerminalBars.time_left`, recomputed at each redraw."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class TimeLeft(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(bars.time_left(task.fields.get("eta")))

    return TimeLeft()


def _short(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 60 else format_duration(seconds)
