"""Doctor check area ``history``: the history database can be read and written, no run
was left to phobos's log file, and damaged copies moved aside are pointed out.

Nothing here writes: the database is opened read-only (``mode=ro``), so the doctor never
creates, migrates or recovers it."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from phobos.config.model import Config
from phobos.core.history import HISTORY_FILE, check_header, unavailable
from phobos.core.recorder import FallbackLog, damaged_copies
from phobos.doctor.findings import Finding, error, ok, warning
from phobos.errors import HistoryUnavailable

AREA = "history"
LOW_SPACE = 16 * 1024 * 1024  # a run writes a few kilobytes; less than this is near full


def history_findings(config: Config) -> list[Finding]:
    """The database, the state filesystem's room, runs left in the log, kept copies."""
    path = config.paths.state / HISTORY_FILE
    findings = [_database(path), *_room(path)]
    findings += _left_in_log(config, path)
    findings += [_kept(copy) for copy in damaged_copies(config.paths.state)]
    return findings


def _database(path: Path) -> Finding:
    check = "database"
    if not path.exists():
        return ok(AREA, check, f"{path} does not exist yet: the first run creates it")
    try:
        check_header(path)
        runs = _read(path)
    except HistoryUnavailable as exc:
        return error(AREA, check, exc.message, exc.hint)
    except sqlite3.Error as exc:
        problem = unavailable(path, exc)
        return error(AREA, check, problem.message, problem.hint)
    if not all(os.access(p, os.W_OK) for p in (path, path.parent)):
        return error(AREA, check, f"{path} is read-only: runs are logged to phobos's log "
                     "file instead", "`lsattr` it (chattr -i), or remount its filesystem "
                     "read-write")
    return ok(AREA, check, f"{path}: {runs} runs, readable and writable")


def _read(path: Path) -> int:
    """The number of runs, after SQLite's quick check of the whole file."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        verdict = db.execute("PRAGMA quick_check(1)").fetchone()
        if verdict is None or verdict[0] != "ok":
            raise HistoryUnavailable(f"the history database {path} is damaged "
                                     f"({verdict[0] if verdict else 'no answer'})",
                                     "the next `phobos run` moves it aside (keeping it) "
                                     "and starts a fresh one", damaged=True)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        return int(db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]) if (
            "runs" in tables) else 0
    finally:
        db.close()


def _room(path: Path) -> list[Finding]:
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return []
    free = stat.f_bavail * stat.f_frsize
    if free < LOW_SPACE:
        return [error(AREA, "free space", f"{free // 1024} kB free for {path.parent}: the "
                      "history (and the LED's state) cannot be written when it is full",
                      "free space on that filesystem")]
    return []


def _left_in_log(config: Config, path: Path) -> list[Finding]:
    """Runs logged to phobos's log file while the history was unavailable, later than the
    database's last change: nobody has looked at them in `phobos history`."""
    log = FallbackLog(config.paths.log)
    last = None
    for record in log.records():
        if record.get("event") == "history-unavailable":
            last = record
    if last is None:
        return []
    at = float(last.get("ts", 0))
    try:
        changed = max(p.stat().st_mtime for p in (path, path.with_name(path.name + "-wal"))
                      if p.exists())
    except ValueError:
        changed = 0.0
    if changed > at + 60:
        return []  # the database has been written since: it works again
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
    return [warning(AREA, "log file", f"runs were logged to {log.path} while the history "
                    f"was unavailable (last at {when}): {last.get('problem', '')}",
                    f"see those runs with `grep '\"run\"' {log.path}`; they are not in "
                    "`phobos history`")]


def _kept(copy: Path) -> Finding:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(copy.stat().st_mtime))
    return warning(AREA, "damaged copy", f"{copy} was moved aside on {when}: the history "
                   "was damaged and a fresh one started; earlier runs are in the copy",
                   f"look into it with `sqlite3 {copy}`, then delete it (and its -wal)")
