"""What ``phobos status`` and the dashboard show per job: the last run, the next run and
whether the job is overdue, from the config and the history (no process started)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from phobos.schedule.plan import job_timing, typical_duration


def status_entries(config: Any, history: Any, now: datetime) -> list[dict[str, Any]]:
    """Per job, sorted by name: kind, schedule, last run (or None), next run, overdue."""
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
                        **timing.as_json()})
    return entries
