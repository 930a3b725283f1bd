"""Resource locks: ``fcntl.flock`` files under the run directory.

A job declares the resources it reads or writes (``holding:luv``, ``repo:main``,
``drive:ext-a``, ``storage``...). Two jobs conflict when they share a resource and at
least one writes it: readers take shared locks, writers exclusive ones. Locks are
always taken in one global order (sorted by name), so two runs can never deadlock.

Waiting runs take their turn in a fair line (:mod:`phobos.core.queue`): a run holds a
ticket from its first attempt until it releases its locks, tries its locks only when no
run ahead of it in line wants a conflicting resource, and then takes all of them at once
(in the global order; if one is held it releases the others and tries again), so a
waiting run never sits on a resource that someone else could use meanwhile.

The kernel releases a flock when its holder dies, even by SIGKILL, so a lock can
never be left behind. Who holds a lock is written next to it as
``NAME.PID.holder`` (JSON: job, run id, PID, since); a record counts only while
``/proc/locks`` shows that PID holding the lock file, so stale records are harmless.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from phobos.core.files import write_atomic
from phobos.core.model import BusyPolicy, format_duration
from phobos.core.queue import Line, Place, Ticket, Wait
from phobos.errors import Busy, PhobosError

POLL_SECONDS = 0.2
REPORT_EVERY_SECONDS = 60.0


@dataclass(frozen=True, slots=True, order=True)
class Resource:
    """Something two jobs must not use at once. ``write`` makes the lock exclusive.

    Names are ``KIND:TARGET`` (``holding:luv``, ``repo:main``, ``drive:ext-a``) or a bare
    kind (``storage``); build phobos's own with :func:`holding`, :func:`repo`,
    :func:`drive`, :func:`storage` and :func:`net`. A ``command`` job may name its own kinds.
    """

    name: str
    write: bool = True

    def __str__(self) -> str:
        return f"{self.name} ({'write' if self.write else 'read'})"

    @property
    def kind(self) -> str:
        """``drive`` of ``drive:ext-a``; the whole name when it has no target."""
        return self.name.partition(":")[0]

    @property
    def target(self) -> str:
        """``ext-a`` of ``drive:ext-a``; empty when the name has no target."""
        return self.name.partition(":")[2]


HOLDING, REPO, DRIVE, STORAGE, NET = "holding", "repo", "drive", "storage", "net"


def holding(host: str, *, write: bool) -> Resource:
    """A host's folder in the holding area (pulls write it, archives read it)."""
    return Resource(f"{HOLDING}:{host}", write=write)


def repo(name: str, *, write: bool) -> Resource:
    """A Borg repository (writers exclude each other; Borg itself locks even readers)."""
    return Resource(f"{REPO}:{name}", write=write)


def drive(name: str) -> Resource:
    """An off-site drive: one user at a time (unlocking and mounting change it)."""
    return Resource(f"{DRIVE}:{name}", write=True)


def storage(*, write: bool) -> Resource:
    """The backup filesystem as a whole (a check of it writes; users of parts read)."""
    return Resource(STORAGE, write=write)


def net(link: str, *, write: bool) -> Resource:
    """A network link off the NAS (a server's name, or a link named in the config):
    jobs moving bulk data over it (writers) take turns; light users share it."""
    return Resource(f"{NET}:{link}", write=write)


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    resource: str
    job: str
    run_id: int
    pid: int
    since: float
    write: bool

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"job {self.job} (run {self.run_id}, pid {self.pid}, since {since})"


def merge(resources: Sequence[Resource]) -> list[Resource]:
    """One entry per name, exclusive if any use writes; in the global lock order."""
    merged: dict[str, bool] = {}
    for res in resources:
        merged[res.name] = merged.get(res.name, False) or res.write
    return [Resource(name, write) for name, write in sorted(merged.items())]


# File names are at most 255 bytes; a long resource (a repo-path: of a borgmatic
# repository) keeps its start readable and ends in a digest of the whole name.
_STEM_MAX = 200


def _file_stem(name: str) -> str:
    # Resource names come from validated config names; keep the file name readable.
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", name.replace(":", "--"))
    if len(stem) <= _STEM_MAX:
        return stem
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{stem[:_STEM_MAX - 17]}-{digest}"


class Order(Protocol):
    """Rules deciding a run's turn beyond the line itself (see phobos.core.order)."""

    place: Place

    def __call__(self, tickets: Sequence[Ticket]) -> Wait | None: ...

    def held_back(self, ticket: Ticket, tickets: Sequence[Ticket]) -> bool: ...


BUSY_HINT = "the job will run next time, or wait with on_busy = \"wait\""


class LockSet:
    """Locks held by one run; released by :meth:`release` or when the process dies."""

    def __init__(self, directory: Path, job: str, run_id: int) -> None:
        self.directory = directory
        self.job = job
        self.run_id = run_id
        self._held: list[tuple[Resource, int]] = []
        self._line: Line | None = None

    def acquire(self, resources: Sequence[Resource], policy: BusyPolicy, timeout: float,
                on_wait: Callable[[str], None] | None = None,
                order: Order | None = None) -> None:
        """Wait for this run's turn, then take every lock at once, in global order.

        The run's place in line is ``order.place`` (without ``order``: now). While
        ``order`` names something to wait for, or a run ahead in line or a holder has a
        conflicting resource, ``wait`` polls until ``timeout`` seconds have passed, then
        raises Busy; ``skip`` and ``fail`` raise Busy at once when a resource is busy
        (but wait for their turn like everyone). On any exception (also an interruption
        by a signal) nothing stays held and the ticket is given back.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        merged = merge(resources)
        place = order.place if order is not None else Place(time.time())
        self._line = Line(self.directory / "queue", job=self.job, run_id=self.run_id,
                          place=place, resources={r.name: r.write for r in merged})
        try:
            self._line.enter()
            self._wait_turn(merged, policy, time.monotonic() + timeout, on_wait, order)
        except BaseException:
            self.release()
            raise

    def _wait_turn(self, merged: list[Resource], policy: BusyPolicy, deadline: float,
                   on_wait: Callable[[str], None] | None, order: Order | None) -> None:
        reported: tuple[str, ...] | None = None
        next_report = 0.0
        while True:
            wait = self._blocked(merged, order)
            if wait is None:
                return
            if (wait.busy and policy is not BusyPolicy.WAIT) or time.monotonic() >= deadline:
                raise Busy(wait.refusal or f"gave up {wait.text}", BUSY_HINT if wait.busy
                           else "raise busy_timeout, or see why the run it waits for is late")
            if on_wait is not None and (wait.jobs != reported
                                        or time.monotonic() >= next_report):
                left = format_duration(deadline - time.monotonic())
                on_wait(f"{wait.text} (giving up in {left})")
                reported, next_report = wait.jobs, time.monotonic() + REPORT_EVERY_SECONDS
            time.sleep(POLL_SECONDS)

    def _blocked(self, merged: list[Resource], order: Order | None) -> Wait | None:
        """What keeps this run from its locks now; None once it holds them all."""
        assert self._line is not None
        tickets = self._line.tickets()
        if order is not None and (wait := order(tickets)) is not None:
            return wait
        ahead = self._line.ahead(tickets, None if order is None else
                                 lambda t: order.held_back(t, tickets))
        if ahead:
            first = ahead[0]
            shared = first.conflicts(self._line.resources)[0]
            holding = [h for h in self._holders(shared) if h.pid == first.pid]
            who = (f"held by {holding[0].describe()}" if holding
                   else f"{first.describe()} is ahead in line")
            return _busy(shared, who, [t.job for t in ahead])
        busy = self._take_all(merged)
        if busy is None:
            return None
        blockers = self._holders(busy.name)
        who = "; ".join(h.describe() for h in blockers) or "another process"
        return _busy(busy.name, f"held by {who}", [h.job for h in blockers])

    def _holders(self, resource: str) -> list[Holder]:
        try:
            return holders(self.directory, resource)
        except PhobosError:  # /proc/locks hidden (systemd's ProcSubset=pid)
            return []  # naming the holder must not turn a wait into a failure

    def _take_all(self, merged: list[Resource]) -> Resource | None:
        """Every lock at once (then the holder records), or none: the busy resource."""
        for res in merged:
            fd = os.open(self._lock_file(res), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if res.write else fcntl.LOCK_SH)
                            | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._unlock()
                return res
            self._held.append((res, fd))
        for res, _ in self._held:
            self._write_holder(res)
        return None

    def _lock_file(self, res: Resource) -> Path:
        return self.directory / f"{_file_stem(res.name)}.lock"

    def _holder_file(self, res: Resource) -> Path:
        return self.directory / f"{_file_stem(res.name)}.{os.getpid()}.holder"

    def _write_holder(self, res: Resource) -> None:
        data = {"resource": res.name, "job": self.job, "run_id": self.run_id,
                "pid": os.getpid(), "since": time.time(), "write": res.write}
        write_atomic(self._holder_file(res), json.dumps(data))

    def _unlock(self) -> None:
        while self._held:
            res, fd = self._held.pop()
            with contextlib.suppress(FileNotFoundError):
                self._holder_file(res).unlink()
            os.close(fd)  # closing the last descriptor drops the flock

    def release(self) -> None:
        """Release every lock this set holds and leave the line (idempotent)."""
        self._unlock()
        if self._line is not None:
            self._line.leave()

    @property
    def held(self) -> list[Resource]:
        return [res for res, _ in self._held]


def _busy(resource: str, who: str, jobs: Sequence[str]) -> Wait:
    return Wait(f"waiting for {resource}, {who}", tuple(dict.fromkeys(jobs)), busy=True,
                refusal=f"{resource} is busy: {who}")


@contextlib.contextmanager
def locked(directory: Path, job: str, run_id: int, resources: Sequence[Resource],
           policy: BusyPolicy, timeout: float,
           on_wait: Callable[[str], None] | None = None,
           order: Order | None = None) -> Iterator[LockSet]:
    locks = LockSet(directory, job, run_id)
    locks.acquire(resources, policy, timeout, on_wait, order)
    try:
        yield locks
    finally:
        locks.release()


def _flock_holders() -> dict[int, set[int]]:
    """inode -> PIDs holding a FLOCK on it, from /proc/locks."""
    result: dict[int, set[int]] = {}
    try:
        text = Path("/proc/locks").read_text()
    except OSError as exc:
        raise PhobosError(f"cannot read /proc/locks: {exc}") from None
    for line in text.splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" ("->" marks waiters)
        if len(parts) < 6 or parts[1] != "FLOCK" or "->" in parts:
            continue
        inode = int(parts[5].rsplit(":", 1)[1])
        result.setdefault(inode, set()).add(int(parts[4]))
    return result


def holders(directory: Path, resource: str | None = None) -> list[Holder]:
    """Current holders of all locks (or of one resource), verified against the kernel."""
    if not directory.is_dir():
        return []
    pattern = f"{_file_stem(resource)}.*.holder" if resource else "*.holder"
    live = _flock_holders()
    found = []
    for record in sorted(directory.glob(pattern)):
        holder = _read_holder(record)
        if holder is None or (resource is not None and holder.resource != resource):
            continue
        lock_file = directory / f"{_file_stem(holder.resource)}.lock"
        try:
            inode = lock_file.stat().st_ino
        except FileNotFoundError:
            continue
        if holder.pid in live.get(inode, set()):
            found.append(holder)
    return found


def _read_holder(record: Path) -> Holder | None:
    try:
        data = json.loads(record.read_text())
        return Holder(resource=str(data["resource"]), job=str(data["job"]),
                      run_id=int(data["run_id"]), pid=int(data["pid"]),
                      since=float(data["since"]), write=bool(data["write"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a record being written, or garbage: not a live holder
