"""The schedule view: typical durations from history, expected overlaps of conflicting
jobs with the expected wait, next run and overdue verdicts, and the renderings."""

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
from phobos.schedule.plan import job_timing, plan_window, typical_duration
from phobos.schedule.timeline import plan_json, render_svg, render_text, table_rows

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


def test_conflicting_jobs_overlap_with_expected_wait(setup: tuple[Config, History]) -> None:
    config, history = setup
    add_run(history, "nightly", 1000.0, 75 * 60.0)  # the original setup's 1h15m
    add_run(history, "reader", 1000.0, 60.0)
    plan = plan_window(config, history, SUNDAY, SUNDAY + timedelta(days=1))
    found = {(c.first.job, c.later.job): c for c in plan.conflicts}
    # check (Sun 03:30) writes repo:main while nightly (03:00-04:15) writes it: 45 min wait.
    assert found[("nightly", "check")].wait == 45 * 60
    assert found[("nightly", "check")].resources == ("repo:main",)
    # reader only reads repo:main, but nightly writes it: a conflict too (1h05m wait).
    assert found[("nightly", "reader")].wait == 65 * 60
    # pull-luv at 06:00 writes holding:luv; nothing else runs then.
    assert not any("pull-luv" in pair for pair in found)
    assert set(plan.unscheduled) == {"offsite"}
    starts = [(s.job, s.start.strftime("%H:%M")) for s in plan.slots]
    assert starts == [("nightly", "03:00"), ("reader", "03:10"), ("check", "03:30"),
                      ("pull-luv", "06:00")]


def test_readers_alone_never_conflict(setup: tuple[Config, History]) -> None:
    config, history = setup
    add_run(history, "reader", 1000.0, 3 * 3600.0)
    monday = SUNDAY + timedelta(days=1)
    plan = plan_window(config, history, monday + timedelta(hours=3, minutes=5),
                       monday + timedelta(hours=4))
    # Only reader is in this window (nightly starts at 03:00, before it).
    assert [s.job for s in plan.slots] == ["reader"]
    assert plan.conflicts == []


def test_renderings_show_the_same_plan(setup: tuple[Config, History]) -> None:
    config, history = setup
    add_run(history, "nightly", 1000.0, 75 * 60.0)
    plan = plan_window(config, history, SUNDAY, SUNDAY + timedelta(days=1))
    headers, rows = table_rows(plan, config)
    assert headers == ["Time", "Other"]
    by_hour = {row[0]: row[1] for row in rows}
    assert by_hour["Sun 0300"].splitlines()[0] == "nightly starts 03:00"
    assert "check starts 03:30 (waits ~45m00s for nightly)" in by_hour["Sun 0300"]
    assert by_hour["Sun 0400"].splitlines()[0] == "nightly finishes ~04:15"
    text = render_text(plan, config)
    assert "check waits ~45m00s for nightly (shared: repo:main)" in text
    assert "offsite: never run" in text
    data = plan_json(plan)
    waits = {c["later"]["job"]: c["expected_wait"] for c in data["conflicts"]}
    assert waits == {"reader": 65 * 60, "check": 45 * 60}
    svg = render_svg(plan, config)
    assert svg.startswith("<svg") and svg.count('class="slot"') == len(plan.slots)
    assert 'stroke="#e15759"' in svg  # the waiting runs are framed


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
