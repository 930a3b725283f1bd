"""A simulated window said once: per chain, per delay, per skip, per triggered job.

Instead of every pair of overlapping runs, :func:`notes` says what an admin needs: "arc-*
run 03:00–04:12 in order", "backup-luv at 03:20 delays arc-holding-luv by 16m
(holding:luv)", "check at 03:00 waits 1h12m for arc-* (repo:main)", "pull-x at 06:00 is
skipped: …". The same sentence on several days is one line ("daily", or the days).
:func:`safe_starts` finds when a triggered job (a drive sync) can start and finish
before the next conflicting run; :func:`triggered_advice` says it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from phobos.config.model import Config
from phobos.core.model import JobKind, format_duration
from phobos.schedule.simulate import LOOKBACK, PredictedRun, Simulation

MIN_REPORTED_WAIT = 60.0  # shorter waits are noise in a night's picture


@dataclass(frozen=True, slots=True)
class Note:
    """One sentence about the window and the days it holds on."""

    text: str
    days: tuple[date, ...]
    first: float  # when it first happens (for ordering)


def chain_label(chain: list[str]) -> str:
    """``arc-*`` for arc-etc, arc-home, …; ``a…z`` when the names share no prefix."""
    prefix = chain[0]
    for name in chain[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    if len(prefix) >= 2:
        return prefix + "*"
    return f"{chain[0]}…{chain[-1]}"


def notes(sim: Simulation, config: Config) -> list[Note]:
    """Chains, delays and skips of the window, each sentence once with its days."""
    found: dict[str, tuple[list[date], float]] = {}

    def add(text: str, run: PredictedRun) -> None:
        day = sim.moment(run.planned).date()
        days, _ = found.setdefault(text, ([], run.planned))
        if day not in days:
            days.append(day)

    for slot_runs in _by_slot(sim.runs).values():
        for chain in sim.chains:
            text = _chain_sentence(sim, chain, slot_runs)
            if text:
                add(text, slot_runs[0])
    for run in sim.runs:
        for text in _delay_sentences(sim, config, run):
            add(text, run)
        if run.outcome == "skipped":
            add(f"{run.job} at {_hm(sim, run.planned)} is skipped: {run.skip_reason}", run)
    return sorted((Note(text, tuple(days), first) for text, (days, first) in found.items()),
                  key=lambda n: (n.first, n.text))


def render_notes(sim: Simulation, items: list[Note]) -> list[str]:
    """Each note as one line, prefixed by the days it holds on."""
    all_days = _window_days(sim)
    return [f"{_days_label(n.days, all_days):<7} {n.text}" for n in items]


def _by_slot(runs: list[PredictedRun]) -> dict[float, list[PredictedRun]]:
    slots: dict[float, list[PredictedRun]] = {}
    for run in runs:
        slots.setdefault(run.planned, []).append(run)
    return slots


def _chain_sentence(sim: Simulation, chain: list[str],
                    slot_runs: list[PredictedRun]) -> str | None:
    members = [r for r in slot_runs if r.job in chain]
    ran = [r for r in members if r.outcome == "run"]
    names = {r.job for r in members}
    linked = any(set(sim.after_of(r.job)) & names for r in members)
    if len(members) < 2 or not ran or not linked:
        return None  # not a chain in this slot: its members run on their own
    text = (f"{chain_label(chain)} run {_hm(sim, min(r.start for r in ran))}–"
            f"{_hm(sim, max(r.end for r in ran))} in order")
    skipped = [r.job for r in members if r.outcome == "skipped"]
    return text + (f" ({', '.join(skipped)} skipped)" if skipped else "")


def _delay_sentences(sim: Simulation, config: Config, run: PredictedRun) -> list[str]:
    """Waits of ``run`` worth a line: for other jobs' runs (grouped by chain) and for
    predecessors of another slot; never the normal flow of its own chain."""
    own_chain = sim.chain_of(run.job) or []
    waited: dict[str, tuple[float, PredictedRun, set[str]]] = {}
    for blocker, seconds in [*run.busy_by.items(), *run.order_by.items()]:
        if blocker.job in own_chain and blocker.planned == run.planned:
            continue  # the chain's own order
        chain = sim.chain_of(blocker.job)
        label = chain_label(chain) if chain and chain is not own_chain else blocker.job
        total, first, shared = waited.get(label, (0.0, blocker, set()))
        shared |= set(sim.shared(run.job, blocker.job))
        if blocker.job in config.jobs[run.job].after:
            shared.add("after")
        waited[label] = (total + seconds, first, shared)
    sentences = []
    for label, (seconds, first, shared) in list(waited.items()):
        if own_chain and first.job not in own_chain and seconds >= MIN_REPORTED_WAIT:
            del waited[label]  # said from the side of the job that delays the chain
            why = f" ({', '.join(sorted(shared))})" if shared else ""
            sentences.append(f"{label} at {_hm(sim, first.planned)} delays {run.job} by "
                             f"{span(seconds)}{why}")
    total = sum(seconds for seconds, _, _ in waited.values())
    if total >= MIN_REPORTED_WAIT:
        shared = set().union(*(s for _, _, s in waited.values()))
        why = f" ({', '.join(sorted(shared))})" if shared else " (they go first in the slot)"
        sentences.append(f"{run.job} at {_hm(sim, run.planned)} waits {span(total)} for "
                         f"{', '.join(waited)}{why}")
    return sentences


def _hm(sim: Simulation, when: float) -> str:
    return sim.moment(when).strftime("%H:%M")


def _window_days(sim: Simulation) -> list[date]:
    first, last = sim.start.date(), (sim.end - timedelta(microseconds=1)).date()
    return [date.fromordinal(n) for n in range(first.toordinal(), last.toordinal() + 1)]


def _days_label(days: tuple[date, ...], all_days: list[date]) -> str:
    if len(all_days) > 1 and len(days) == len(all_days):
        return "daily"
    if len(days) <= 3:
        return " ".join(d.strftime("%a") for d in days)
    return f"{len(days)} days"


# --- triggered jobs -----------------------------------------------------------------------


def safe_starts(sim: Simulation, config: Config, name: str) -> list[tuple[float, float]]:
    """Spans of start times from which ``name``, taking its typical (median) time,
    finishes before the next run that conflicts with it: from the late end (p90) of one
    conflicting run to the next one's arrival, less the duration. Spans that touch the
    window, whole (one may begin the day before); empty when the duration is unknown."""
    duration = sim.typical[name].median
    if duration is None:
        return []
    rivals = {other for other in config.jobs if sim.shared(name, other)}
    busy = sorted((r.arrival, r.late_end if r.outcome == "run" else r.start)
                  for r in sim.busy_runs if r.job in rivals)
    first, last = sim.start.timestamp(), sim.end.timestamp()
    spans, free_from = [], (sim.start - LOOKBACK).timestamp()
    for arrive, leave in busy:
        latest = arrive - duration
        if latest >= max(free_from, first) and free_from < last:
            spans.append((free_from, latest))
        free_from = max(free_from, leave)
    if free_from < last:
        spans.append((free_from, float("inf")))
    return spans


def triggered_advice(sim: Simulation, config: Config, name: str) -> str:
    """When to start a job without a schedule, as one sentence."""
    typical = sim.typical[name]
    job = config.jobs[name]
    verb = "plug a drive in" if job.kind is JobKind.DRIVE_SYNC else "start it"
    if typical.median is None:
        return (f"{name}: duration unknown (no runs yet); set `estimate` to see when to "
                f"{verb}")
    took = f"{name} typically {format_duration(typical.median)}"
    if not any(sim.shared(name, other) for other in config.jobs if other != name):
        return f"{name}: {verb} any time: nothing in the schedule conflicts with it ({took})"
    spans = safe_starts(sim, config, name)
    if not spans:
        return (f"{name}: no gap in this window is long enough to {verb} and finish "
                f"before the next conflicting job ({took})")
    return (f"{name}: {verb} {_spans_text(sim, spans)} to finish before the next "
            f"conflicting job ({took})")


def _spans_text(sim: Simulation, spans: list[tuple[float, float]]) -> str:
    """``daily between 04:12 and 22:00 (Sun: between 12:30 and 22:00)``, or per day."""
    per_day: dict[date, str] = {}
    for begin, end in spans:
        text = (f"after {_hm(sim, begin)}" if end == float("inf")
                else f"between {_hm(sim, begin)} and {_hm(sim, end)}")
        day = sim.moment(begin).date()
        per_day[day] = f"{per_day[day]} or {text}" if day in per_day else text
    if len(per_day) == 1:
        return next(iter(per_day.values()))
    common = max(set(per_day.values()), key=list(per_day.values()).count)
    others = [f"{day:%a}: {text}" for day, text in per_day.items() if text != common]
    if len(per_day) - len(others) >= 2 and len(per_day) >= len(_window_days(sim)) - 1:
        return f"daily {common}" + (f" ({'; '.join(others)})" if others else "")
    return "; ".join(f"{day:%a} {text}" for day, text in per_day.items())


def span(seconds: float) -> str:
    """A wait in the words of a schedule: ``45s``, ``16m``, ``1h12m``."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes = round(seconds / 60)
    return f"{minutes}m" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"
