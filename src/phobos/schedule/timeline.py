"""Rendering a schedule :class:`~phobos.schedule.plan.Plan`: a terminal table (rich), JSON, SVG.

The terminal table has the shape of the schedule admins draw by hand (the original setup had
one): one row per hour, one column per family of jobs (pulls, Borg, drives, other), cells like
"nightly starts" / "nightly …" / "nightly finishes" — so the hand-made sketch is replaced by
the real thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from html import escape
from typing import Any

from phobos.config.model import Config
from phobos.core.model import JobKind, format_duration
from phobos.schedule.plan import Conflict, Plan, Slot

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


def plan_json(plan: Plan) -> dict[str, Any]:
    def slot(s: Slot) -> dict[str, Any]:
        return {"job": s.job, "start": s.start.isoformat(), "end": s.end.isoformat()}

    return {
        "start": plan.start.isoformat(), "end": plan.end.isoformat(),
        "slots": [slot(s) for s in plan.slots],
        "typical": {k: v.as_json() for k, v in sorted(plan.typical.items())},
        "conflicts": [{"first": slot(c.first), "later": slot(c.later),
                       "resources": list(c.resources), "expected_wait": c.wait}
                      for c in plan.conflicts],
        "triggered": {name: (None if run is None else run.as_json())
                      for name, run in sorted(plan.unscheduled.items())},
    }


# --- SVG ------------------------------------------------------------------------------------

ROW, LABEL, WIDTH = 26, 140, 960
COLOURS = {"Borg": "#4e79a7", "Rsync pulls": "#59a14f", "External": "#f28e2b", "Other": "#9c755f"}


def render_svg(plan: Plan, config: Config) -> str:
    """A Gantt picture: one row per job, bars for expected runs, red frames on overlaps."""
    jobs = sorted({s.job for s in plan.slots})
    span = (plan.end - plan.start).total_seconds() or 1.0
    height = ROW * (len(jobs) + 2)

    def x(moment: datetime) -> float:
        offset = (moment - plan.start).total_seconds()
        return LABEL + (WIDTH - LABEL - 10) * max(0.0, min(1.0, offset / span))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>']
    parts += _svg_grid(plan, x, height)
    waiting = {c.later for c in plan.conflicts}
    for row, name in enumerate(jobs, start=1):
        y = row * ROW
        family = FAMILIES[config.jobs[name].kind]
        parts.append(f'<text x="6" y="{y + 17}">{escape(name)}</text>')
        for s in (s for s in plan.slots if s.job == name):
            x0, x1 = x(s.start), max(x(s.end), x(s.start) + 2)
            stroke = ' stroke="#e15759" stroke-width="2"' if s in waiting else ""
            parts.append(f'<rect class="slot" x="{x0:.1f}" y="{y + 4}" width="{x1 - x0:.1f}" '
                         f'height="{ROW - 8}" fill="{COLOURS[family]}"{stroke}>'
                         f'<title>{escape(s.job)} {s.start:%a %H:%M}–{s.end:%H:%M}</title>'
                         '</rect>')
    parts.append("</svg>")
    return "\n".join(parts)


def _svg_grid(plan: Plan, x: Any, height: int) -> list[str]:
    hours = list(_hours(plan))
    step = 1 if len(hours) <= 24 else 6
    lines = []
    for index, hour in enumerate(hours):
        if index % step:
            continue
        px = x(hour)
        label = f"{hour:%H}" if step == 1 else f"{hour:%a %H}"
        lines.append(f'<line x1="{px:.1f}" y1="{ROW - 6}" x2="{px:.1f}" y2="{height}" '
                     'stroke="#ddd"/>')
        lines.append(f'<text x="{px + 2:.1f}" y="{ROW - 10}" fill="#555">{label}</text>')
    return lines
