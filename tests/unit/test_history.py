"""The history database: runs recorded, dead runs recovered, a versioned schema that
refuses a newer one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from phobos.core.history import MIGRATIONS, History
from phobos.core.model import Outcome
from phobos.errors import PhobosError


def test_history_records_and_recovers_dead_runs(tmp_path: Path) -> None:
    history = History.open(tmp_path)
    run_id = history.start_run(job="nightly", kind="command", trigger="timer")
    history.log(run_id, "stdout", "hello")
    history.flush()
    # Pretend the run belongs to a process that is gone.
    history.db.execute("UPDATE runs SET pid = 999999, pid_start = 1 WHERE id = ?", (run_id,))
    live = history.start_run(job="other", kind="command", trigger="manual")
    assert history.recover() == [run_id]
    run = history.run(run_id)
    assert run.outcome is Outcome.INTERRUPTED and run.exit_code == 4
    assert run.ended is not None and run.ended >= run.started
    assert history.run(live).outcome is Outcome.RUNNING  # our own process is alive
    history.finish_run(live, outcome=Outcome.SUCCESS, exit_code=0, message=None,
                       stats={"files": 3})
    assert history.latest_per_job()["other"].stats == {"files": 3}
    assert [line.line for line in history.log_lines(run_id)] == ["hello"]
    history.close()


def test_history_schema_is_versioned_and_refuses_newer(tmp_path: Path) -> None:
    History.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "history.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(PhobosError, match="written by a newer phobos"):
        History.open(tmp_path)
