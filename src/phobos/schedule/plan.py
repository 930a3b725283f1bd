"""How long jobs take and when they run next: the facts the schedule is made of.

:func:`typical_duration` gives a job's median and p90 of its successful runs, counted
from holding its locks to the end (waiting is not work), or its ``estimate``;
:func:`job_timing` gives ``phobos status`` its next run and overdue verdict. The night
itself is predicted by :mod:`phobos.schedule.simulate` and drawn by
:mod:`phobos.schedule.timeline` and :mod:`phobos.schedule.picture`.

Everything here is pure given a config, a history and a moment.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from phobos.config.job import JobBase
from phobos.core import order
from phobos.core.history import History, Run
from phobos.oncalendar.elapse import next_elapse
from phobos.oncalendar.spec import CalendarSpec

DEFAULT_GRACE = timedelta(hours=1)
SAMPLE_RUNS = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class Typical:
    """How long a job usually takes. ``source``: history, estimate or unknown."""

    median: float | None
    p90: float | None
    source: str
    samples: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"median": self.median, "p90": self.p90, "source": self.source,
                "samples": self.samples}


def calendar_of(job: JobBase) -> CalendarSpec | None:
    """The job's parsed schedule, or None when it only runs when triggered."""
    return order.calendar_of(job)


def typical_duration(history: History, name: str, job: JobBase) -> Typical:
    durations = history.work_durations(name, SAMPLE_RUNS)
    if durations:
        ordered = sorted(durations)
        p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
        return Typical(median=statistics.median(ordered), p90=p90, source="history",
                       samples=len(ordered))
    if job.estimate is not None:
        return Typical(median=float(job.estimate), p90=float(job.estimate), source="estimate")
    return Typical(median=None, p90=None, source="unknown")


# --- status: next run and overdue -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    next_run: datetime | None
    overdue: bool
    due_since: datetime | None  # the elapse that was missed (with grace) when overdue

    def as_json(self) -> dict[str, Any]:
        return {"next_run": self.next_run.timestamp() if self.next_run else None,
                "overdue": self.overdue,
                "due_since": self.due_since.timestamp() if self.due_since else None}


def job_timing(job: JobBase, now: datetime, last_success: Run | None,
               first_run: Run | None, typical: Typical | None = None) -> Timing:
    """Next run, and whether the job is overdue.

    A scheduled job is overdue when the first elapse after its last success (or, never
    having succeeded, after its first recorded run) lies before ``now`` by more than the
    grace (an hour, or the typical p90 if longer): a missed timer, a machine that was
    off, or a job that keeps failing. A job with a ``max_age`` (an off-site copy, see
    :meth:`~phobos.config.job.JobBase.freshness`) is also overdue, schedule or not,
    when its last success is older than that. A job never run at all is not overdue:
    phobos cannot know when it was set up.
    """
    spec = calendar_of(job)
    next_run = next_elapse(spec, now) if spec is not None else None
    reference = last_success or first_run
    if reference is None:
        return Timing(next_run=next_run, overdue=False, due_since=None)
    since = datetime.fromtimestamp(reference.ended or reference.started, tz=now.tzinfo)
    due = next_elapse(spec, since) if spec is not None else None
    grace = max(DEFAULT_GRACE, timedelta(seconds=(typical.p90 or 0.0) if typical else 0.0))
    missed = due is not None and due + grace < now
    max_age = job.freshness()
    stale_since = None if max_age is None else since + timedelta(seconds=max_age)
    stale = stale_since is not None and stale_since < now
    if not (missed or stale):
        return Timing(next_run=next_run, overdue=False, due_since=None)
    candidates = [d for d, hit in ((due, missed), (stale_since, stale)) if hit and d]
    return Timing(next_run=next_run, overdue=True, due_since=min(candidates))
