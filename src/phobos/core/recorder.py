"""Where a run is written: the history database while it works, phobos's own log file
from the moment it does not. A backup never fails because its bookkeeping does.

:func:`open_for_run` opens the history for a run. A *damaged* database (garbage where
the header should be, a truncated file, SQLite reporting corruption) is moved aside —
kept next to it as ``history.sqlite.corrupt-<time>`` with its ``-wal``, never deleted —
and a fresh one is started. One that merely cannot be used as it is (an immutable file,
a read-only or full filesystem) is left alone, and the run is written to the fallback
log, ``<[paths] log>/phobos.log``, one JSON object per line, until the database is
writable again (every run tries it first).

:class:`RunRecorder` has the history's writing methods. When one fails in the middle of
a run, the recorder switches to the fallback log for the rest of that run (a database
found damaged then is moved aside when the run ends). ``problem`` says what happened;
the runner signals it: stderr, LED red, mail, exit code 5.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from phobos.core.files import exclusive_lock, private_dir
from phobos.core.history import HISTORY_FILE, TOLD, History, Run, unavailable
from phobos.core.model import Outcome
from phobos.errors import HistoryUnavailable

T = TypeVar("T")
FALLBACK_FILE = "phobos.log"


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """What went wrong with the history, for a person: ``message`` and what to do."""

    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return self.message + (f" (hint: {self.hint})" if self.hint else "")


class FallbackLog:
    """``<[paths] log>/phobos.log``: JSON lines appended by any phobos process. If even
    that cannot be written, the line goes to stderr (the journal, under systemd)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FALLBACK_FILE

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps({"ts": round(time.time(), 3), "pid": os.getpid(), **record},
                          sort_keys=True) + "\n"
        try:
            private_dir(self.path.parent)  # run logs, as private as the history's
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            try:
                os.write(fd, line.encode())  # one write: lines of processes never mix
            finally:
                os.close(fd)
        except OSError:
            sys.stderr.write(f"phobos: {self.path} is not writable either: {line}")
            sys.stderr.flush()

    def records(self) -> Iterator[dict[str, Any]]:
        """Every readable record, oldest first (for `phobos doctor` and tests)."""
        try:
            text = self.path.read_text(errors="replace")
        except OSError:
            return
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    yield record


# --- moving a damaged database aside -------------------------------------------------------


def still_damaged(path: Path) -> bool:
    """Whether the database at ``path`` is damaged (checked in depth: quick_check)."""
    try:
        history = History(path)
    except HistoryUnavailable as exc:
        return exc.damaged
    try:
        row = history.db.execute("PRAGMA quick_check(1)").fetchone()
        return row is None or row[0] != "ok"
    except sqlite3.DatabaseError as exc:
        return unavailable(path, exc).damaged
    finally:
        history.db.close()


def move_aside(path: Path) -> Path | None:
    """Rename the damaged database (and its ``-wal``/``-shm``) to
    ``history.sqlite.corrupt-<time>``, keeping it; returns the new name, or None when it
    is no longer damaged (another phobos moved it a moment ago). OSError if it cannot."""
    with exclusive_lock(path.with_name(path.name + ".lock")):  # one phobos moves it
        if not path.exists() or not still_damaged(path):
            return None
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        number = 1
        while target.exists():
            number += 1
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{number}")
        os.rename(path, target)
        for suffix in ("-wal", "-shm"):  # SQLite finds TARGET-wal when it opens the copy
            with contextlib.suppress(FileNotFoundError):
                os.rename(path.with_name(path.name + suffix),
                          target.with_name(target.name + suffix))
        return target


def damaged_copies(state_dir: Path) -> list[Path]:
    """Databases moved aside earlier, oldest first."""
    return sorted(p for p in state_dir.glob(f"{HISTORY_FILE}.corrupt-*")
                  if not p.name.endswith(("-wal", "-shm")))


# --- the recorder ----------------------------------------------------------------------------


class RunRecorder:
    """The writing side of the history for one run, falling back to the log file.

    ``history`` is None when the database could not be opened at all; ``problem`` is
    set as soon as anything about it went wrong (and stays set for the run).
    """

    def __init__(self, path: Path, history: History | None, fallback: FallbackLog,
                 problem: Problem | None = None) -> None:
        self.path = path
        self.history = history
        self.fallback = fallback
        self.problem = problem
        self._damaged = False
        self._lock = threading.RLock()
        if problem is not None:
            fallback.append({"event": "history-unavailable", "problem": str(problem)})

    def start_run(self, *, job: str, kind: str, trigger: str) -> int:
        record = {"job": job, "kind": kind, "trigger": trigger}
        run_id = self._write(lambda h: h.start_run(job=job, kind=kind, trigger=trigger),
                             "run", record)
        # Not in the database: a negative id, unique among live processes.
        return -os.getpid() if run_id is None else run_id

    def mark_locked(self, run_id: int) -> None:
        self._write(lambda h: h.mark_locked(run_id), "locked", {"run": run_id})

    def set_child(self, run_id: int, pgid: int | None) -> None:
        self._write(lambda h: h.set_child(run_id, pgid), "child", {"run": run_id, "pgid": pgid})

    def finish_run(self, run_id: int, *, outcome: Outcome, exit_code: int,
                   message: str | None, stats: dict[str, Any], alert: str | None = None
                   ) -> None:
        record = {"run": run_id, "outcome": str(outcome), "exit_code": exit_code,
                  "message": message, "stats": stats}
        self._write(lambda h: h.finish_run(run_id, outcome=outcome, exit_code=exit_code,
                                           message=message, stats=stats, alert=alert),
                    "finished", record)

    def claim_alert(self, run_id: int) -> None:
        """The runner has told the notifiers about the run (see History.claim_alert)."""
        self._write(lambda h: h.claim_alert(run_id, TOLD), "told", {})

    def start_step(self, run_id: int, seq: int, name: str, argv: Sequence[str]) -> None:
        self._write(lambda h: h.start_step(run_id, seq, name, argv), "step",
                    {"run": run_id, "seq": seq, "name": name, "argv": list(argv)})

    def finish_step(self, run_id: int, seq: int, exit_code: int | None,
                    outcome: Outcome) -> None:
        self._write(lambda h: h.finish_step(run_id, seq, exit_code, outcome), "step-end",
                    {"run": run_id, "seq": seq, "exit_code": exit_code,
                     "outcome": str(outcome)})

    def log(self, run_id: int, stream: str, line: str) -> None:
        self._write(lambda h: h.log(run_id, stream, line), "log",
                    {"run": run_id, "stream": stream, "line": line})

    def runs(self, job: str | None = None, limit: int = 20) -> list[Run]:
        """Earlier runs (newest first); none when the database cannot be read."""
        with self._lock:
            if self.history is None:
                return []
            try:
                return self.history.runs(job, limit)
            except sqlite3.Error:
                return []

    def settle(self) -> None:
        """Write what is queued; a database found damaged during the run is moved aside
        now (the runner calls this once the run's outcome is recorded)."""
        with self._lock:
            if self.history is not None:
                self._write(lambda h: h.flush(), "log", {})
            if self._damaged:
                self._damaged = False
                self._move_damaged_aside()

    def close(self) -> None:
        with self._lock:
            self.settle()
            if self.history is not None:
                with contextlib.suppress(sqlite3.Error, OSError):
                    self.history.close()
                self.history = None

    def _write(self, call: Callable[[History], T], event: str,
               record: dict[str, Any]) -> T | None:
        with self._lock:
            if self.history is not None:
                try:
                    return call(self.history)
                except (sqlite3.Error, OSError) as exc:
                    self._give_up(exc)
            if record:
                self.fallback.append({"event": event, **record})
            return None

    def _give_up(self, exc: BaseException) -> None:
        """The database failed mid-run: everything from here goes to the fallback log."""
        history = self.history
        assert history is not None
        self.history = None
        error = unavailable(history.path, exc)
        self._damaged = error.damaged
        self.problem = self.problem or Problem(
            message=f"{error.message}; this run is logged to {self.fallback.path} from here on",
            hint=error.hint)
        self.fallback.append({"event": "history-unavailable", "problem": str(self.problem)})
        for run_id, seq, ts, stream, line in history.unflushed():
            self.fallback.append({"event": "log", "run": run_id, "seq": seq, "at": ts,
                                  "stream": stream, "line": line})
        with contextlib.suppress(sqlite3.Error):
            history.db.close()

    def _move_damaged_aside(self) -> None:
        try:
            kept = move_aside(self.path)
            note = f"moved aside to {kept}" if kept else "already moved aside"
        except OSError as exc:
            note = f"it could not be moved aside ({exc.strerror or exc})"
        self.fallback.append({"event": "history-moved-aside", "note": note})
        if self.problem is not None:
            self.problem = Problem(message=f"{self.problem.message}; the database was {note}",
                                   hint=self.problem.hint)


def writing_problem(state_dir: Path, log_dir: Path) -> str | None:
    """Why a run could not be written to the history now, though it can be read (an
    immutable file, a read-only or full filesystem): the line readers show. None when
    nothing says so (only a write would tell for sure)."""
    path = state_dir / HISTORY_FILE
    try:
        room = os.statvfs(state_dir)
    except OSError:
        return None
    # root may write into the blocks reserved for it, where others see a full disk
    free = room.f_bfree if os.geteuid() == 0 else room.f_bavail
    if room.f_flag & os.ST_RDONLY:
        reason, hint = "its filesystem is mounted read-only", "remount it read-write"
    elif not all(os.access(p, os.W_OK) for p in (path, state_dir) if p.exists()):
        reason, hint = "it is read-only", "`lsattr` it (chattr -i) and check its permissions"
    elif free == 0:
        reason, hint = "its filesystem is full", "free some space there"
    else:
        return None
    return (f"history unavailable for writing: {path}: {reason}; runs are logged to "
            f"{log_dir / FALLBACK_FILE} until it is writable again (hint: {hint})")


def open_for_run(state_dir: Path, log_dir: Path) -> RunRecorder:
    """The recorder for a run: the database if it can be used (a damaged one replaced by a
    fresh one, the old kept), else the fallback log. Never raises for the database."""
    fallback = FallbackLog(log_dir)
    path = state_dir / HISTORY_FILE
    try:
        return RunRecorder(path, History(path), fallback)
    except HistoryUnavailable as exc:
        error = exc
    if error.damaged:
        try:
            kept = move_aside(path)
            fresh = History(path)
        except (HistoryUnavailable, OSError) as exc:
            return RunRecorder(path, None, fallback, Problem(
                message=f"{error.message}, and it cannot be moved aside ({exc}); this run "
                f"is logged to {fallback.path}", hint="free the state directory's "
                "filesystem or make it writable; `phobos doctor` says more"))
        kept_text = f"moved aside to {kept}" if kept else "already moved aside"
        return RunRecorder(path, fresh, fallback, Problem(
            message=f"{error.message}: {kept_text}, and a fresh one was started",
            hint="the old runs are in the kept copy (`sqlite3 FILE`); delete it when you no "
            "longer need them"))
    return RunRecorder(path, None, fallback, Problem(
        message=f"history unavailable: {error.message}; runs are logged to {fallback.path} "
        "until it is writable again", hint=error.hint))
