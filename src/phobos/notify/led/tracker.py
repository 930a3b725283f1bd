"""The LED tracker: every phobos process (timer runs, device runs, the CLI, the daemon)
reports its events to a :class:`LedTracker`, which keeps the facts in
``<state_dir>/led.json`` under a lock, drops runs whose process died, and shows the colour
the state machine (:mod:`phobos.notify.led.machine`) derives on the driver.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from phobos.core.files import write_atomic
from phobos.core.model import LedState, Outcome, Trigger
from phobos.notify.errors import LedStateUnwritable
from phobos.notify.led.drivers import LedDriver
from phobos.notify.led.machine import (
    ActiveRun,
    LatchedFailure,
    LedBook,
    LedSnapshot,
    SafeDrive,
    acked,
    decide,
    detached,
    ended,
    finished,
    pruned,
    record_json,
    started,
)
from phobos.notify.led.machine import history_trouble as history_trouble_of

# --------------------------------------------------------------------------------------------
# Is the process behind a run still there?


def run_is_alive(run: ActiveRun) -> bool:
    """Whether the process that started ``run`` still exists as the same process.

    A zombie counts as dead: it has finished, only its parent has not reaped it yet. Linux only
    (reads /proc).
    """
    start = _process_start(run.pid)
    if start is None:
        return False
    return run.pid_start is None or start == run.pid_start


def _process_start(pid: int) -> int | None:
    """Start time of live process ``pid`` in clock ticks since boot; None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    rest = stat[stat.rindex(")") + 2:].split()
    if rest[0] in {"Z", "X", "x"}:
        return None
    return int(rest[19])  # field 22, starttime


# --------------------------------------------------------------------------------------------
# The tracker: locked read-modify-write of led.json


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LedTracker:
    """The LED state of every job on this host, shared by all phobos processes via ``state_dir``.

    Each event takes an exclusive ``flock`` on ``led.lock``, reads ``led.json``, applies the
    event, drops runs whose process died, writes the file atomically and, still under the lock,
    shows the new colour on ``driver`` (so the device always ends on the latest committed state,
    never on an older one raced in by another process). Events return the new colour.

    Driver errors (`LedUnavailable`) propagate *after* the event is recorded. Reading
    (`snapshot`, `current_state`) takes no lock: the file is only ever replaced whole.
    """

    state_dir: Path
    _: KW_ONLY
    clear_on_success: bool = False  # a success of a job clears that job's latched failure
    driver: LedDriver | None = None
    clock: Callable[[], datetime] = _utcnow
    alive: Callable[[ActiveRun], bool] = run_is_alive

    @property
    def path(self) -> Path:
        """The state file, ``<state_dir>/led.json``."""
        return self.state_dir / "led.json"

    def job_started(self, run_id: str, job: str, trigger: str, *,
                    pid: int | None = None) -> LedState:
        """``run_id`` of ``job`` began; it counts as running while process ``pid`` (default:
        this one) lives. Any green ends. ``trigger`` is a `Trigger` value."""
        owner = os.getpid() if pid is None else pid
        run = ActiveRun(run_id=run_id, job=job, trigger=Trigger(trigger), pid=owner,
                        pid_start=_process_start(owner), started=self.clock())
        return self._update(lambda book: started(book, run))

    def job_finished(self, run_id: str, job: str, outcome: str,
                     drive: str | None = None, *, history_trouble: bool | None = None
                     ) -> LedState:
        """``run_id`` of ``job`` ended with ``outcome`` (an `Outcome` value other than running).

        Failed/interrupted latch red for ``job``. Success/warning turns green if ``drive`` is
        given, and clears ``job``'s latched failure if ``clear_on_success``. Skipped marks nothing.
        ``history_trouble``: True latches red for the history database too (in the same
        update: the colour must be right even where the state cannot be saved); False
        clears that again if ``clear_on_success`` (the run was recorded fine).
        """
        final = Outcome(outcome)
        if final is Outcome.RUNNING:
            raise ValueError("job_finished needs a final outcome, not 'running'")
        at = self.clock()

        def change(book: LedBook) -> LedBook:
            book = finished(book, run_id=run_id, job=job, outcome=final, drive=drive, at=at,
                            clear_on_success=self.clear_on_success)
            if history_trouble or (history_trouble is False and self.clear_on_success):
                book = history_trouble_of(book, run_id=run_id, trouble=history_trouble, at=at)
            return book

        return self._update(change)

    def job_ended_quietly(self, run_id: str) -> LedState:
        """``run_id`` ended without a mark: stopped by its own person at the terminal."""
        return self._update(lambda book: ended(book, run_id))

    def drive_detached(self, drive: str) -> LedState:
        """``drive`` was unplugged: green for it ends (another drive's green stays)."""
        return self._update(lambda book: detached(book, drive))

    def ack(self) -> LedState:
        """Someone has seen the failures: clear every latched failure."""
        return self._update(acked)

    def refresh(self) -> LedState:
        """Drop runs whose process died, persist that, and show the colour again on the driver."""
        return self._update(lambda book: book)

    def snapshot(self) -> LedSnapshot:
        """The current colour, its reason and the facts behind it (dead runs left out)."""
        book = pruned(self._load(), self.alive)
        state, reason = decide(book)
        return LedSnapshot(state=state, reason=reason, active=book.active,
                           failures=book.failures, safe_drive=book.safe_drive)

    def current_state(self) -> LedState:
        """The colour the LED should show now."""
        return self.snapshot().state

    def _update(self, change: Callable[[LedBook], LedBook]) -> LedState:
        try:
            with self._locked():
                book = pruned(change(self._load()), self.alive)
                self._save(book)
                return self._show(book)
        except LedStateUnwritable:
            # A read-only or full state directory: the light still shows what happened
            # (a red then cannot survive the next event, but it is seen), then says why
            # it is not remembered.
            try:
                book = self._load()
            except LedStateUnwritable:
                book = LedBook()
            self._show(pruned(change(book), self.alive))
            raise

    def _show(self, book: LedBook) -> LedState:
        state, _ = decide(book)
        if self.driver is not None:
            self.driver.set(state)
        return state

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # A sibling lock file, not led.json itself: the rename that writes led.json swaps its
        # inode, so a lock held on the old inode would not exclude a process opening the new one.
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.state_dir / "led.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _state_error(self.state_dir, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _load(self) -> LedBook:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return LedBook()
        except OSError as exc:
            raise _state_error(self.path, exc) from exc
        try:
            return _parse(raw)
        except ValueError as exc:
            return _unreadable(self.path, exc, self.clock())

    def _save(self, book: LedBook) -> None:
        try:
            write_atomic(self.path, _dump(book), durable=True)  # a latched red survives
        except OSError as exc:
            raise _state_error(self.path, exc) from exc


def _state_error(path: Path, exc: OSError) -> LedStateUnwritable:
    return LedStateUnwritable(f"cannot record the LED state in {path}: {exc.strerror or exc}",
                          hint="check that phobos may write its state directory")


def _unreadable(path: Path, exc: ValueError, now: datetime) -> LedBook:
    # A state file we cannot read may have held a failure; showing red (until acked) is the
    # only answer that cannot hide one. The next event rewrites the file.
    failure = LatchedFailure(job=f"{path.name} (unreadable: {exc})", run_id="-",
                             outcome=Outcome.FAILED, at=now)
    return LedBook(failures=(failure,))


# --------------------------------------------------------------------------------------------
# led.json, version 1

_VERSION: Final = 1


def _dump(book: LedBook) -> bytes:
    doc = {
        "version": _VERSION,
        "active": [record_json(run) for run in book.active],
        "failures": [record_json(failure) for failure in book.failures],
        "safe_drive": None if book.safe_drive is None else record_json(book.safe_drive),
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def _parse(raw: bytes) -> LedBook:
    """The book in ``raw``; ValueError if it is not a version-1 LED state document."""
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("version") != _VERSION:
        raise ValueError(f"not a version {_VERSION} LED state document")
    try:
        safe = doc["safe_drive"]
        return LedBook(active=tuple(_run_from(item) for item in doc["active"]),
                       failures=tuple(_failure_from(item) for item in doc["failures"]),
                       safe_drive=None if safe is None else _safe_drive_from(safe))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed LED state ({exc!r})") from exc


def _run_from(item: dict[str, Any]) -> ActiveRun:
    start = item["pid_start"]
    return ActiveRun(run_id=str(item["run_id"]), job=str(item["job"]),
                     trigger=Trigger(item["trigger"]), pid=int(item["pid"]),
                     pid_start=None if start is None else int(start),
                     started=datetime.fromisoformat(item["started"]))


def _failure_from(item: dict[str, Any]) -> LatchedFailure:
    return LatchedFailure(job=str(item["job"]), run_id=str(item["run_id"]),
                          outcome=Outcome(item["outcome"]), at=datetime.fromisoformat(item["at"]))


def _safe_drive_from(item: dict[str, Any]) -> SafeDrive:
    return SafeDrive(drive=str(item["drive"]), job=str(item["job"]), run_id=str(item["run_id"]),
                     at=datetime.fromisoformat(item["at"]))
