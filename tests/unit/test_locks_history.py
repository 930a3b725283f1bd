"""Lock ordering and holder records; history schema, recovery and queries."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from phobos.config.schema import line_of, locate_keys
from phobos.core.history import MIGRATIONS, History
from phobos.core.locks import LockSet, Resource, holders, merge
from phobos.core.model import BusyPolicy, Outcome
from phobos.errors import Busy, PhobosError


def test_merge_orders_globally_and_write_wins() -> None:
    merged = merge([Resource("repo:main", write=False), Resource("holding:luv"),
                    Resource("repo:main", write=True), Resource("drive:ext-a", write=False)])
    assert merged == [Resource("drive:ext-a", False), Resource("holding:luv", True),
                      Resource("repo:main", True)]


def test_holder_is_recorded_and_verified_against_the_kernel(tmp_path: Path) -> None:
    locks = LockSet(tmp_path, "nightly", 7)
    locks.acquire([Resource("repo:main")], BusyPolicy.FAIL, 1)
    [holder] = holders(tmp_path)
    assert (holder.job, holder.run_id, holder.pid, holder.write) == ("nightly", 7, os.getpid(),
                                                                     True)
    # A stale record (its process does not hold the lock) is ignored.
    (tmp_path / "repo--main.999999.holder").write_text(
        '{"resource": "repo:main", "job": "ghost", "run_id": 1, "pid": 999999, '
        '"since": 0, "write": true}')
    assert [h.job for h in holders(tmp_path)] == ["nightly"]
    locks.release()
    assert holders(tmp_path) == []


def test_second_writer_in_another_process_is_refused(tmp_path: Path) -> None:
    locks = LockSet(tmp_path, "a", 1)
    locks.acquire([Resource("storage")], BusyPolicy.FAIL, 1)
    code = ("import sys; from pathlib import Path; from phobos.core.locks import LockSet, Resource;"
            "from phobos.core.model import BusyPolicy; from phobos.errors import Busy\n"
            "try:\n LockSet(Path(sys.argv[1]), 'b', 2).acquire([Resource('storage')], "
            "BusyPolicy.FAIL, 1)\nexcept Busy as e:\n print(e.message); sys.exit(3)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True)
    assert out.returncode == 3
    assert out.stdout.startswith("storage is busy: held by job a (run 1, pid ")
    locks.release()


def test_failed_acquire_releases_what_it_took(tmp_path: Path) -> None:
    blocker = LockSet(tmp_path, "blocker", 1)
    blocker.acquire([Resource("zzz")], BusyPolicy.FAIL, 1)
    code = ("import sys; from pathlib import Path; from phobos.core.locks import LockSet, Resource;"
            "from phobos.core.model import BusyPolicy\n"
            "try:\n LockSet(Path(sys.argv[1]), 'b', 2).acquire([Resource('aaa'), "
            "Resource('zzz')], BusyPolicy.FAIL, 1)\nexcept Exception:\n sys.exit(3)")
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 3
    assert [h.resource for h in holders(tmp_path)] == ["zzz"]
    blocker.release()


def test_same_process_shared_locks_do_not_block(tmp_path: Path) -> None:
    first, second = LockSet(tmp_path, "r1", 1), LockSet(tmp_path, "r2", 2)
    first.acquire([Resource("holding:luv", write=False)], BusyPolicy.FAIL, 1)
    second.acquire([Resource("holding:luv", write=False)], BusyPolicy.FAIL, 1)
    third = LockSet(tmp_path, "w", 3)
    with pytest.raises(Busy):
        third.acquire([Resource("holding:luv", write=True)], BusyPolicy.FAIL, 1)
    first.release()
    second.release()


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


def test_locate_keys_finds_tables_keys_and_inline_keys() -> None:
    source = ('[jobs.nightly]\nkind = "archive"\nkeep = { daily = 7, dialy = 3 }\n'
              '[jobs."odd name"]\nx.y = 1\n')
    lines = locate_keys(source)
    assert line_of(("jobs", "nightly", "keep", "dialy"), lines) == 3
    assert line_of(("jobs", "nightly", "kind"), lines) == 2
    assert line_of(("jobs", "odd name", "x", "y"), lines) == 5
    assert line_of(("jobs", "nightly", "missing"), lines) == 1
    assert line_of(("nowhere",), lines) is None
