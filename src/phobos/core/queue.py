"""The line in front of the resource locks: runs take their turn in a fixed order.

``flock`` alone is not fair: when a lock is released, whichever waiter polls first gets
it, so what the schedule predicts would not be what happens. Every run therefore takes a
*ticket* in ``RUN/locks/queue/`` when it starts to wait, and keeps it until it has
released its locks. A ticket names the run, its :class:`Place` in line and the resources
it will lock (name → writes?). A run may try its locks only when no live ticket ahead of
it wants a conflicting resource (readers share, writers exclude): a reader that arrives
while readers hold may join them only if no earlier writer waits. (One exception, decided
by the order rules: a run still waiting for its predecessors holds back only the later
runs of its own slot.)

Which place a run gets (the time of its calendar slot and its rank there, or the moment
it started) is decided by :mod:`phobos.core.order`; here a place is just a sort key.

A ticket is alive while its owner lives: the owner holds an ``flock`` on the ticket file
from before the file appears under its final name until it is removed, and the kernel
drops that lock when the process dies, even by SIGKILL. Anyone who can lock a ticket file
has found a dead ticket and removes it. No PID is looked up, so this also works inside
systemd units whose ``ProtectProc=invisible`` hides the other runs' processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SUFFIX = ".ticket"
STALE_TEMP_SECONDS = 60.0
_serial = itertools.count(1)


@dataclass(frozen=True, slots=True, order=True)
class Place:
    """A run's place in line: earlier ``when`` first, then lower ``rank``."""

    when: float  # epoch seconds: the run's calendar slot, or when it started
    rank: int = 0  # order among the runs of one slot (see phobos.core.order)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticket:
    name: str  # the file name: unique, and the last tie-breaker
    job: str
    run_id: int
    pid: int
    since: float  # when the run took the ticket
    place: Place
    resources: Mapping[str, bool]  # resource name -> exclusive (writes)

    @property
    def order(self) -> tuple[float, int, float, str]:
        return (self.place.when, self.place.rank, self.since, self.name)

    def ahead_of(self, other: Ticket) -> bool:
        return self.order < other.order

    def conflicts(self, resources: Mapping[str, bool]) -> list[str]:
        """Resources both want where at least one writes, in the global order."""
        return sorted(name for name, write in resources.items()
                      if name in self.resources and (write or self.resources[name]))

    def describe(self) -> str:
        since = time.strftime("%H:%M:%S", time.localtime(self.since))
        return f"job {self.job} (run {self.run_id}, pid {self.pid}, in line since {since})"


@dataclass(frozen=True, slots=True)
class Wait:
    """Why a run cannot take its locks yet: ``text`` for its log ("waiting for ..."),
    ``refusal`` for a run that gives up on it, ``jobs`` waited for. ``busy``: another
    run has (or is ahead in line for) what it needs, so ``on_busy`` applies; otherwise
    the run waits for its turn (its predecessors, or the runs of its slot that go
    first), whatever its ``on_busy``."""

    text: str
    jobs: tuple[str, ...]
    busy: bool
    refusal: str = ""


class Line:
    """One run's ticket: :meth:`enter` the line, look at :meth:`tickets`, :meth:`leave`."""

    def __init__(self, directory: Path, *, job: str, run_id: int, place: Place,
                 resources: Mapping[str, bool]) -> None:
        self.directory = directory
        self.job = job
        self.run_id = run_id
        self.place = place
        self.resources = dict(resources)
        self.name = f"{time.time_ns()}-{os.getpid()}-{next(_serial)}{SUFFIX}"
        # Both paths are known before anything is created, so leave() can clean up after
        # an interruption at any point of enter().
        self._path = directory / self.name
        self._temp = directory / f".{self.name}.tmp"
        self._fd: int | None = None

    def enter(self) -> None:
        """Take the ticket (idempotent). The file is locked before it gets its name."""
        if self._fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._fd = fd
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: never blocks
        data = {"job": self.job, "run_id": self.run_id, "pid": os.getpid(),
                "since": time.time(), "when": self.place.when, "rank": self.place.rank,
                "resources": self.resources}
        os.write(fd, json.dumps(data).encode())
        os.rename(self._temp, self._path)

    def leave(self) -> None:
        """Give the ticket back (idempotent, safe after a failed or interrupted enter)."""
        for path in (self._path, self._temp):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def tickets(self) -> list[Ticket]:
        """Every live ticket (this one included), first in line first."""
        return live_tickets(self.directory)

    def mine(self, tickets: Sequence[Ticket]) -> Ticket | None:
        return next((t for t in tickets if t.name == self.name), None)

    def ahead(self, tickets: Sequence[Ticket],
              held_back: Callable[[Ticket], bool] | None = None) -> list[Ticket]:
        """Live tickets ahead of this one that want a resource in a conflicting way,
        except those ``held_back`` says do not stand in this run's way (yet)."""
        own = self.mine(tickets)
        if own is None:  # not in line (yet): nobody is ahead
            return []
        return [t for t in tickets if t.ahead_of(own) and t.conflicts(self.resources)
                and not (held_back is not None and held_back(t))]


def live_tickets(directory: Path) -> list[Ticket]:
    """The live tickets in ``directory``, in line order; dead ones are removed."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if name.endswith(SUFFIX) and not name.startswith("."):
            ticket = _read_if_alive(directory / name)
            if ticket is not None:
                found.append(ticket)
        elif name.endswith(".tmp") and name.startswith("."):
            _remove_stale_temp(directory / name)
    return sorted(found, key=lambda t: t.order)


def _read_if_alive(path: Path) -> Ticket | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # its owner holds it: alive
            return _parse(path.name, os.read(fd, 1 << 16))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # nobody holds it: its owner died
        return None
    finally:
        os.close(fd)


def _parse(name: str, raw: bytes) -> Ticket | None:
    try:
        data = json.loads(raw)
        return Ticket(name=name, job=str(data["job"]), run_id=int(data["run_id"]),
                      pid=int(data["pid"]), since=float(data["since"]),
                      place=Place(float(data["when"]), int(data["rank"])),
                      resources={str(k): bool(v) for k, v in data["resources"].items()})
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not written by this phobos: ignored, not trusted


def _remove_stale_temp(path: Path) -> None:
    """A ticket whose owner was killed between creating and naming it."""
    with contextlib.suppress(OSError):
        if time.time() - path.stat().st_mtime > STALE_TEMP_SECONDS:
            path.unlink()
