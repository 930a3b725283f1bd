"""What each dashboard page shows, gathered from the config and the state (read only).

Every function here takes the config, a read-only history and ``now`` and returns plain
data for a template; none of them imports the web framework, so the benchmark and the
metrics use them directly. Devices are never probed (that would run programs): drives
show what the drive state file recorded.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from phobos.config.model import Config
from phobos.core.history import History, LogLine, Run
from phobos.schedule.plan import Typical, job_timing, typical_duration
from phobos.schedule.simulate import Simulation, simulate
from phobos.web.readonly import Span, live_runs, runs_since

JOB_RUNS = 50  # rows in a job's run table
CHART_RUNS = 200  # runs in a job's charts
MAX_RUNS = 1000  # the most a job page lists (?runs=N)
LOG_LIMIT = 50_000  # lines of one run's log shown (the newest ones)
RUNNING_REFRESH = 5  # seconds between reloads while a job runs
IDLE_REFRESH = 60

# A few stats worth a chart, per kind of job, as the jobs record them.
STAT_SERIES: tuple[tuple[str, str, str], ...] = (
    ("bytes_transferred", "bytes pulled", "bytes"),
    ("bytes_total", "size of the pulled tree", "bytes"),
    ("deduplicated_size", "deduplicated size (new data in the repository)", "bytes"),
    ("original_size", "original size of the archive", "bytes"),
    ("copied_bytes", "bytes copied to the drive", "bytes"),
    ("coverage", "check coverage of the current pass", "ratio"),
)


def state_of(last: dict[str, Any] | None, live: dict[int, bool]) -> str:
    """The word (and CSS class) for a job's latest run: an outcome, ``never``, or
    ``stale`` for a run recorded as running whose process is gone."""
    if last is None:
        return "never"
    if last["outcome"] == "running" and not live.get(last["id"], False):
        return "stale"
    return str(last["outcome"])


@dataclass(frozen=True, slots=True, kw_only=True)
class Overview:
    host: str
    entries: list[dict[str, Any]]
    led: Any  # LedSnapshot
    drives: list[Any]  # DriveStatus
    repos: list[dict[str, Any]]
    running: list[dict[str, Any]]
    refresh: int


def status(config: Config, history: History, now: datetime) -> list[dict[str, Any]]:
    """Exactly what ``phobos status --json`` lists under ``jobs``."""
    from phobos.schedule.status import status_entries

    return status_entries(config, history, now)


def overview(config: Config, history: History, now: datetime) -> Overview:
    from phobos.notify.led.tracker import LedTracker

    live = live_runs(history)
    entries = status(config, history, now)
    for entry in entries:
        entry["state"] = state_of(entry["last"], live)
    running = [e for e in entries if e["running"] is not None]
    led = LedTracker(config.paths.state).snapshot()
    return Overview(host=socket.gethostname(), entries=entries, led=led,
                    drives=drive_statuses(config), repos=repo_summaries(config, history),
                    running=running, refresh=_refresh(live, led))


def _refresh(live: dict[int, bool], led: Any = None) -> int:
    busy = any(live.values()) or (led is not None and bool(led.active))
    return RUNNING_REFRESH if busy else IDLE_REFRESH


def drive_statuses(config: Config) -> list[Any]:
    from phobos.drives.rotation import rotation

    return rotation(config, probe_devices=False)


def repo_summaries(config: Config, history: History) -> list[dict[str, Any]]:
    from phobos.repos.summary import summary

    return [summary(config, name, history) for name in sorted(config.repos)]


# --- one job ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPage:
    name: str
    job: Any  # JobBase
    runs: list[Run]
    shown: int  # how many of ``runs`` the table lists
    state: str
    next_run: datetime | None
    overdue: bool
    due_since: datetime | None
    typical: Typical
    resources: list[str]
    series: list[tuple[str, str, list[tuple[Run, float]]]]
    refresh: int
    more: int | None  # ?runs= for the next page, if there may be more
    running: dict[str, Any] | None = None  # the run in progress (schedule.running)


def job_page(config: Config, history: History, name: str, now: datetime,
             limit: int = JOB_RUNS) -> JobPage:
    from phobos.schedule.running import running_entries

    job = config.job(name)  # UsageError (404) for an unknown name
    limit = max(1, min(limit, MAX_RUNS))
    runs = history.runs(name, max(limit, CHART_RUNS))
    typical = typical_duration(history, name, job)
    successes = history.last_success_per_job()
    firsts = history.first_runs()
    timing = job_timing(job, now, successes.get(name), firsts.get(name), typical)
    live = live_runs(history)
    last = runs[0].as_json() if runs else None
    return JobPage(
        name=name, job=job, runs=runs, shown=min(limit, len(runs)),
        state=state_of(last, live), next_run=timing.next_run, overdue=timing.overdue,
        due_since=timing.due_since, typical=typical,
        resources=[f"{r.name} ({'write' if r.write else 'read'})"
                   for r in job.resources(config)],
        series=stat_series(runs[:CHART_RUNS]),
        refresh=_refresh({k: v for k, v in live.items() if runs and k == runs[0].id}),
        more=min(limit * 4, MAX_RUNS) if len(runs) >= limit and limit < MAX_RUNS else None,
        running=running_entries(config, history, now.timestamp()).get(name))


def stat_value(stats: dict[str, Any], key: str) -> float | None:
    """A number from a run's stats: top level, or summed over drives (drive-sync jobs)."""
    value = stats.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    drives = stats.get("drives")
    if isinstance(drives, dict):
        found = [d.get(key) for d in drives.values() if isinstance(d, dict)]
        numbers = [float(v) for v in found if isinstance(v, int | float)]
        if numbers:
            return sum(numbers)
    return None


def stat_series(runs: list[Run]) -> list[tuple[str, str, list[tuple[Run, float]]]]:
    """(label, unit, [(run, value)] oldest first) for each stat the runs recorded."""
    series = []
    for key, label, unit in STAT_SERIES:
        points = [(run, value) for run in reversed(runs)
                  if (value := stat_value(run.stats, key)) is not None]
        if points:
            series.append((label, unit, points))
    return series


# --- one run ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPage:
    run: Run
    state: str
    steps: list[dict[str, Any]]
    log: list[LogLine]
    skipped_lines: int
    refresh: int | None


def run_page(history: History, run_id: int) -> RunPage:
    run = history.run(run_id)  # UsageError (404) for an unknown id
    lines = list(history.log_lines(run_id))
    skipped = max(0, len(lines) - LOG_LIMIT)
    live = live_runs(history)
    state = state_of(run.as_json(), live)
    return RunPage(run=run, state=state, steps=history.steps(run_id), log=lines[skipped:],
                   skipped_lines=skipped,
                   refresh=RUNNING_REFRESH if state == "running" else None)


# --- timeline --------------------------------------------------------------------------

WEEK = timedelta(days=7)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeline:
    sim: Simulation  # the next 24 hours, simulated as `phobos schedule` does
    notes: list[str]  # chains, delays and skips, each once
    advice: dict[str, str]  # triggered job -> when to start it
    past: list[Span]
    past_start: datetime
    now: datetime
    refresh: int
    plan_jobs: list[str] = field(default_factory=list)


def timeline(config: Config, history: History, now: datetime) -> Timeline:
    from phobos.schedule.digest import notes, render_notes, triggered_advice

    start = now.replace(minute=0, second=0, microsecond=0)
    sim = simulate(config, history, start, start + timedelta(days=1))
    past_start = now - WEEK
    return Timeline(sim=sim, notes=render_notes(sim, notes(sim, config)),
                    advice={name: triggered_advice(sim, config, name)
                            for name in sorted(sim.triggered)},
                    past=runs_since(history, past_start.timestamp()),
                    past_start=past_start, now=now, refresh=_refresh(live_runs(history)),
                    plan_jobs=sorted({r.job for r in sim.runs}))


# --- drives ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DrivesPage:
    drives: list[Any]  # DriveStatus
    facts: dict[str, dict[str, Any]]  # per drive: last_attached, syncs (newest first)
    events: list[dict[str, Any]]  # newest first


def drives_page(config: Config, events: int = 30) -> DrivesPage:
    from phobos.drives.state import load_state

    state = load_state(config)
    recorded = state.get("drives", {})
    facts = {}
    for name in config.drives:
        entry = recorded.get(name, {}) if isinstance(recorded.get(name), dict) else {}
        syncs = [s for s in entry.get("syncs", []) if isinstance(s, dict)]
        facts[name] = {"last_attached": entry.get("last_attached"),
                       "syncs": list(reversed(syncs))[:10]}
    log = [e for e in state.get("events", []) if isinstance(e, dict)]
    return DrivesPage(drives=drive_statuses(config), facts=facts,
                      events=list(reversed(log))[:events])
