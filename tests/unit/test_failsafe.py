"""Damaged bookkeeping never stops a run: the history's damage told apart from its being
unwritable, a damaged database moved aside (kept) and replaced, the recorder falling
back to phobos's own log file, alerts due until someone took them on; stop signals that
no ``except PhobosError`` can swallow; Borg's full-disk failure in one line; the LED and
the messages for a history in trouble and for a run its own person stopped."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from phobos.core.history import History, check_header, unavailable
from phobos.core.model import LedState, Outcome
from phobos.core.recorder import FallbackLog, RunRecorder, damaged_copies, open_for_run
from phobos.core.runner import StopRequest
from phobos.errors import HistoryUnavailable, Interrupted, PhobosError
from phobos.notify.base import EventKind, RunEvent
from phobos.notify.channel import event_name, render
from phobos.notify.errors import LedStateUnwritable
from phobos.notify.led.drivers import FileDriver
from phobos.notify.led.machine import HISTORY
from phobos.notify.led.tracker import LedTracker
from phobos.tools import borg_repository, borg_space


def a_history(state: Path, runs: int = 3) -> Path:
    history = History.open(state)
    for n in range(runs):
        run_id = history.start_run(job=f"job{n}", kind="command", trigger="timer")
        history.finish_run(run_id, outcome=Outcome.SUCCESS, exit_code=0, message=None,
                           stats={"n": n})
    history.close()
    return state / "history.sqlite"


# --- telling damage from the rest ------------------------------------------------------------


def test_a_missing_empty_or_sound_database_is_no_damage(tmp_path: Path) -> None:
    check_header(tmp_path / "none.sqlite")
    (tmp_path / "empty.sqlite").write_bytes(b"")
    check_header(tmp_path / "empty.sqlite")
    check_header(a_history(tmp_path))


def test_garbage_and_truncation_are_damage(tmp_path: Path) -> None:
    path = a_history(tmp_path, runs=200)
    data = path.read_bytes()
    path.write_bytes(os.urandom(100) + data[100:])
    with pytest.raises(HistoryUnavailable, match="does not start with an SQLite header") as err:
        check_header(path)
    assert err.value.damaged and "moves it aside" in (err.value.hint or "")
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(HistoryUnavailable, match="truncated") as err:
        check_header(path)
    assert err.value.damaged


def test_a_short_file_with_its_wal_is_left_to_sqlite(tmp_path: Path) -> None:
    """A checkpoint cut short leaves the main file shorter than its header says; the WAL
    still holds the pages, so that is not damage."""
    path = a_history(tmp_path, runs=200)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    path.with_name(path.name + "-wal").write_bytes(b"\0" * 32)
    check_header(path)


def test_sqlite_errors_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    path.write_bytes(b"not a database " * 100)
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError) as raised:
        db.execute("SELECT * FROM sqlite_master").fetchall()
    db.close()
    assert unavailable(path, raised.value).damaged
    full = unavailable(path, OSError(28, "No space left on device"))
    assert not full.damaged and "full" in (full.hint or "")
    read_only = unavailable(path, OSError(30, "Read-only file system"))
    assert "read-only" in (read_only.hint or "") and "Read-only file system" in read_only.message


def test_the_empty_stand_in_history_makes_no_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """What status and the web show when the history is unavailable lives in memory: no
    file named ``:memory:`` in whatever directory phobos was started from."""
    monkeypatch.chdir(tmp_path)
    history = History.in_memory()
    run_id = history.start_run(job="nightly", kind="command", trigger="timer")
    assert [r.id for r in history.runs()] == [run_id]
    history.close()
    assert list(tmp_path.iterdir()) == []


def malformed_history(state: Path) -> None:
    """A history whose header is sound but whose pages are not (SQLite finds out only
    when it reads them): every page after the first starts with garbage."""
    history = History.open(state)
    for n in range(6):
        run_id = history.start_run(job="quick", kind="command", trigger="timer")
        for line in range(200):
            history.log(run_id, "stdout", f"line {line} of some output")
        history.finish_run(run_id, outcome=Outcome.SUCCESS, exit_code=0, message=None,
                           stats={"n": n})
    history.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    history.close()
    path = state / "history.sqlite"
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 4096):
        data[offset:offset + 16] = b"\x0d" + b"\xff" * 15
    path.write_bytes(bytes(data))
    check_header(path)  # the damage is past what the header tells


@pytest.mark.parametrize("verb", [["history"], ["log", "3"], ["schedule"], ["overdue"],
                                  ["status"]])
def test_damage_past_the_header_is_said_without_a_traceback(
        tmp_path: Path, verb: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from configs import config_from

    from phobos.__main__ import main

    config_from("""
        [jobs.quick]
        kind = "command"
        argv = ["true"]
        schedule = "hourly"
        """, root=tmp_path)
    malformed_history(tmp_path / "state")
    code = main(["-c", str(tmp_path / "phobos.toml"), *verb])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert "history" in err and "malformed" in err


# --- the recorder -------------------------------------------------------------------------------


def test_a_damaged_database_is_moved_aside_kept_and_replaced(tmp_path: Path) -> None:
    state, logs = tmp_path / "state", tmp_path / "log"
    path = a_history(state)
    original = path.read_bytes()
    path.write_bytes(b"garbage!" * 16 + original[128:])
    recorder = open_for_run(state, logs)
    assert recorder.history is not None and recorder.problem is not None
    (kept,) = damaged_copies(state)
    assert kept.read_bytes()[128:] == original[128:]  # kept as it was, never deleted
    assert f"moved aside to {kept}" in recorder.problem.message
    run_id = recorder.start_run(job="nightly", kind="archive", trigger="timer")
    recorder.finish_run(run_id, outcome=Outcome.SUCCESS, exit_code=0, message=None, stats={})
    recorder.close()
    assert [r.job for r in History.open(state).runs()] == ["nightly"]
    told = [r for r in FallbackLog(logs).records() if r["event"] == "history-unavailable"]
    assert len(told) == 1 and "moved aside" in str(told[0]["problem"])


def test_without_a_database_the_run_goes_to_the_log_file(tmp_path: Path) -> None:
    log = FallbackLog(tmp_path / "log")
    recorder = RunRecorder(tmp_path / "history.sqlite", None, log)
    run_id = recorder.start_run(job="nightly", kind="command", trigger="timer")
    assert run_id == -os.getpid()  # not in the database: negative
    recorder.log(run_id, "stdout", "hello")
    recorder.finish_run(run_id, outcome=Outcome.SUCCESS, exit_code=0, message=None, stats={})
    assert recorder.runs("nightly") == []
    events = [(r["event"], r.get("line")) for r in log.records()]
    assert events == [("run", None), ("log", "hello"), ("finished", None)]
    assert (tmp_path / "log" / "phobos.log").stat().st_mode & 0o777 == 0o600


def test_a_database_failing_mid_run_hands_over_to_the_log_file(tmp_path: Path) -> None:
    log = FallbackLog(tmp_path / "log")
    history = History.open(tmp_path / "state")
    recorder = RunRecorder(history.path, history, log)
    run_id = recorder.start_run(job="nightly", kind="command", trigger="timer")
    recorder.log(run_id, "stdout", "queued, not yet written")
    history.db.close()  # from here every statement fails
    recorder.log(run_id, "stdout", "after")
    recorder.finish_run(run_id, outcome=Outcome.SUCCESS, exit_code=0, message=None, stats={})
    recorder.close()
    assert recorder.problem is not None and "from here on" in recorder.problem.message
    lines = [r["line"] for r in log.records() if r["event"] == "log"]
    assert lines == ["queued, not yet written", "after"]  # nothing queued is lost
    assert [r["run"] for r in log.records() if r["event"] == "finished"] == [run_id]


def test_an_unwritable_database_is_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "history.sqlite").mkdir()  # cannot be a database, and is no damage either
    recorder = open_for_run(state, tmp_path / "log")
    assert recorder.history is None and recorder.problem is not None
    assert recorder.problem.message.startswith("history unavailable: cannot use")
    assert damaged_copies(state) == []


# --- alerts due until taken on ------------------------------------------------------------------


def test_a_dead_runs_alert_is_taken_on_exactly_once(tmp_path: Path) -> None:
    history = History.open(tmp_path)
    dead = history.start_run(job="nightly", kind="command", trigger="timer")
    history.db.execute("UPDATE runs SET pid = 999999999, pid_start = 1 WHERE id = ?", (dead,))
    assert history.recover() == [dead]
    assert history.recover() == []  # marked once
    assert [r.id for r in history.due_alerts()] == [dead]
    assert history.claim_alert(dead) is True
    assert history.claim_alert(dead) is False
    assert history.due_alerts() == [] and history.alert_of(dead) == "taken"
    history.close()


def test_a_failed_run_is_due_until_its_runner_told_and_only_once_dead(tmp_path: Path) -> None:
    history = History.open(tmp_path)
    run_id = history.start_run(job="nightly", kind="command", trigger="timer")
    history.finish_run(run_id, outcome=Outcome.FAILED, exit_code=1, message="boom", stats={},
                       alert="due")
    assert history.due_alerts() == []  # its process (this one) is still telling
    history.db.execute("UPDATE runs SET pid = 999999999 WHERE id = ?", (run_id,))
    assert [r.id for r in history.due_alerts()] == [run_id]
    history.close()


def test_a_failure_left_to_systemds_hook_is_not_taken_by_the_cleanup(tmp_path: Path) -> None:
    history = History.open(tmp_path)
    run_id = history.start_run(job="nightly", kind="command", trigger="timer")
    history.finish_run(run_id, outcome=Outcome.FAILED, exit_code=1, message="boom", stats={},
                       alert="hook")
    history.db.execute("UPDATE runs SET pid = 999999999 WHERE id = ?", (run_id,))
    assert history.due_alerts() == []  # the unit failed: its OnFailure= hook tells
    assert history.claim_alert(run_id) is True and history.alert_of(run_id) == "taken"
    history.close()


def test_the_led_stops_showing_a_run_whose_process_is_gone(tmp_path: Path) -> None:
    """A run that ended without telling the LED (killed after its outcome was recorded,
    no alert due) leaves it "working": the next phobos start shows the truth again."""
    import subprocess

    from configs import config_from

    from phobos.notify.setup import led_tracker
    from phobos.reconcile import reconcile

    config = config_from(f"""
        [notify.led]
        driver = "file"
        path = "{tmp_path}/led"
        """, root=tmp_path)
    dead = subprocess.Popen(["sleep", "60"])
    led_tracker(config).job_started("7", "nightly", "timer", pid=dead.pid)
    assert (tmp_path / "led").read_text().strip() == "yellow"
    dead.kill()
    dead.wait()
    history = History.open(config.paths.state)
    said: list[str] = []
    assert reconcile(config, history, said.append) == []  # nothing due: only the LED
    history.close()
    assert (tmp_path / "led").read_text().strip() == "off" and said == []


# --- stop signals ----------------------------------------------------------------------------


def test_a_stop_signal_is_no_error_anything_may_swallow() -> None:
    assert not issubclass(Interrupted, Exception)
    with pytest.raises(Interrupted):
        try:
            raise Interrupted("stopped by SIGTERM")
        except PhobosError:  # what naming a lock's holder did: it must not catch this
            pytest.fail("swallowed")


def test_a_stop_signal_is_remembered_until_the_run_ends() -> None:
    stop = StopRequest()
    stop.check()
    stop.received = Interrupted("stopped by Ctrl-C at the terminal", by_user=True)
    with pytest.raises(Interrupted) as again:
        stop.check()
    assert again.value.by_user and stop.by_user


# --- Borg and a full filesystem ------------------------------------------------------------


TRACEBACK = ["stderr: Local Exception", "stderr: Traceback (most recent call last):",
             'stderr:   File ".../borg/repository.py", line 1718, in write_put',
             "stderr: OSError: [Errno 28] No space left on device", "stderr: ",
             "stderr: Platform: Linux vm 6.1", "stderr: PID: 17043  CWD: /tmp",
             "stderr: sys.argv: ['borg', 'create', 'repo::a2', 'data']",
             "stderr: SSH_ORIGINAL_COMMAND: None"]


def repo_with_segments(tmp_path: Path, segment: int) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config").write_text(f"[repository]\nversion = 1\nmax_segment_size = {segment}\n"
                                 "additional_free_space = 0\n")
    (repo / "index.7").write_bytes(b"\0" * 1000)
    return repo


def test_a_full_repository_filesystem_is_said_in_one_line(tmp_path: Path) -> None:
    repo = repo_with_segments(tmp_path, 1 << 50)  # more than any disk here has free
    message, hint = borg_space.diagnoser(repo)(TRACEBACK) or ("", "")
    where = borg_space.mount_point(repo)
    assert message.startswith(f"no space left on {where} (needs ~")
    assert "for a Borg commit" in message and "sys.argv" not in message
    assert "borg compact" in hint


def test_borgs_own_refusal_names_what_it_needs(tmp_path: Path) -> None:
    repo = repo_with_segments(tmp_path, 1 << 20)
    lines = ["stderr: Insufficient free space to complete transaction (required: 545.26 MB, "
             "available: 12.30 MB)."]
    message, _ = borg_space.diagnoser(repo)(lines) or ("", "")
    assert message.endswith("(needs ~545.26 MB free for a Borg commit; 12.30 MB are free)")


def test_other_failures_are_not_mistaken_for_a_full_disk(tmp_path: Path) -> None:
    repo = repo_with_segments(tmp_path, 1 << 20)
    assert borg_space.diagnoser(repo)(["stderr: Repository does not exist."]) is None


def test_a_full_cache_is_not_blamed_on_the_repository(tmp_path: Path) -> None:
    repo = repo_with_segments(tmp_path, 1 << 20)  # a small need: this disk has room
    message, hint = borg_space.diagnoser(repo)(TRACEBACK) or ("", "")
    assert message.startswith("Borg ran out of space, though") and "cache" in hint


def test_what_a_commit_needs(tmp_path: Path) -> None:
    repo = repo_with_segments(tmp_path, 500 * 1024 * 1024)
    assert borg_space.required_free_space(repo) == (
        4 * 1000 + 4096 + 500 * 1024 * 1024 + 20 * 1024 * 1024)
    assert borg_space.human(borg_space.required_free_space(repo)) == "545 MB"
    assert borg_space.parse_size("2G") == 2_000_000_000 and borg_space.parse_size("x") == 0


def test_only_commands_that_commit_blame_the_repositorys_filesystem(tmp_path: Path) -> None:
    """An extract that fills its target (a restore) or a check that fills the cache is
    not told as "no space left on" the repository's filesystem."""
    from phobos.repos.repo import borg_step
    from phobos.tools import borg as borgtool

    borg = borgtool.Borg(path="borg", version=(1, 4, 5))
    acc = borgtool.access(borg, str(tmp_path), lock_wait=60)
    for command in ("create", "prune", "compact", "delete"):
        step = borg_step(command, ["borg", command, "::x"], acc, borg, tmp_path)
        assert step.diagnose is not None, command
    for command in ("extract", "check", "list", "info"):
        step = borg_step(command, ["borg", command, "::x"], acc, borg, tmp_path)
        assert step.diagnose is None, command


def test_a_lock_whose_roster_was_never_written_still_names_its_holder(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "lock.exclusive").mkdir(parents=True)
    (repo / "lock.roster").write_text("")  # Borg died writing it (a full disk)
    (repo / "lock.exclusive" / f"{borg_repository.host_id()}.999999999-0").touch()
    (holder,) = borg_repository.lock_holders(repo)
    assert holder.pid == 999999999 and holder.local and holder.alive is False


def test_a_repository_on_a_server_is_left_to_the_server(tmp_path: Path) -> None:
    """Its free space and its Borg locks are the server's: doctor's space check, the
    full-disk diagnosis and the cleanup after a dead run leave it alone."""
    from configs import config_from

    from phobos.doctor.space import space_findings
    from phobos.reconcile import break_stale_borg_locks
    from phobos.repos.repo import borg_step
    from phobos.tools import borg as borgtool

    config = config_from("""
        [repos.far]
        url = "ssh://borg@nas/srv/borg"
        encryption = "none"
        """, root=tmp_path)
    assert space_findings(config) == []
    assert break_stale_borg_locks(config, "far") == []
    borg = borgtool.Borg(path="borg", version=(1, 4, 5))
    acc = borgtool.access(borg, "ssh://borg@nas/x", lock_wait=60)
    assert borg_step("create", ["borg", "create"], acc, borg, None).diagnose is None


# --- what the notifiers make of it --------------------------------------------------------------


def event(**details: object) -> RunEvent:
    base: dict[str, object] = {"kind": EventKind.FINISHED, "job": "nightly",
                               "job_kind": "archive", "run_id": 7, "trigger": "timer",
                               "outcome": Outcome.SUCCESS}
    return RunEvent(**{**base, **details})  # type: ignore[arg-type]


def test_history_trouble_is_a_failure_message_whatever_the_job_did() -> None:
    note = render(event(trouble="the history database is damaged"))
    assert event_name(event(trouble="x")) == "failure"
    assert note.subject.endswith("nightly succeeded; its history needs attention")
    assert "Problem:   the history database is damaged" in note.body


def test_a_run_stopped_by_its_own_person_tells_no_one() -> None:
    assert event_name(event(outcome=Outcome.INTERRUPTED, by_user=True)) is None
    assert event_name(event(outcome=Outcome.INTERRUPTED)) == "failure"


def test_a_run_outside_the_database_points_to_the_log_file() -> None:
    note = render(event(run_id=-4242, outcome=Outcome.FAILED))
    assert "not in the history database" in note.body and "phobos log" not in note.body


def test_the_led_shows_the_historys_red_even_when_it_cannot_remember_it(
        tmp_path: Path) -> None:
    light = tmp_path / "led"
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state directory should be")
    tracker = LedTracker(blocked, driver=FileDriver(light),
                         clock=lambda: datetime(2026, 1, 5, tzinfo=UTC))
    with pytest.raises(LedStateUnwritable):
        tracker.job_finished("7", "nightly", "success", history_trouble=True)
    assert light.read_text().strip() == str(LedState.RED)


def test_a_run_recorded_again_clears_the_historys_red(tmp_path: Path) -> None:
    tracker = LedTracker(tmp_path, clear_on_success=True)
    tracker.job_finished("7", "nightly", "success", history_trouble=True)
    assert [f.job for f in tracker.snapshot().failures] == [HISTORY]
    assert tracker.job_finished("8", "nightly", "success", history_trouble=False) \
        is LedState.OFF
    kept = LedTracker(tmp_path / "kept")  # without clear_on_success it stays until acked
    kept.job_finished("7", "nightly", "success", history_trouble=True)
    assert kept.job_finished("8", "nightly", "success", history_trouble=False) is LedState.RED


def test_ctrl_c_leaves_no_mark_on_the_led(tmp_path: Path) -> None:
    tracker = LedTracker(tmp_path)
    tracker.job_started("9", "nightly", "manual")
    assert tracker.job_ended_quietly("9") is LedState.OFF
    assert json.loads((tmp_path / "led.json").read_text())["failures"] == []


def test_a_stop_signal_between_the_jobs_end_and_its_record_still_ends_recorded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The moment the fault suite once hit (a SIGTERM just as a check ended left the run
    "running" in history): here the signal arrives as the job's outcome is handed back."""
    from configs import config_from

    from phobos.core import runner
    from phobos.core.model import Trigger

    config = config_from("""
        [jobs.quick]
        kind = "command"
        argv = ["true"]
        """, root=tmp_path)
    execute = runner._execute

    def then_a_sigterm(*args: Any) -> Any:
        outcome = execute(*args)
        os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler on the next line
        return outcome

    monkeypatch.setattr(runner, "_execute", then_a_sigterm)
    report = runner.run_job(config, "quick", Trigger.TIMER)
    assert report.outcome is Outcome.INTERRUPTED and report.message == "stopped by SIGTERM"
    history = History.open(config.paths.state)
    row = history.run(report.run_id)
    history.close()
    assert row.outcome is Outcome.INTERRUPTED and row.ended is not None, row
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again


def test_a_stop_signal_during_a_held_cleanup_waits_for_its_end() -> None:
    from phobos.core.runner import signals_interrupt

    finished = False
    with signals_interrupt() as stop:
        with stop.held():
            os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler on the next line
            finished = True
        assert finished and stop.received is not None
        with pytest.raises(Interrupted, match="stopped by SIGTERM"):
            stop.check()
