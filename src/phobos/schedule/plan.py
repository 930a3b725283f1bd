"""When does what run: the schedule table admins used to draw by hand, computed.

From each scheduled job's calendar and its measured durations (median and p90 of its
successful runs, counted from holding its locks to the end, so waiting is not counted
as work), :func:`plan_window` lays out every run expected in a window and finds where
two *conflicting* jobs (a shared resource, at least one writing) would overlap, with
the wait the later one should expect. Jobs without a schedule (drive-triggered ones)
are listed with their last and typical run. :func:`job_timing` gives ``phobos status``
its next run and overdue verdict.

Everything here is pure given a config, a history and a moment; rendering lives in
:mod:`phobos.schedule.timeline`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.core.history import History, Run
from phobos.core.locks import merge
from phobos.oncalendar.elapse import next_elapse
from phobos.oncalendar.errors import CalendarError
from phobos.oncalendar.parse import parse_calendar
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    job: str
    start: datetime
    end: datetime  # start + typical median (or a nominal minute when unknown)
    known: bool = True  # False: no history and no estimate, ``end`` is nominal


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    """Two runs expected to overlap on a resource: ``later`` should wait ``wait`` seconds."""

    first: Slot
    later: Slot
    resources: tuple[str, ...]

    @property
    def wait(self) -> float:
        return max(0.0, (self.first.end - self.later.start).total_seconds())


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    start: datetime
    end: datetime
    slots: list[Slot]
    typical: dict[str, Typical]
    conflicts: list[Conflict]
    unscheduled: dict[str, Run | None] = field(default_factory=dict)


def calendar_of(job: JobBase) -> CalendarSpec | None:
    """The job's parsed schedule, or None when it only runs when triggered."""
    if job.schedule is None:
        return None
    try:
        return parse_calendar(job.schedule)
    except CalendarError:
        return None  # config validation reports it; the schedule view just omits it


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


def _conflicting_resources(config: Config, a: JobBase, b: JobBase) -> tuple[str, ...]:
    ours = {r.name: r.write for r in merge(a.resources(config))}
    theirs = {r.name: r.write for r in merge(b.resources(config))}
    return tuple(sorted(name for name in ours.keys() & theirs.keys()
                        if ours[name] or theirs[name]))


def plan_window(config: Config, history: History, start: datetime, end: datetime) -> Plan:
    """Every expected run in [start, end), typical durations, and conflicts."""
    typical = {name: typical_duration(history, name, job) for name, job in config.jobs.items()}
    slots: list[Slot] = []
    unscheduled: dict[str, Run | None] = {}
    latest = history.latest_per_job()
    for name, job in config.jobs.items():
        spec = calendar_of(job)
        if spec is None:
            unscheduled[name] = latest.get(name)
            continue
        known = typical[name].median is not None
        length = timedelta(seconds=typical[name].median or 60.0)
        slots += [Slot(job=name, start=when, end=when + length, known=known)
                  for when in _elapses(spec, start, end)]
    slots.sort(key=lambda s: (s.start, s.job))
    return Plan(start=start, end=end, slots=slots, typical=typical,
                conflicts=_conflicts(config, slots), unscheduled=unscheduled)


def _elapses(spec: CalendarSpec, start: datetime, end: datetime) -> list[datetime]:
    found: list[datetime] = []
    current = start - timedelta(microseconds=1)
    while len(found) < 10_000:  # a per-second schedule over a week stays far below
        nxt = next_elapse(spec, current)
        if nxt is None or nxt >= end:
            break
        found.append(nxt)
        current = nxt
    return found


def _conflicts(config: Config, slots: list[Slot]) -> list[Conflict]:
    conflicts = []
    for index, first in enumerate(slots):
        for later in slots[index + 1:]:
            if later.start >= first.end:
                break  # sorted by start: nothing further overlaps ``first``
            if later.job == first.job:
                continue
            shared = _conflicting_resources(config, config.jobs[first.job],
                                            config.jobs[later.job])
            if shared:
                conflicts.append(Conflict(first=first, later=later, resources=shared))
    return conflicts


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
    """Next run, and whether a scheduled job missed its slot.

    A job is overdue when the first elapse after its last success (or, never having
    succeeded, after its first recorded run) lies before ``now`` by more than the grace
    (an hour, or the typical p90 if longer): a missed timer, a machine that was off, or
    a job that keeps failing. A job never run at all is not overdue: phobos cannot know
    when it was set up.
    """
    spec = calendar_of(job)
    if spec is None:
        return Timing(next_run=None, overdue=False, due_since=None)
    next_run = next_elapse(spec, now)
    reference = last_success or first_run
    if reference is None:
        return Timing(next_run=next_run, overdue=False, due_since=None)
    since = datetime.fromtimestamp(reference.ended or reference.started, tz=now.tzinfo)
    due = next_elapse(spec, since)
    grace = max(DEFAULT_GRACE, timedelta(seconds=(typical.p90 or 0.0) if typical else 0.0))
    overdue = due is not None and due + grace < now
    return Timing(next_run=next_run, overdue=overdue, due_since=due if overdue else None)
