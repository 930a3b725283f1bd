"""Overdue detection with one notification per episode.

A job is overdue when it missed its slot, or when its off-site copy (a cloud-sync job) is
older than its ``max_age`` (see :func:`phobos.schedule.plan.job_timing`); a drive when it
was not synced within its ``max_age`` (the off-site copy is getting old).
``phobos overdue --notify`` (run hourly by a timer or the daemon) sends an OVERDUE
event to the notifiers once per *episode*: the episode is identified by the missed
elapse, recorded in ``overdue.json`` in the state directory, and ends when the job
succeeds again (it is then no longer overdue and its record is dropped).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from phobos.config.model import Config
from phobos.core.files import write_atomic
from phobos.core.history import History
from phobos.core.model import format_duration
from phobos.notify.base import EventKind, RunEvent, dispatch
from phobos.schedule.plan import job_timing, typical_duration


def overdue_jobs(config: Config, history: History, now: datetime) -> dict[str, float]:
    """Job name -> timestamp of the missed elapse, for every overdue job."""
    successes = history.last_success_per_job()
    firsts = history.first_runs()
    found = {}
    for name, job in config.jobs.items():
        timing = job_timing(job, now, successes.get(name), firsts.get(name),
                            typical_duration(history, name, job))
        if timing.overdue and timing.due_since is not None:
            found[name] = timing.due_since.timestamp()
    return found


def overdue_drives(config: Config, now: datetime) -> dict[str, float]:
    """``drive:NAME`` -> when it became overdue (last sync + max_age; never synced: 0)."""
    from phobos.drives import rotation  # drive state is read only when asked

    found = {}
    for status in rotation.overdue_drives(config, now.timestamp()):
        since = (status.last_sync + status.max_age) if status.last_sync else 0.0
        found[f"drive:{status.name}"] = since
    return found


def _load(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save(path: Path, data: dict[str, float]) -> None:
    write_atomic(path, json.dumps(data, sort_keys=True))


def notify_new_episodes(config: Config, overdue: dict[str, float],
                        warn: Callable[[str], None]) -> list[str]:
    """Send OVERDUE for jobs newly overdue since the last call; returns their names."""
    from phobos.notify.setup import build_notifiers

    path = config.paths.state / "overdue.json"
    known = _load(path)
    fresh = [name for name, due in sorted(overdue.items()) if known.get(name) != due]
    if fresh:
        notifiers = build_notifiers(config)
        for name in fresh:
            due = datetime.fromtimestamp(overdue[name]).astimezone()
            dispatch(notifiers, _event(config, name, due), warn)
    _save(path, dict(overdue))  # episodes that ended are forgotten
    return fresh


def _event(config: Config, name: str, due: datetime) -> RunEvent:
    if name.startswith("drive:"):
        drive = name.removeprefix("drive:")
        return RunEvent(kind=EventKind.OVERDUE, job=name, job_kind="drive", run_id=None,
                        trigger="overdue", drive=drive,
                        message=f"drive {drive} is overdue for its sync: plug it in "
                        f"(max_age {config.drives[drive].max_age / 86400:.0f} days)")
    job = config.jobs[name]
    max_age = job.freshness()
    if max_age is not None:
        message = (f"the off-site copy of {name} is older than its max_age "
                   f"({format_duration(max_age)}) or {name} missed its slot: overdue since "
                   f"{due:%Y-%m-%d %H:%M}, and it has not succeeded since")
    else:
        message = (f"{name} should have run at {due:%Y-%m-%d %H:%M} "
                   f"(schedule {job.schedule}) and has not succeeded since")
    return RunEvent(kind=EventKind.OVERDUE, job=name, job_kind=str(job.kind), run_id=None,
                    trigger="overdue", message=message)

