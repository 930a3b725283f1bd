"""The history database, opened so that reading it can never change it.

``phobos web`` opens ``history.sqlite`` with a ``file:…?mode=ro`` URI and never calls
:meth:`History.recover` or any writing method. Under its systemd unit the state
directory is read-only to it, which SQLite's WAL mode only tolerates while a writer has
the ``-wal`` and ``-shm`` files open; when no phobos process has the database open
(no ``-wal`` file), the main file is complete and is read with ``immutable=1``.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phobos.core.history import MIGRATIONS, History, process_start_ticks
from phobos.errors import PhobosError


class ReadOnlyHistory(History):
    """A :class:`History` on a read-only connection; the writing methods fail."""

    def __init__(self, path: Path) -> None:  # deliberately not History.__init__
        self.path = path
        self.db = _connect(path)
        self._lock = threading.RLock()
        self._pending: list[tuple[int, int, float, str, str]] = []
        self._last_flush = 0.0
        self._log_seq: dict[int, int] = {}

    def recover(self) -> list[int]:
        raise PhobosError("the dashboard never recovers runs: it only reads the history")


def open_history(state_dir: Path) -> ReadOnlyHistory:
    return ReadOnlyHistory(state_dir / "history.sqlite")


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        return _empty()
    uri = f"file:{_quote(path)}"
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=5.0, isolation_level=None,
                         check_same_thread=False)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.OperationalError as exc:
        db.close()
        if _wal_size(path):
            raise PhobosError(
                f"cannot read {path} while a job writes it ({exc})",
                "SQLite needs to read its -wal and -shm files and, as the dashboard's own "
                "user, search permission on every directory above them (access(2) ignores "
                "capabilities): `chmod o+x` them, as StateDirectory= does") from None
        # No writer has the database open (an empty or no -wal file): the main file
        # holds everything.
        db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None,
                             check_same_thread=False)
        version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise PhobosError(f"{path} was written by a newer phobos (schema {version})",
                          "upgrade phobos")
    if version == 0:
        db.close()
        return _empty()
    return db


def _wal_size(path: Path) -> int:
    try:
        return path.with_name(path.name + "-wal").stat().st_size
    except FileNotFoundError:
        return 0


def _quote(path: Path) -> str:
    # '?' and '#' would end the path part of the URI; '%' starts an escape.
    return str(path.resolve()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")


def _empty() -> sqlite3.Connection:
    """An in-memory database with the schema: no history yet reads as no runs."""
    db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    for statement in "".join(MIGRATIONS).split(";"):
        if statement.strip():
            db.execute(statement)
    return db


@dataclass(frozen=True, slots=True, kw_only=True)
class Span:
    """One run as the past-week picture draws it."""

    id: int
    job: str
    started: float
    locked: float | None
    ended: float | None
    outcome: str


def runs_since(history: History, since: float) -> list[Span]:
    """Runs started at or after ``since`` (and ones still running), oldest first."""
    rows = history.db.execute(
        "SELECT id, job, started, locked, ended, outcome FROM runs "
        "WHERE started >= ? OR outcome = 'running' ORDER BY id", (since,))
    return [Span(id=r[0], job=r[1], started=r[2], locked=r[3], ended=r[4], outcome=r[5])
            for r in rows]


def live_runs(history: History) -> dict[int, bool]:
    """Run id -> whether its phobos process is still there, for runs recorded as running
    (a run whose process vanished stays "running" until a writing phobos recovers it)."""
    rows: Any = history.db.execute(
        "SELECT id, pid, pid_start FROM runs WHERE outcome = 'running'")
    return {run_id: process_start_ticks(pid) == pid_start for run_id, pid, pid_start in rows}
