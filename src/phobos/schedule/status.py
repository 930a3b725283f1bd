"""What ``phobos status`` and the dashboard show per job: the last run, the run in
progress, the next run and whether the job is overdue, from the config, the history and
the live state of running jobs (no process started)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from phobos.schedule.plan import job_timing, typical_duration
from phobos.schedule.running import running_entries


def status_entries(config: Any, history: Any, now: datetime) -> list[dict[str, Any]]:
    """Per job, sorted by name: kind, schedule, last run (or None), the run in progress
    (``running``: None, or see :func:`~phobos.schedule.running.running_entry`), next
    run, overdue."""
    running = running_entries(config, history, now.timestamp())
    latest = history.latest_per_job()
    successes = history.last_success_per_job()
    firsts = history.first_runs()
    entries = []
    for name, job in sorted(config.jobs.items()):
        run = latest.get(name)
        timing = job_timing(job, now, successes.get(name), firsts.get(name),
                            typical_duration(history, name, job))
        entries.append({"job": name, "kind": str(job.kind), "schedule": job.schedule,
                        "last": None if run is None else run.as_json(),
                        "running": running.get(name),
                        **timing.as_json()})
    return entries
