"""Progress of a running job: what its steps report, and the live state other processes read.

A step whose program reports progress (Borg ``--progress --log-json``, rsync
``--info=progress2``) carries a *reader* (:data:`ReaderFactory`, built in ``tools/``):
:func:`phobos.core.proc.run` hands it every output line (split at carriage returns too)
and the reader returns a :class:`Reading`: the text to keep in the run's log (or none)
and, for a progress line, a :class:`Progress`. Progress lines never reach the log.

One :class:`RunTracker` per run collects the steps running now and their latest
progress. It writes them to ``RUN/progress/<run_id>.json`` (atomic replace, at most
every :data:`WRITE_SECONDS`, plus at each step's start and end) for ``phobos status``,
the dashboard and people waiting for a lock (:func:`read_live`); it removes the file when
the run ends, and a reader ignores a file whose process is gone. It tells a listener
(terminal bars) about every change, and once a minute writes one progress line into the
run's log (the only trace of progress in the log).

Writing the state file is best effort: a run never fails because its progress could not
be shown.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

from phobos.core.files import write_atomic
from phobos.core.model import format_duration, format_size

WRITE_SECONDS = 0.5
LOG_EVERY_SECONDS = 60.0
STATE_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """How far one step is, as far as its program tells. Unknown values are None.

    ``fraction`` is the program's own share of the work done (0..1); ``rate`` is in
    bytes per second; ``eta`` is the program's own estimate of the seconds left (for a
    time-boxed check: what is left of its time box); ``detail`` names a phase ("Saving
    files cache"), never a file.
    """

    bytes_done: int | None = None
    bytes_total: int | None = None
    files_done: int | None = None
    files_total: int | None = None
    deduplicated_bytes: int | None = None
    segments_done: int | None = None
    segments_total: int | None = None
    fraction: float | None = None
    rate: float | None = None
    eta: float | None = None
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        """``bytes_done``, ``bytes_total`` and ``files_done`` always (None when unknown),
        the other values only when known."""
        data: dict[str, Any] = {"bytes_done": self.bytes_done,
                                "bytes_total": self.bytes_total,
                                "files_done": self.files_done}
        for fld in fields(self):
            value = getattr(self, fld.name)
            if value is not None:
                data[fld.name] = value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Progress:
        known = {fld.name for fld in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    @property
    def share(self) -> float | None:
        """The fraction done: the program's own, or bytes done of a known total."""
        if self.fraction is not None:
            return max(0.0, min(1.0, self.fraction))
        if self.bytes_done is not None and self.bytes_total:
            return max(0.0, min(1.0, self.bytes_done / self.bytes_total))
        return None

    def describe(self) -> str:
        """One line for people: ``1.2 GiB read (300.0 MiB new), 1234 files, 45.0 MiB/s``."""
        parts = []
        if self.segments_done is not None and self.segments_total:
            parts.append(f"segment {self.segments_done} of {self.segments_total}")
        if self.bytes_done is not None:
            total = f" of {format_size(self.bytes_total)}" if self.bytes_total else ""
            new = (f" ({format_size(self.deduplicated_bytes)} new)"
                   if self.deduplicated_bytes is not None else "")
            parts.append(f"{format_size(self.bytes_done)}{total}{new}")
        if self.files_done is not None:
            total = f" of {self.files_total}" if self.files_total else ""
            parts.append(f"{self.files_done}{total} files")
        if self.share is not None:
            parts.append(f"{100 * self.share:.0f}%")
        if self.rate:
            parts.append(f"{format_size(self.rate)}/s")
        if self.detail:
            parts.append(self.detail)
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class Reading:
    """What a reader made of one output line: ``text`` for the log (None: nothing; may
    hold several lines) and the ``progress`` it reported, if it was a progress line."""

    text: str | None
    progress: Progress | None = None


LineReader = Callable[[str, str], Reading]
"""Reads one output line: (stream, line) -> Reading. Keeps state between lines."""

ReaderFactory = Callable[[], LineReader]
"""Makes a fresh reader for one run of a step."""


class RateMeter:
    """Bytes (or anything) per second over the last ``window`` seconds of samples."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, when: float, amount: float) -> float | None:
        """Record the running total ``amount`` at ``when``; the rate, once two samples
        at different times exist."""
        self._samples.append((when, amount))
        while len(self._samples) > 2 and when - self._samples[1][0] >= self.window:
            self._samples.popleft()
        first_when, first_amount = self._samples[0]
        if when <= first_when:
            return None
        return max(0.0, (amount - first_amount) / (when - first_when))


# --- one run's live state --------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveStep:
    """A step running now: its name, its label (the host of a parallel pull), when it
    started and its latest progress (None until its program reports any)."""

    step: str
    label: str
    started: float
    updated: float
    progress: Progress | None = None

    def as_json(self) -> dict[str, Any]:
        return {"step": self.step, "label": self.label, "started": self.started,
                "updated": self.updated,
                "progress": None if self.progress is None else self.progress.as_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ActiveStep:
        progress = data.get("progress")
        return cls(step=str(data["step"]), label=str(data.get("label") or ""),
                   started=float(data["started"]), updated=float(data["updated"]),
                   progress=None if progress is None else Progress.from_json(progress))

    @property
    def eta(self) -> float | None:
        """When the program expects to finish (a timestamp), if it says."""
        if self.progress is None or self.progress.eta is None:
            return None
        return self.updated + self.progress.eta

    def describe(self) -> str:
        name = f"{self.label}: {self.step}" if self.label and self.label not in self.step \
            else self.step
        told = self.progress.describe() if self.progress is not None else ""
        return f"{name}: {told}" if told else name


class ProgressListener(Protocol):
    """Told about every change of a run's steps (terminal bars)."""

    def show(self, key: int, step: ActiveStep | None) -> None:
        """Step ``key`` started or progressed (``step``), or ended (None)."""


def state_directory(run_dir: Path) -> Path:
    """Where running jobs keep their live state: ``[paths] run``/progress."""
    return run_dir / "progress"


class RunTracker:
    """The live state of one run; thread-safe (parallel pulls report from threads).

    ``directory`` None keeps the state in memory only. ``log`` receives the
    once-a-minute progress line; ``listener`` every change.
    """

    def __init__(self, directory: Path | None, *, run_id: int, job: str,
                 listener: ProgressListener | None = None,
                 log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.run_id = run_id
        self.job = job
        self.listener = listener
        self.log = log
        self._clock = clock
        self._path = None if directory is None else directory / f"{run_id}.json"
        self._steps: dict[int, ActiveStep] = {}
        self._lock = threading.Lock()
        self._started = clock()
        self._next_write = 0.0
        self._next_log = self._started + LOG_EVERY_SECONDS
        self._dirty = False
        if directory is not None:
            self._prepare(directory)

    def _prepare(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            remove_stale(directory)
        except OSError:
            self._path = None  # progress is best effort; the run goes on

    @property
    def steps(self) -> list[ActiveStep]:
        with self._lock:
            return list(self._steps.values())

    def step_started(self, key: int, step: str, label: str = "") -> None:
        now = self._clock()
        active = ActiveStep(step=step, label=label, started=now, updated=now)
        with self._lock:
            self._steps[key] = active
            self._write(force=True)
        self._tell(key, active)

    def update(self, key: int, progress: Progress) -> None:
        """The latest progress of step ``key`` (ignored once the step ended)."""
        with self._lock:
            current = self._steps.get(key)
            if current is None:
                return
            active = replace(current, progress=progress, updated=self._clock())
            self._steps[key] = active
            self._dirty = True
            self._write(force=False)
            line = self._minute_line()
        self._tell(key, active)
        if line is not None and self.log is not None:
            self.log(line)

    def step_finished(self, key: int) -> None:
        with self._lock:
            if self._steps.pop(key, None) is None:
                return
            self._write(force=True)
        self._tell(key, None)

    def close(self) -> None:
        """The run ended: remove its state file."""
        with self._lock:
            self._steps.clear()
            if self._path is not None:
                with contextlib.suppress(OSError):
                    self._path.unlink()
                self._path = None

    def _tell(self, key: int, step: ActiveStep | None) -> None:
        if self.listener is not None:
            self.listener.show(key, step)

    def _minute_line(self) -> str | None:
        now = self._clock()
        if now < self._next_log:
            return None
        self._next_log = now + LOG_EVERY_SECONDS
        told = "; ".join(s.describe() for s in self._steps.values() if s.progress)
        elapsed = format_duration(now - self._started)
        return f"progress after {elapsed}: {told}" if told else None

    def _write(self, *, force: bool) -> None:
        if self._path is None or not (force or self._dirty):
            return
        if not force and time.monotonic() < self._next_write:
            return
        from phobos.core.history import process_start_ticks

        pid = os.getpid()
        state = {"version": STATE_VERSION, "run": self.run_id, "job": self.job, "pid": pid,
                 "pid_start": process_start_ticks(pid), "updated": self._clock(),
                 "steps": [s.as_json() for s in self._steps.values()]}
        try:
            write_atomic(self._path, json.dumps(state))
        except OSError:
            self._path = None  # e.g. the run directory went away: stop trying
        self._next_write = time.monotonic() + WRITE_SECONDS
        self._dirty = False


# --- reading the live state (other processes) -------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LiveRun:
    """What a running job's state file says."""

    run: int
    job: str
    pid: int
    updated: float
    steps: tuple[ActiveStep, ...]

    @property
    def step(self) -> str | None:
        """The running step's name; several (parallel pulls) joined by ", "."""
        return ", ".join(s.step for s in self.steps) or None

    @property
    def progress(self) -> Progress | None:
        return combined([s.progress for s in self.steps if s.progress is not None])

    @property
    def eta(self) -> float | None:
        """The latest end any running step's program expects (a timestamp)."""
        found = [eta for s in self.steps if (eta := s.eta) is not None]
        return max(found) if found else None


def _alive(pid: int, pid_start: int | None) -> bool:
    from phobos.core.history import process_start_ticks  # sqlite: not for every command

    ticks = process_start_ticks(pid)
    return ticks is not None and (pid_start is None or ticks == pid_start)


def _read_state(path: Path) -> LiveRun | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != STATE_VERSION:
            return None
        pid = int(data["pid"])
        if not _alive(pid, data.get("pid_start")):
            return None
        return LiveRun(run=int(data["run"]), job=str(data["job"]), pid=pid,
                       updated=float(data["updated"]),
                       steps=tuple(ActiveStep.from_json(s) for s in data["steps"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # being replaced, unreadable to this user, or garbage: no live state


def read_live(directory: Path) -> dict[int, LiveRun]:
    """Run id -> live state, for every state file whose phobos process is still there."""
    try:
        paths = sorted(directory.glob("*.json"))
    except OSError:
        return {}
    found = {}
    for path in paths:
        live = _read_state(path)
        if live is not None:
            found[live.run] = live
    return found


def remove_stale(directory: Path) -> None:
    """Remove state files left by runs whose process is gone (killed, power loss)."""
    for path in directory.glob("*.json"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            stale = not _alive(int(data["pid"]), data.get("pid_start"))
        except (ValueError, KeyError, TypeError, AttributeError):
            stale = True
        except OSError:
            continue
        if stale:
            with contextlib.suppress(OSError):
                path.unlink()


def _sum(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def combined(parts: Sequence[Progress]) -> Progress | None:
    """The progress of steps running side by side (one pull per host): counts and rates
    added up, totals only when every part knows its own, the mean of known fractions."""
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    fractions = [p.share for p in parts]
    totals = [p.bytes_total for p in parts]
    return Progress(
        bytes_done=_sum(p.bytes_done for p in parts),
        bytes_total=None if None in totals else _sum(totals),
        files_done=_sum(p.files_done for p in parts),
        deduplicated_bytes=_sum(p.deduplicated_bytes for p in parts),
        fraction=None if None in fractions
        else sum(f for f in fractions if f is not None) / len(parts),
        rate=None if all(p.rate is None for p in parts) else sum(p.rate or 0.0 for p in parts),
        eta=None if any(p.eta is None for p in parts) else max(p.eta or 0.0 for p in parts))
