"""The schedule view: typical durations from history, the simulated night as text and
JSON, `--from`, next run and overdue verdicts. (The simulation's rules: test_simulate.py;
the picture: test_schedule_picture.py.)"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from configs import config_from

from phobos.__main__ import main
from phobos.config.model import Config
from phobos.core.history import History
from phobos.core.model import Outcome
from phobos.schedule.plan import job_timing, typical_duration
from phobos.schedule.simulate import simulate
from phobos.schedule.timeline import render_text, simulation_json, table_rows

CONFIG = """
[repos.main]
path = "/backup/borg"

[hosts.luv]
address = "luv.example.org"

[jobs.nightly]
kind = "command"
argv = ["true"]
reads = ["holding:luv"]
writes = ["repo:main"]
schedule = "*-*-* 03:00 UTC"

[jobs.check]
kind = "command"
argv = ["true"]
writes = ["repo:main"]
schedule = "Sun *-*-* 03:30 UTC"
estimate = "5h30m"

[jobs.pull-luv]
kind = "command"
argv = ["true"]
writes = ["holding:luv"]
schedule = "*-*-* 06:00 UTC"
estimate = "10m"

[jobs.reader]
kind = "command"
argv = ["true"]
reads = ["repo:main"]
schedule = "*-*-* 03:10 UTC"

[jobs.offsite]
kind = "command"
argv = ["true"]
reads = ["repo:main"]
"""

SUNDAY = datetime(2026, 1, 4, 0, 0, tzinfo=UTC)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Config, History]:
    config = config_from(CONFIG, root=tmp_path)
    history = History.open(config.paths.state)
    return config, history


def add_run(history: History, job: str, start: float, work: float,
            outcome: Outcome = Outcome.SUCCESS, wait: float = 0.0) -> None:
    run_id = history.start_run(job=job, kind="command", trigger="timer")
    history.db.execute("UPDATE runs SET started = ?, locked = ?, ended = ?, outcome = ? "
                       "WHERE id = ?", (start, start + wait, start + wait + work,
                                        str(outcome), run_id))


def test_typical_uses_work_time_of_successes_then_estimate(setup: tuple[Config, History]
                                                           ) -> None:
    config, history = setup
    for minutes in (60, 70, 80, 90, 200):
        add_run(history, "nightly", 1000.0, minutes * 60.0, wait=3600.0)
    add_run(history, "nightly", 1000.0, 99999.0, outcome=Outcome.FAILED)
    typical = typical_duration(history, "nightly", config.jobs["nightly"])
    assert (typical.median, typical.p90, typical.source, typical.samples) == (
        80 * 60.0, 200 * 60.0, "history", 5)
    check = typical_duration(history, "check", config.jobs["check"])
    assert (check.median, check.source) == (5.5 * 3600, "estimate")
    assert typical_duration(history, "reader", config.jobs["reader"]).source == "unknown"


def test_text_and_json_say_the_simulated_night(setup: tuple[Config, History]) -> None:
    config, history = setup
    add_run(history, "nightly", 1000.0, 75 * 60.0)  # the original setup's 1h15m
    sim = simulate(config, history, SUNDAY, SUNDAY + timedelta(days=1))
    headers, rows = table_rows(sim, config)
    assert headers == ["Time", "Other"]
    by_hour = {row[0]: row[1].splitlines() for row in rows}
    assert by_hour["Sun 0300"] == ["nightly starts 03:00"]
    # reader (03:10) reads what nightly writes, check (03:30) writes it: both wait.
    assert by_hour["Sun 0400"] == [
        "nightly finishes ~04:15",
        "reader 04:15–04:16 (1m00s) (timer 03:10, waits 1h05m for nightly)",
        "check starts 04:16 (timer 03:30, waits 46m for nightly, reader)"]
    text = render_text(sim, config)
    assert "  Sun     reader at 03:10 waits 1h05m for nightly (repo:main)\n" in text
    assert "  Sun     check at 03:30 waits 46m for nightly, reader (repo:main)\n" in text
    assert ("  offsite: duration unknown (no runs yet); set `estimate` to see when to start "
            "it; never run\n") in text
    data = simulation_json(sim, config)
    slots = {s["job"]: s for s in data["slots"]}
    assert slots["check"] == {
        "job": "check", "planned": "2026-01-04T03:30:00+00:00",
        "start": "2026-01-04T04:16:00+00:00", "end": "2026-01-04T09:46:00+00:00",
        "outcome": "run", "waits_for": ["nightly", "reader"],
        "late_end": "2026-01-04T09:46:00+00:00", "duration_known": True, "reason": None}
    assert [s["job"] for s in data["slots"]] == ["nightly", "reader", "check", "pull-luv"]
    assert set(data["triggered"]) == {"offsite"}


def test_from_sets_the_window_in_local_time(setup: tuple[Config, History],
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    config, history = setup
    history.close()
    monkeypatch.setenv("TZ", "Europe/Berlin")
    assert main(["-c", str(config.source), "schedule", "--from", "2026-07-05 02:00",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["start"], data["end"]) == ("2026-07-05T02:00:00+02:00",
                                            "2026-07-06T02:00:00+02:00")
    # nightly is at 03:00 UTC: 05:00 in Berlin in summer.
    assert data["slots"][0]["planned"] == "2026-07-05T05:00:00+02:00"
    assert main(["-c", str(config.source), "schedule", "--from", "tomorrow"]) == 2
    err = capsys.readouterr().err
    assert "--from 'tomorrow' is not a local time like '2026-01-04 03:00'" in err
    assert "Traceback" not in err


def test_overdue_after_missed_slot_plus_grace(setup: tuple[Config, History]) -> None:
    config, history = setup
    job = config.jobs["nightly"]
    monday_0400 = SUNDAY + timedelta(days=1, hours=4)
    add_run(history, "nightly", (SUNDAY + timedelta(hours=3)).timestamp(), 600)
    success = history.last_success_per_job()["nightly"]
    first = history.first_runs()["nightly"]
    timing = job_timing(job, monday_0400, success, first)
    # Monday 03:00 was due; within the hour of grace at 04:00 minus a second... at 04:00
    # exactly the grace (1h) has just passed: not yet overdue.
    assert not timing.overdue
    late = job_timing(job, monday_0400 + timedelta(minutes=1), success, first)
    assert late.overdue and late.due_since == SUNDAY + timedelta(days=1, hours=3)
    assert late.next_run == SUNDAY + timedelta(days=2, hours=3)
    never = job_timing(job, monday_0400, None, None)
    assert not never.overdue
    unscheduled = job_timing(config.jobs["offsite"], monday_0400, None, None)
    assert unscheduled.next_run is None and not unscheduled.overdue


def test_status_and_schedule_cli(setup: tuple[Config, History],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    config, history = setup
    add_run(history, "nightly", time.time() - 3 * 86400, 60)
    history.close()
    assert main(["-c", str(config.source), "status", "--json"]) == 0
    jobs = {j["job"]: j for j in json.loads(capsys.readouterr().out)["jobs"]}
    assert jobs["nightly"]["overdue"] is True
    assert jobs["offsite"]["next_run"] is None
    assert main(["-c", str(config.source), "status"]) == 0
    assert "success (OVERDUE)" in capsys.readouterr().out
    svg = Path(config.paths.state) / "s.svg"
    assert main(["-c", str(config.source), "schedule", "--days", "7", "--json",
                 "--svg", str(svg)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sum(1 for s in data["slots"] if s["job"] == "nightly") == 7
    assert svg.read_text().startswith("<svg")


def test_overdue_notifies_once_per_episode(setup: tuple[Config, History]) -> None:
    from phobos.schedule.overdue import notify_new_episodes, overdue_jobs

    config, history = setup
    warnings: list[str] = []
    add_run(history, "nightly", (SUNDAY + timedelta(hours=3)).timestamp(), 600)
    tuesday = SUNDAY + timedelta(days=2, hours=12)
    found = overdue_jobs(config, history, tuesday)
    assert found == {"nightly": (SUNDAY + timedelta(days=1, hours=3)).timestamp()}
    assert notify_new_episodes(config, found, warnings.append) == ["nightly"]
    assert notify_new_episodes(config, found, warnings.append) == []  # same episode
    add_run(history, "nightly", (tuesday - timedelta(hours=1)).timestamp(), 60)
    assert overdue_jobs(config, history, tuesday) == {}
    assert notify_new_episodes(config, {}, warnings.append) == []
    later = tuesday + timedelta(days=2)
    again = overdue_jobs(config, history, later)
    assert notify_new_episodes(config, again, warnings.append) == ["nightly"]
    assert warnings == []


def test_overdue_drives_never_synced_or_past_max_age(tmp_path: Path) -> None:
    from phobos.schedule.overdue import overdue_drives

    config = config_from("""
        [drives.ext-a]
        luks_uuid = "0b2caa2d-a032-458c-bc6c-cddeaba2a442"
        max_age = "35d"
        """, root=tmp_path)
    found = overdue_drives(config, SUNDAY)
    assert found == {"drive:ext-a": 0.0}  # never synced: overdue from the start
