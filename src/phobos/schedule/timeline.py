"""A simulated window (:class:`~phobos.schedule.simulate.Simulation`) as text and JSON.

The text has the shape of the schedule admins draw by hand (the seed's setup had one): one
row per hour, one column per family of jobs (Borg, pulls, drives, other), cells like
"arc-* starts 03:00 (9 in order)" / "arc-* finishes ~04:12" — a chain of ``after`` is one
entry, as borgmatic's nine configurations were one line. Below it the digest (chains,
delays, skips, each once), when to start the triggered jobs, and the typical durations.
The picture is :mod:`phobos.schedule.picture`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from phobos.config.model import Config
from phobos.core.model import JobKind, format_duration
from phobos.schedule.digest import (
    chain_label,
    notes,
    render_notes,
    safe_starts,
    span,
    triggered_advice,
)
from phobos.schedule.simulate import PredictedRun, Simulation

FAMILIES = {JobKind.PULL: "Rsync pulls", JobKind.ARCHIVE: "Borg", JobKind.CHECK: "Borg",
            JobKind.DRILL: "Borg", JobKind.BORGMATIC: "Borg", JobKind.DRIVE_SYNC: "External",
            JobKind.CLOUD_SYNC: "External", JobKind.COMMAND: "Other"}
FAMILY_ORDER = ("Borg", "Rsync pulls", "External", "Other")


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the table: a run, or a chain's runs of one slot."""

    label: str
    family: str
    planned: float
    start: float
    end: float
    skipped: bool = False
    note: str = ""


def entries(sim: Simulation, config: Config) -> list[Entry]:
    """The table's entries: a chain's runs of one slot become one."""
    found: list[Entry] = []
    grouped: dict[tuple[int, float], list[PredictedRun]] = {}
    for run in sim.runs:
        chain = sim.chain_of(run.job)
        if chain is not None and run.outcome == "run":
            grouped.setdefault((sim.chains.index(chain), run.planned), []).append(run)
            continue
        found.append(_entry(sim, config, run))
    for (index, _), runs in grouped.items():
        if len(runs) == 1:
            found.append(_entry(sim, config, runs[0]))
            continue
        found.append(Entry(label=chain_label(sim.chains[index]),
                           family=FAMILIES[config.jobs[runs[0].job].kind],
                           planned=runs[0].planned, start=min(r.start for r in runs),
                           end=max(r.end for r in runs), note=f"{len(runs)} in order"))
    return sorted(found, key=lambda e: (e.start, e.label))


def _entry(sim: Simulation, config: Config, run: PredictedRun) -> Entry:
    note = ""
    if run.outcome == "skipped":
        note = "skipped"
    elif run.wait >= 60:
        note = f"timer {_hm(sim, run.planned)}, waits {span(run.wait)}"
        chains = [sim.chain_of(job) for job in run.waits_for]
        names = dict.fromkeys(chain_label(chain) if chain else job
                              for job, chain in zip(run.waits_for, chains, strict=True))
        if names:
            note += f" for {', '.join(list(names)[:3])}"
    elif not run.known:
        note = "duration unknown"
    return Entry(label=run.job, family=FAMILIES[config.jobs[run.job].kind],
                 planned=run.planned, start=run.start, end=run.end,
                 skipped=run.outcome == "skipped", note=note)


def _hm(sim: Simulation, when: float) -> str:
    return sim.moment(when).strftime("%H:%M")


def _hours(sim: Simulation) -> Iterator[datetime]:
    hour = sim.start.replace(minute=0, second=0, microsecond=0)
    while hour < sim.end:
        yield hour
        hour = sim.moment(hour.timestamp() + 3600)


def _cell_text(sim: Simulation, entry: Entry, hour: float) -> str | None:
    end_of_hour = hour + 3600
    if entry.skipped:
        inside = hour <= entry.planned < end_of_hour
        return f"{entry.label} {_hm(sim, entry.planned)} skipped" if inside else None
    starts = hour <= entry.start < end_of_hour
    if not starts and (entry.end <= hour or entry.start >= end_of_hour):
        return None
    ends = hour < entry.end <= end_of_hour or entry.start == entry.end
    note = f" ({entry.note})" if entry.note and starts else ""
    if starts and ends:
        took = format_duration(entry.end - entry.start)
        return f"{entry.label} {_hm(sim, entry.start)}–{_hm(sim, entry.end)} ({took}){note}"
    if starts:
        return f"{entry.label} starts {_hm(sim, entry.start)}{note}"
    if ends:
        return f"{entry.label} finishes ~{_hm(sim, entry.end)}"
    return f"{entry.label} …"


def table_rows(sim: Simulation, config: Config) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the hour-by-hour table; hours with nothing running are left out."""
    items = entries(sim, config)
    families = [f for f in FAMILY_ORDER if any(e.family == f for e in items)]
    hours = list(_hours(sim))
    starts = [hour.timestamp() for hour in hours]
    cells: dict[int, dict[str, list[str]]] = {}
    for entry in items:  # each entry visits only the hours it touches
        first = max(0, bisect.bisect_right(starts, min(entry.planned, entry.start)) - 1)
        last = bisect.bisect_left(starts, max(entry.end, entry.start, entry.planned) + 1e-6)
        for index in range(first, min(last, len(hours))):
            text = _cell_text(sim, entry, starts[index])
            if text is not None:
                row = cells.setdefault(index, {family: [] for family in families})
                row[entry.family].append(text)
    rows = [[f"{hours[i]:%a %H}00", *("\n".join(cells[i][f]) for f in families)]
            for i in sorted(cells)]
    return ["Time", *families], rows


def _grid(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A plain table whose cells may hold several lines."""
    split = [[cell.splitlines() or [""] for cell in row] for row in rows]
    widths = [max([len(h), *(len(line) for row in split for line in row[i])])
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for row in split:
        for depth in range(max(len(cell) for cell in row)):
            lines.append("  ".join((cell[depth] if depth < len(cell) else "").ljust(w)
                                   for cell, w in zip(row, widths, strict=True)).rstrip())
    return lines


def render_text(sim: Simulation, config: Config) -> str:
    """The window as text: the hour table, what happens, triggered jobs, durations."""
    zone = sim.start.strftime("%Z") or sim.start.strftime("%z")
    lines = [f"phobos schedule {sim.start:%a %Y-%m-%d %H:%M} – {sim.end:%a %Y-%m-%d %H:%M} "
             f"({zone})", ""]
    headers, rows = table_rows(sim, config)
    lines += _grid(headers, rows) if rows else ["no scheduled runs in this window"]
    said = render_notes(sim, notes(sim, config))
    lines += ["", "What happens (phobos runs conflicting jobs one after another):"]
    lines += [f"  {line}" for line in said] or ["  nothing waits for anything."]
    if sim.triggered:
        lines += ["", "Triggered jobs (a drive plugged in, or by hand):"]
        for name, last in sorted(sim.triggered.items()):
            when = "never run" if last is None else (
                f"last {datetime.fromtimestamp(last.started):%Y-%m-%d %H:%M} ({last.outcome})")
            lines.append(f"  {triggered_advice(sim, config, name)}; {when}")
    lines += _typical_lines(sim)
    return "\n".join(lines) + "\n"


def _typical_lines(sim: Simulation) -> list[str]:
    lines = ["", "Typical durations (median / p90 of successful runs):"]
    for name, typical in sorted(sim.typical.items()):
        if typical.source == "unknown":
            lines.append(f"  {name}: unknown (no runs yet; set `estimate` in the config)")
        else:
            lines.append(f"  {name}: {format_duration(typical.median)} / "
                         f"{format_duration(typical.p90)} ({typical.source}"
                         + (f", {typical.samples} runs" if typical.samples else "") + ")")
    return lines


def simulation_json(sim: Simulation, config: Config) -> dict[str, Any]:
    """The window for scripts: ``slots`` (one per predicted run) and the rest."""
    def iso(when: float) -> str:
        return sim.moment(when).isoformat()

    def slot(run: PredictedRun) -> dict[str, Any]:
        return {"job": run.job, "planned": iso(run.planned), "start": iso(run.start),
                "end": iso(run.end), "outcome": run.outcome, "waits_for": run.waits_for,
                "late_end": iso(run.late_end), "duration_known": run.known,
                "reason": run.skip_reason or None}

    return {
        "start": sim.start.isoformat(), "end": sim.end.isoformat(),
        "slots": [slot(r) for r in sim.runs],
        "chains": sim.chains,
        "notes": [{"text": n.text, "days": [d.isoformat() for d in n.days]}
                  for n in notes(sim, config)],
        "typical": {k: v.as_json() for k, v in sorted(sim.typical.items())},
        "triggered": {name: {"last": None if run is None else run.as_json(),
                             "advice": triggered_advice(sim, config, name),
                             "safe_starts": [{"from": iso(a), "to": _iso_or_none(sim, b)}
                                             for a, b in safe_starts(sim, config, name)]}
                      for name, run in sorted(sim.triggered.items())},
    }


def _iso_or_none(sim: Simulation, when: float) -> str | None:
    return None if when == float("inf") else sim.moment(when).isoformat()


def window(start: datetime, days: int) -> tuple[datetime, datetime]:
    """``days`` days from ``start`` (whole local days, across a DST change too)."""
    end = (start.replace(tzinfo=None) + timedelta(days=days)).replace(tzinfo=start.tzinfo)
    return start, end
