"""Run history in SQLite (WAL): runs, their steps and log lines.

Many phobos processes write here at once (parallel jobs), so every write is a short
transaction and readers never block writers. Schema changes are numbered migrations
keyed on ``PRAGMA user_version``.

A run records the PID (and its start time, against PID reuse) of the phobos process
running it; when that process is gone but the run still says "running", the next
phobos that opens the history marks it interrupted (:meth:`History.recover`) and its
alert *due*: :mod:`phobos.reconcile` claims it (:meth:`History.claim_alert`, once, by
exactly one process), cleans up after the dead run and tells someone.

Opening raises :class:`~phobos.errors.HistoryUnavailable` instead of SQLite's errors:
``damaged`` when the file is not a database any more (garbage, truncated), otherwise
when it cannot be used as it is (read-only, full, missing permissions). What a run does
then is :mod:`phobos.core.recorder`'s business.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import signal
import sqlite3
import threading
import time
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from phobos.core.files import private_dir, private_file
from phobos.core.model import Outcome
from phobos.core.processes import group_members
from phobos.errors import HistoryUnavailable, PhobosError, UsageError

MIGRATIONS: tuple[str, ...] = (
    # 1: runs, steps, log lines
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        job TEXT NOT NULL,
        kind TEXT NOT NULL,
        trigger TEXT NOT NULL,
        started REAL NOT NULL,
        locked REAL,
        ended REAL,
        outcome TEXT NOT NULL,
        exit_code INTEGER,
        message TEXT,
        stats TEXT NOT NULL DEFAULT '{}',
        pid INTEGER NOT NULL,
        pid_start INTEGER NOT NULL,
        child_pgid INTEGER
    );
    CREATE INDEX runs_by_job ON runs (job, id);
    CREATE INDEX runs_running ON runs (outcome) WHERE outcome = 'running';
    CREATE TABLE steps (
        run_id INTEGER NOT NULL REFERENCES runs (id),
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        argv TEXT NOT NULL,
        started REAL NOT NULL,
        ended REAL,
        exit_code INTEGER,
        outcome TEXT,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE log (
        run_id INTEGER NOT NULL REFERENCES runs (id),
        seq INTEGER NOT NULL,
        ts REAL NOT NULL,
        stream TEXT NOT NULL,
        line TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;
    """,
    # 2: "last success per job" without scanning every run (status, web, overdue)
    """
    CREATE INDEX runs_by_job_outcome ON runs (job, outcome, id);
    """,
    # 3: runs someone must be told about ('due'; 'hook': systemd's failure hook will)
    # until someone took that on ('told' by its own runner, 'taken' by another phobos)
    """
    ALTER TABLE runs ADD COLUMN alert TEXT;
    CREATE INDEX runs_alert_due ON runs (id) WHERE alert = 'due';
    """,
)

#: A run's alert: someone must tell (``due``; ``hook``: systemd's OnFailure= hook will),
#: and who took that on (see :meth:`History.claim_alert`).
DUE, FOR_HOOK, TOLD, TAKEN = "due", "hook", "told", "taken"

#: The message :meth:`History.recover` records for a run whose process vanished.
DISAPPEARED = "phobos process disappeared (killed or power loss)"

_F = TypeVar("_F", bound=Callable[..., Any])


def _serialized(method: _F) -> _F:
    """Run a History method under the instance's lock (threads share one instance)."""

    @functools.wraps(method)
    def wrapper(self: History, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return typing.cast(_F, wrapper)


FLUSH_LINES = 200
FLUSH_SECONDS = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    id: int
    job: str
    kind: str
    trigger: str
    started: float
    locked: float | None  # when the locks were held: work began (None: never got them)
    ended: float | None
    outcome: Outcome
    exit_code: int | None
    message: str | None
    stats: dict[str, Any]

    @property
    def duration(self) -> float | None:
        return None if self.ended is None else self.ended - self.started

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "job": self.job, "kind": self.kind, "trigger": self.trigger,
                "started": self.started, "locked": self.locked, "ended": self.ended,
                "duration": self.duration,
                "outcome": str(self.outcome), "exit_code": self.exit_code,
                "message": self.message, "stats": self.stats}


@dataclass(frozen=True, slots=True)
class LogLine:
    ts: float
    stream: str
    line: str


_RUN_COLUMNS = ("id, job, kind, trigger, started, locked, ended, outcome, exit_code, message, "
                "stats")


class RunSource(Protocol):
    """What reads earlier runs: the history, or a run's recorder (none when unavailable)."""

    def runs(self, job: str | None = None, limit: int = 20) -> list[Run]: ...


def _run(row: Sequence[Any]) -> Run:
    return Run(id=row[0], job=row[1], kind=row[2], trigger=row[3], started=row[4],
               locked=row[5], ended=row[6], outcome=Outcome(row[7]), exit_code=row[8],
               message=row[9], stats=json.loads(row[10]))


def process_start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


class History:
    """One connection to the history database. Not shared between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            if path != IN_MEMORY:  # SQLite's name for a database without a file
                # Every run's log is in here: private whatever the umask. SQLite gives
                # its -wal and -shm files the database file's mode.
                private_dir(path.parent)
                check_header(path)
                private_file(path)
            # One connection may serve several threads of a run (parallel pulls);
            # self._lock serializes them.
            self.db = sqlite3.connect(path, timeout=30.0, isolation_level=None,
                                      check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise unavailable(path, exc) from None
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            self.db.close()
            raise unavailable(path, exc) from None
        self._lock = threading.RLock()
        self._pending: list[tuple[int, int, float, str, str]] = []
        self._last_flush = time.monotonic()
        self._log_seq: dict[int, int] = {}

    @classmethod
    def open(cls, state_dir: Path) -> History:
        return cls(state_dir / HISTORY_FILE)

    @classmethod
    def in_memory(cls) -> History:
        """An empty history in memory: what readers show when the real one is unavailable."""
        return cls(IN_MEMORY)

    @_serialized
    def close(self) -> None:
        self.flush()
        self.db.close()

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise PhobosError(f"{self.path} was written by a newer phobos (schema {version})",
                              "upgrade phobos, or point [paths] state elsewhere")
        for number in range(version, len(MIGRATIONS)):
            with self._transaction():
                # Another phobos may have migrated while we waited for the write lock.
                if self.db.execute("PRAGMA user_version").fetchone()[0] != number:
                    continue
                for statement in MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {number + 1}")

    def _transaction(self) -> Any:
        return _Transaction(self.db)

    # --- writing ---------------------------------------------------------------------

    @_serialized
    def start_run(self, *, job: str, kind: str, trigger: str) -> int:
        pid = os.getpid()
        cursor = self.db.execute(
            "INSERT INTO runs (job, kind, trigger, started, outcome, pid, pid_start) "
            "VALUES (?, ?, ?, ?, 'running', ?, ?)",
            (job, kind, trigger, time.time(), pid, process_start_ticks(pid) or 0))
        run_id = cursor.lastrowid
        assert run_id is not None
        return run_id

    @_serialized
    def mark_locked(self, run_id: int) -> None:
        """The run holds its locks: the work starts now (the rest was waiting)."""
        self.db.execute("UPDATE runs SET locked = ? WHERE id = ?", (time.time(), run_id))

    @_serialized
    def set_child(self, run_id: int, pgid: int | None) -> None:
        self.db.execute("UPDATE runs SET child_pgid = ? WHERE id = ?", (pgid, run_id))

    @_serialized
    def finish_run(self, run_id: int, *, outcome: Outcome, exit_code: int,
                   message: str | None, stats: dict[str, Any], alert: str | None = None
                   ) -> None:
        """Record the outcome. ``alert``: someone must be told about it: :data:`DUE` (until
        the runner has, see :meth:`claim_alert`, a phobos that finds its process dead
        tells instead) or :data:`FOR_HOOK` (systemd's OnFailure= hook tells)."""
        self.flush()
        self.db.execute(
            "UPDATE runs SET ended = ?, outcome = ?, exit_code = ?, message = ?, stats = ?, "
            "child_pgid = NULL, alert = ? WHERE id = ?",
            (time.time(), str(outcome), exit_code, message, json.dumps(stats), alert, run_id))

    @_serialized
    def start_step(self, run_id: int, seq: int, name: str, argv: Sequence[str]) -> None:
        self.db.execute("INSERT INTO steps (run_id, seq, name, argv, started) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (run_id, seq, name, json.dumps(list(argv)), time.time()))

    @_serialized
    def finish_step(self, run_id: int, seq: int, exit_code: int | None,
                    outcome: Outcome) -> None:
        self.db.execute("UPDATE steps SET ended = ?, exit_code = ?, outcome = ? "
                        "WHERE run_id = ? AND seq = ?",
                        (time.time(), exit_code, str(outcome), run_id, seq))

    @_serialized
    def log(self, run_id: int, stream: str, line: str) -> None:
        """Queue one (already redacted) log line; written in batches."""
        seq = self._log_seq.get(run_id)
        if seq is None:
            row = self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM log WHERE run_id = ?",
                                  (run_id,)).fetchone()
            seq = int(row[0])
        seq += 1
        self._log_seq[run_id] = seq
        self._pending.append((run_id, seq, time.time(), stream, line))
        if (len(self._pending) >= FLUSH_LINES
                or time.monotonic() - self._last_flush >= FLUSH_SECONDS):
            self.flush()

    @_serialized
    def flush(self) -> None:
        if self._pending:
            with self._transaction():
                self.db.executemany("INSERT INTO log VALUES (?, ?, ?, ?, ?)", self._pending)
            self._pending.clear()
        self._last_flush = time.monotonic()

    @_serialized
    def unflushed(self) -> list[tuple[int, int, float, str, str]]:
        """Log lines queued but not yet written, as (run, seq, ts, stream, line); they are
        handed over and forgotten here (a recorder that gives up on the database)."""
        lines, self._pending = self._pending, []
        return lines

    # --- recovery ----------------------------------------------------------------------

    def recover(self) -> list[int]:
        """Mark runs whose phobos process is gone as interrupted; returns their ids.

        Leftover processes of such a run (the child's process group, if it outlived
        phobos) are killed: nothing of a dead run may keep writing to backups.
        """
        rows = self.db.execute(
            "SELECT id, pid, pid_start, child_pgid, started FROM runs "
            "WHERE outcome = 'running'").fetchall()
        recovered = []
        for run_id, pid, pid_start, child_pgid, started in rows:
            if process_start_ticks(pid) == pid_start:
                continue  # still running
            if child_pgid:
                _kill_leftover_group(child_pgid, started)
            marked = self.db.execute(
                "UPDATE runs SET outcome = 'interrupted', exit_code = 4, child_pgid = NULL, "
                "ended = COALESCE((SELECT MAX(ts) FROM log WHERE run_id = ?), started), "
                "message = ?, alert = 'due' WHERE id = ? AND outcome = 'running'",
                (run_id, DISAPPEARED, run_id))
            if marked.rowcount:  # another phobos may have marked it a moment ago
                recovered.append(run_id)
        return recovered

    def due_alerts(self) -> list[Run]:
        """Runs whose alert is due and whose process is gone (killed before it could tell,
        or never able to), oldest first."""
        rows = self.db.execute(f"SELECT {_RUN_COLUMNS}, pid, pid_start FROM runs "
                               "WHERE alert = 'due' ORDER BY id").fetchall()
        width = len(_RUN_COLUMNS.split(","))
        return [_run(row[:width]) for row in rows
                if process_start_ticks(row[width]) != row[width + 1]]

    @_serialized
    def claim_alert(self, run_id: int, by: str = TAKEN) -> bool:
        """Take on telling about run ``run_id``: True for exactly one caller. ``by``:
        :data:`TOLD` (its own runner told the notifiers; which channels delivered is in
        their ledger) or :data:`TAKEN` (another phobos: the cleanup after a dead run, or
        systemd's failure hook)."""
        claimed = self.db.execute("UPDATE runs SET alert = ? WHERE id = ? AND "
                                  "alert IN ('due', 'hook')", (by, run_id))
        return claimed.rowcount == 1

    def alert_of(self, run_id: int) -> str | None:
        """:data:`DUE`, :data:`FOR_HOOK`, :data:`TOLD`, :data:`TAKEN`, or None."""
        row = self.db.execute("SELECT alert FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else row[0]

    # --- reading -------------------------------------------------------------------------

    def run(self, run_id: int) -> Run:
        # SQLite stores 64-bit ids: a larger number names no run (and cannot be bound).
        row = None if not 0 < run_id < 2**63 else self.db.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(f"no run with id {run_id}", "see `phobos history` for run ids")
        return _run(row)

    def runs(self, job: str | None = None, limit: int = 20) -> list[Run]:
        """Newest first."""
        if job is None:
            rows = self.db.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?",
                                   (limit,))
        else:
            rows = self.db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE job = ? "
                                   "ORDER BY id DESC LIMIT ?", (job, limit))
        return [_run(r) for r in rows]

    # The per-job lookups walk the (job, id) index once per job (a skip scan over the
    # job names) instead of grouping the whole table: milliseconds at 100,000 runs.

    def latest_per_job(self) -> dict[str, Run]:
        return self._per_job("SELECT MAX(id) FROM runs WHERE job = name")

    def last_success_per_job(self) -> dict[str, Run]:
        return self._per_job("SELECT id FROM runs WHERE job = name AND outcome IN "
                             "('success', 'warning') ORDER BY id DESC LIMIT 1")

    def first_runs(self) -> dict[str, Run]:
        return self._per_job("SELECT MIN(id) FROM runs WHERE job = name")

    def _per_job(self, pick: str) -> dict[str, Run]:
        rows = self.db.execute(
            "WITH RECURSIVE jobs(name) AS (SELECT MIN(job) FROM runs UNION ALL "
            "SELECT (SELECT MIN(job) FROM runs WHERE job > name) FROM jobs "
            "WHERE name IS NOT NULL) "
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE id IN "
            f"(SELECT ({pick}) FROM jobs WHERE name IS NOT NULL)")
        return {run.job: run for run in map(_run, rows)}

    def work_durations(self, job: str, limit: int) -> list[float]:
        """Seconds of work (locks held to end) of the job's latest successful runs."""
        rows = self.db.execute(
            "SELECT ended - COALESCE(locked, started) FROM runs WHERE job = ? AND "
            "outcome IN ('success', 'warning') AND ended IS NOT NULL "
            "ORDER BY id DESC LIMIT ?", (job, limit))
        return [float(r[0]) for r in rows]

    def running(self) -> list[tuple[Run, bool]]:
        """Runs recorded as running, oldest first, each with whether its phobos process
        is still there (a dead one's run stays "running" until :meth:`recover`)."""
        rows = self.db.execute(f"SELECT {_RUN_COLUMNS}, pid, pid_start FROM runs "
                               "WHERE outcome = 'running' ORDER BY id").fetchall()
        return [(_run(row), process_start_ticks(row[-2]) == row[-1]) for row in rows]

    def log_lines(self, run_id: int) -> Iterator[LogLine]:
        rows = self.db.execute("SELECT ts, stream, line FROM log WHERE run_id = ? "
                               "ORDER BY seq", (run_id,))
        for ts, stream, line in rows:
            yield LogLine(ts, stream, line)

    def steps(self, run_id: int) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT seq, name, argv, started, ended, exit_code, outcome "
                               "FROM steps WHERE run_id = ? ORDER BY seq", (run_id,))
        return [{"seq": r[0], "name": r[1], "argv": json.loads(r[2]), "started": r[3],
                 "ended": r[4], "exit_code": r[5], "outcome": r[6]} for r in rows]



HISTORY_FILE = "history.sqlite"
#: The path :meth:`History.in_memory` opens: no file is made for it (nor any directory).
IN_MEMORY = Path(":memory:")
_HEADER = b"SQLite format 3\x00"
# SQLite's primary result codes (the low byte of an extended code) that mean the file is
# not a usable database any more, rather than that it cannot be written right now.
_DAMAGED_CODES = {11: "SQLITE_CORRUPT", 26: "SQLITE_NOTADB"}
_UNWRITABLE_HINTS = {
    3: "check the permissions of the file and its directory",  # SQLITE_PERM
    8: "the file or its filesystem is read-only: `lsattr` it (chattr -i), or remount "
       "the filesystem read-write",  # SQLITE_READONLY
    13: "the filesystem holding it is full: free some space",  # SQLITE_FULL
    14: "check that the directory exists and phobos may write it",  # SQLITE_CANTOPEN
}


_DAMAGED_HINT = "the next `phobos run` moves it aside (keeping it) and starts a fresh one"


def check_header(path: Path) -> None:
    """Raise HistoryUnavailable(damaged) when ``path`` cannot be an SQLite database: a
    wrong header, or fewer pages than its header counts (a truncated file). A missing
    or empty file is fine (a new database). Costs one read of 100 bytes."""
    try:
        with path.open("rb") as file:
            header = file.read(100)
            size = os.fstat(file.fileno()).st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    if len(header) < 100 or not header.startswith(_HEADER):
        raise HistoryUnavailable(f"the history database {path} is damaged: it does not start "
                                 "with an SQLite header", _DAMAGED_HINT, damaged=True)
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    counted = pages and header[24:28] == header[92:96]
    wal = path.with_name(path.name + "-wal")
    if counted and size < pages * page_size and not _nonempty(wal):
        raise HistoryUnavailable(f"the history database {path} is damaged: it is truncated "
                                 f"({size} of {pages * page_size} bytes)", _DAMAGED_HINT,
                                 damaged=True)


def _filesystem_full(path: Path) -> bool:
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def unavailable(path: Path, exc: BaseException) -> HistoryUnavailable:
    """The HistoryUnavailable for an error while opening or using the database at ``path``."""
    if isinstance(exc, HistoryUnavailable):
        return exc
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary in _DAMAGED_CODES:
        return HistoryUnavailable(f"the history database {path} is damaged ({exc})",
                                  _DAMAGED_HINT, damaged=True)
    hint = _UNWRITABLE_HINTS.get(primary or 0, "check [paths] state in the config, the "
                                 "file's permissions and the filesystem's free space")
    if (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
            primary in (10, 14) and _filesystem_full(path)):  # SQLITE_IOERR, _CANTOPEN
        hint = _UNWRITABLE_HINTS[13]
    elif isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EPERM):
        hint = _UNWRITABLE_HINTS[8]
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return HistoryUnavailable(f"cannot use the history database {path}: {reason}", hint)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if not self.db.in_transaction:
            return
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def _kill_leftover_group(pgid: int, started: float) -> None:
    """SIGKILL processes still in ``pgid`` that started after the run did."""
    boot = _boot_time()
    ticks = os.sysconf("SC_CLK_TCK")
    for member in group_members(pgid):
        if boot + member.start_ticks / ticks >= started - 1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member.pid, signal.SIGKILL)


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0
