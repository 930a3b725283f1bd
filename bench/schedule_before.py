"""The schedule table as phobos computed it before issue 18 (commit 842edd5), kept
verbatim as the baseline of bench_schedule.py: ``plan_window`` (every run at its timer,
every overlapping pair of conflicting runs) and ``render_text`` (a rich table plus one
line per overlap). Not used by phobos itself.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.core.history import History, Run
from phobos.core.locks import merge
from phobos.core.model import JobKind, format_duration
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



FAMILIES = {JobKind.PULL: "Rsync pulls", JobKind.ARCHIVE: "Borg", JobKind.CHECK: "Borg",
            JobKind.DRILL: "Borg", JobKind.BORGMATIC: "Borg", JobKind.DRIVE_SYNC: "External",
            JobKind.COMMAND: "Other"}
FAMILY_ORDER = ("Borg", "Rsync pulls", "External", "Other")


def _hours(plan: Plan) -> Iterator[datetime]:
    hour = plan.start.replace(minute=0, second=0, microsecond=0)
    while hour < plan.end:
        yield hour
        hour += timedelta(hours=1)


def _cell_text(slot: Slot, hour: datetime, waits: dict[Slot, Conflict]) -> str | None:
    end_of_hour = hour + timedelta(hours=1)
    if slot.end <= hour or slot.start >= end_of_hour:
        return None
    starts = hour <= slot.start < end_of_hour
    ends = hour < slot.end <= end_of_hour
    if starts and ends:
        took = format_duration((slot.end - slot.start).total_seconds()) if slot.known else "?"
        text = f"{slot.job} {slot.start:%H:%M} ({took})"
    elif starts:
        text = f"{slot.job} starts {slot.start:%H:%M}"
    elif ends:
        text = f"{slot.job} finishes ~{slot.end:%H:%M}"
    else:
        text = f"{slot.job} …"
    conflict = waits.get(slot)
    if starts and conflict is not None:
        text += f" (waits ~{format_duration(conflict.wait)} for {conflict.first.job})"
    return text


def table_rows(plan: Plan, config: Config) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the hour-by-hour table; hours with nothing running are left out."""
    families = [f for f in FAMILY_ORDER
                if any(FAMILIES[config.jobs[s.job].kind] == f for s in plan.slots)]
    waits = {c.later: c for c in plan.conflicts}
    rows = []
    for hour in _hours(plan):
        cells = {family: [] for family in families}  # type: dict[str, list[str]]
        for slot in plan.slots:
            text = _cell_text(slot, hour, waits)
            if text is not None:
                cells[FAMILIES[config.jobs[slot.job].kind]].append(text)
        if any(cells.values()):
            rows.append([f"{hour:%a %H}00", *("\n".join(cells[f]) for f in families)])
    return ["Time", *families], rows


def render_text(plan: Plan, config: Config) -> str:
    """The schedule as a rich table plus conflicts and triggered jobs, as plain text."""
    from rich.console import Console
    from rich.table import Table

    headers, rows = table_rows(plan, config)
    table = Table(*headers, title=f"phobos schedule {plan.start:%Y-%m-%d %H:%M} – "
                  f"{plan.end:%Y-%m-%d %H:%M}", show_lines=False)
    for row in rows:
        table.add_row(*row)
    console = Console(width=120, record=True, force_terminal=False, color_system=None)
    with console.capture() as capture:
        console.print(table if rows else "no scheduled runs in this window")
        for line in _typical_lines(plan):
            console.print(line)
        for line in _conflict_lines(plan):
            console.print(line)
        for line in _unscheduled_lines(plan):
            console.print(line)
    return capture.get()


def _typical_lines(plan: Plan) -> list[str]:
    lines = ["", "Typical durations (median / p90 of successful runs):"]
    for name, typical in sorted(plan.typical.items()):
        if typical.source == "unknown":
            lines.append(f"  {name}: unknown (no runs yet; set `estimate` in the config)")
        else:
            lines.append(f"  {name}: {format_duration(typical.median)} / "
                         f"{format_duration(typical.p90)} ({typical.source}"
                         + (f", {typical.samples} runs" if typical.samples else "") + ")")
    return lines


def _conflict_lines(plan: Plan) -> list[str]:
    if not plan.conflicts:
        return ["", "No overlaps between conflicting jobs."]
    lines = ["", "Overlaps (phobos serializes these; the later job waits):"]
    for c in plan.conflicts:
        lines.append(f"  {c.later.start:%a %H:%M} {c.later.job} waits ~"
                     f"{format_duration(c.wait)} for {c.first.job} "
                     f"(shared: {', '.join(c.resources)})")
    return lines


def _unscheduled_lines(plan: Plan) -> list[str]:
    if not plan.unscheduled:
        return []
    lines = ["", "Triggered jobs (no schedule: drive plug-in or by hand):"]
    for name, last in sorted(plan.unscheduled.items()):
        typical = plan.typical[name]
        when = "never run" if last is None else (
            f"last {datetime.fromtimestamp(last.started):%Y-%m-%d %H:%M} ({last.outcome})")
        lines.append(f"  {name}: {when}, typically {format_duration(typical.median)}")
    return lines
