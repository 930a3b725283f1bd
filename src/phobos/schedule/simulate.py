"""What the night will look like: a discrete-event simulation of a window of the schedule.

Every timer elapse in the window is a predicted run. It arrives at its timer's time (plus
the job's whole ``randomized_delay``: the worst case), takes its place in line and waits
exactly as the runner makes it wait (:mod:`phobos.core.order`, :mod:`phobos.core.queue`):
for its predecessors (``after``), for the jobs ranked before it in its slot, for runs
ahead of it in line or holding a conflicting resource (readers share, writers exclude).
``on_busy`` and ``busy_timeout`` decide when it gives up; a run arriving while the
job's previous run is still going is skipped, as systemd and the daemon skip it. Work
takes the job's median duration from history (or its ``estimate``); the p90 is the
"late" end drawn after it.

The simulation starts early enough before the window for the runs still going in it (at
most a day), goes on after it as long as a triggered job would take (when is the next
conflicting run?) and reports the runs that touch the window. Times are epoch seconds
inside, aware datetimes in the local zone outside. Pure given a config, a history and a
window.
"""

from __future__ import annotations

import functools
import heapq
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo

from phobos.config.model import Config
from phobos.core.history import History, Run
from phobos.core.model import BusyPolicy, format_duration
from phobos.core.order import calendar_of, elapse_after, run_order, writes_of
from phobos.core.queue import Place
from phobos.oncalendar.spec import ALL_WEEKDAYS, CalendarSpec
from phobos.schedule.plan import Typical, typical_duration

LOOKBACK = timedelta(days=1)  # at most this much before the window is simulated
NOMINAL_SECONDS = 60.0  # the drawn length of a run whose duration is unknown
MAX_SLOTS_PER_JOB = 20_000
DAY = 86400.0


@dataclass(slots=True, eq=False)
class PredictedRun:
    """One timer elapse and what happens to it."""

    job: str
    planned: float  # the timer's time (the slot)
    arrival: float  # planned + the worst-case randomized delay
    place: Place
    work: float  # the median duration (nominal when unknown)
    late: float  # the p90 duration
    known: bool  # False: no history and no estimate
    start: float = 0.0  # when the work starts (or, skipped: when it gave up)
    outcome: str = "waiting"  # "run" or "skipped" once decided
    skip_reason: str = ""
    waits_for: list[str] = field(default_factory=list)  # job names, first seen first
    # Seconds of waiting per blocking run: ``busy`` (contention) and ``order``
    # (predecessors, the slot's order).
    busy_by: dict[PredictedRun, float] = field(default_factory=dict)
    order_by: dict[PredictedRun, float] = field(default_factory=dict)
    _blocked: tuple[list[PredictedRun], bool] | None = None
    _since: float = 0.0

    @property
    def end(self) -> float:
        return self.start + self.work if self.outcome == "run" else self.start

    @property
    def late_end(self) -> float:
        return self.start + max(self.late, self.work) if self.outcome == "run" else self.start

    @property
    def wait(self) -> float:
        return self.start - self.planned


@dataclass(frozen=True, slots=True, kw_only=True)
class Simulation:
    start: datetime
    end: datetime
    runs: list[PredictedRun]  # those touching the window, by planned time then place
    typical: dict[str, Typical]
    triggered: dict[str, Run | None]  # jobs without a schedule: their last run
    chains: list[list[str]]  # jobs linked by `after` (two or more), in run order
    busy_runs: list[PredictedRun] = field(default_factory=list)  # every run simulated

    def moment(self, when: float) -> datetime:
        return datetime.fromtimestamp(when, tz=self.start.tzinfo)

    after: dict[str, tuple[str, ...]] = field(default_factory=dict)  # the jobs' `after`
    uses: dict[str, dict[str, bool]] = field(default_factory=dict)  # resources -> writes

    def shared(self, a: str, b: str) -> list[str]:
        """Resources jobs ``a`` and ``b`` both use, at least one of them writing."""
        ours, theirs = self.uses.get(a, {}), self.uses.get(b, {})
        return sorted(r for r in ours.keys() & theirs.keys() if ours[r] or theirs[r])

    def chain_of(self, job: str) -> list[str] | None:
        return next((chain for chain in self.chains if job in chain), None)

    def after_of(self, job: str) -> tuple[str, ...]:
        return self.after.get(job, ())


def simulate(config: Config, history: History, start: datetime, end: datetime) -> Simulation:
    """Predict every run of the scheduled jobs in ``[start, end)``."""
    typical = {name: typical_duration(history, name, job) for name, job in config.jobs.items()}
    before, after = _margins(config, typical)
    runs = _slots(config, typical, start.timestamp() - before, end.timestamp() + after)
    uses = {name: writes_of(config, name) for name in config.jobs}
    _Night(config, runs, uses).play()
    first, last = start.timestamp(), end.timestamp()
    shown = [r for r in runs if r.planned < last and max(r.late_end, r.planned) >= first]
    latest = history.latest_per_job()
    return Simulation(start=start, end=end, runs=shown, typical=typical,
                      triggered={n: latest.get(n) for n, job in config.jobs.items()
                                 if job.schedule is None},
                      chains=chains(config), busy_runs=runs,
                      after={name: job.after for name, job in config.jobs.items()},
                      uses=uses)


def _margins(config: Config, typical: dict[str, Typical]) -> tuple[float, float]:
    """How far before the window a run may start and still be alive in it (its delay,
    its busy_timeout and its late duration; at most a day), and how far after it the
    next conflicting run matters to a triggered job (its typical duration)."""
    alive = [float(job.randomized_delay or 0) + job.busy_timeout
             + (typical[name].p90 or NOMINAL_SECONDS)
             for name, job in config.jobs.items() if job.schedule is not None]
    ahead = [typical[name].median or 0.0 for name, job in config.jobs.items()
             if job.schedule is None]
    limit = LOOKBACK.total_seconds()
    return min(max(alive, default=0.0), limit), min(max(ahead, default=0.0), limit)


def chains(config: Config) -> list[list[str]]:
    """Groups of jobs linked by ``after`` (either way), each in its run order."""
    ordered = run_order(config, config.jobs)
    linked: dict[str, set[str]] = {name: set() for name in config.jobs}
    for name, job in config.jobs.items():
        for pred in job.after:
            if pred in linked:
                linked[name].add(pred)
                linked[pred].add(name)
    seen: set[str] = set()
    found = []
    for name in ordered:
        if name in seen or not linked[name]:
            continue
        group, todo = set(), [name]
        while todo:
            member = todo.pop()
            if member not in group:
                group.add(member)
                todo.extend(linked[member])
        seen |= group
        found.append([n for n in ordered if n in group])
    return found


def _slots(config: Config, typical: dict[str, Typical], first: float,
           last: float) -> list[PredictedRun]:
    """Every elapse of every scheduled job in ``[first, last)``, with its place."""
    by_time: dict[float, list[str]] = {}
    elapses: dict[int, list[float]] = {}  # per calendar: jobs often share one
    for name, job in config.jobs.items():
        spec = calendar_of(job)
        if spec is not None:
            if id(spec) not in elapses:
                elapses[id(spec)] = list(_elapses(spec, first, last))
            for when in elapses[id(spec)]:
                by_time.setdefault(when, []).append(name)
    runs = []
    orders: dict[tuple[str, ...], list[str]] = {}
    for when, names in sorted(by_time.items()):
        key = tuple(names)
        if key not in orders:  # the same jobs fire together night after night
            orders[key] = run_order(config, names)
        for rank, name in enumerate(orders[key]):
            job, duration = config.jobs[name], typical[name]
            work = duration.median if duration.median is not None else NOMINAL_SECONDS
            runs.append(PredictedRun(
                job=name, planned=when, arrival=when + float(job.randomized_delay or 0.0),
                place=Place(when, rank), work=work, late=duration.p90 or work,
                known=duration.median is not None))
    return runs


def _elapses(spec: CalendarSpec, first: float, last: float) -> list[float]:
    """The elapses of ``spec`` in ``[first, last)``.

    Calendars of fixed times of day (perhaps on some weekdays) repeat every day (or
    week) while the zone's UTC offset stays the same: then one period is computed exactly
    and repeated, the same answer at a fraction of the cost. Around a DST change, and
    for every other calendar, each elapse is computed.
    """
    period = _period(spec)
    if period is None or not _steady_offset(spec, first - period, last + period):
        return _exact_elapses(spec, first, last)
    one = _exact_elapses(spec, first, min(first + period, last))
    return [when + k * period for k in range(int((last - first) // period) + 1)
            for when in one if when + k * period < last]


def _exact_elapses(spec: CalendarSpec, first: float, last: float) -> list[float]:
    found, moment = [], first - 1e-6
    for _ in range(MAX_SLOTS_PER_JOB):
        nxt = elapse_after(spec, moment)
        if nxt is None or nxt >= last:
            break
        found.append(nxt)
        moment = nxt
    return found


def _period(spec: CalendarSpec) -> float | None:
    """A day or a week for calendars of fixed times of day (``03:00``, ``Sun 07:00``,
    ``Mon,Fri 01:15:30``); None for the rest. Ranges and repeats (``00/5:07``) are left
    out: systemd skips some of their elapses where a month begins."""
    if spec.year or spec.month or spec.day or spec.end_of_month or spec.dst != -1:
        return None
    times = (*spec.hour, *spec.minute, *spec.second)
    if not (spec.hour and spec.minute and spec.second) or any(
            c.repeat or c.stop != -1 for c in times):
        return None
    return DAY if spec.weekdays in (-1, ALL_WEEKDAYS) else 7 * DAY


def _steady_offset(spec: CalendarSpec, first: float, last: float) -> bool:
    return _steady(spec.zone, first, last)


@functools.lru_cache(maxsize=64)
def _steady(zone: tzinfo, first: float, last: float) -> bool:
    """Whether the zone's UTC offset is the same all through (checked every hour)."""
    offsets = {datetime.fromtimestamp(first + hour * 3600.0, tz=zone).utcoffset()
               for hour in range(int((last - first) // 3600) + 2)}
    return len(offsets) == 1


ENDS, TIMEOUTS, ARRIVALS = 0, 1, 2  # what happens first at one moment


class _Night:
    """The event loop: arrivals, ends and give-ups, then every waiting run is looked at
    in line order (as each real run polls) and starts, keeps waiting or gives up."""

    def __init__(self, config: Config, runs: list[PredictedRun],
                 uses: dict[str, dict[str, bool]]) -> None:
        self.config = config
        self.runs = runs
        self.uses = uses
        self.events: list[tuple[float, int, int, PredictedRun]] = []
        self.counter = itertools.count()
        self.waiting: list[PredictedRun] = []
        self.running: list[PredictedRun] = []
        self.live_of: dict[str, list[PredictedRun]] = {}
        self.slot_runs: dict[tuple[str, float], PredictedRun] = {
            (r.job, r.planned): r for r in runs}
        self.by_slot: dict[float, list[PredictedRun]] = {}
        for run in runs:
            self.by_slot.setdefault(run.planned, []).append(run)
        self._conflicts: dict[tuple[str, str], bool] = {}
        self._first: dict[int, list[str]] = {}

    def push(self, when: float, kind: int, run: PredictedRun) -> None:
        heapq.heappush(self.events, (when, kind, next(self.counter), run))

    def play(self) -> None:
        for run in self.runs:
            self.push(run.arrival, ARRIVALS, run)
        while self.events:
            now = self.events[0][0]
            while self.events and self.events[0][0] == now:
                _, kind, _, run = heapq.heappop(self.events)
                self.happen(now, kind, run)
            self.look(now)

    def happen(self, now: float, kind: int, run: PredictedRun) -> None:
        if kind == ENDS:
            self.running.remove(run)
            self.live_of[run.job].remove(run)
        elif kind == TIMEOUTS and run.outcome == "waiting":
            self.give_up(run, now, self._timeout_reason(run))
        elif kind == ARRIVALS:
            if self.live_of.get(run.job):
                run.start, run.outcome = now, "skipped"
                run.skip_reason = "its previous run is still going (the timer's start is dropped)"
                return
            self.live_of.setdefault(run.job, []).append(run)
            self.waiting.append(run)
            self.waiting.sort(key=lambda r: (r.place, r.arrival))
            run._since = now
            self.push(now + self.config.jobs[run.job].busy_timeout, TIMEOUTS, run)

    def look(self, now: float) -> None:
        for run in list(self.waiting):
            blockers, busy = self.blocked(run, now)
            self._account(run, now, blockers, busy)
            if not blockers:
                self.waiting.remove(run)
                run.start, run.outcome = now, "run"
                self.running.append(run)
                self.push(now + run.work, ENDS, run)
            elif busy and self.config.jobs[run.job].on_busy is not BusyPolicy.WAIT:
                policy = self.config.jobs[run.job].on_busy
                self.give_up(run, now, f"on_busy = \"{policy}\" and it is busy with "
                             + ", ".join(dict.fromkeys(b.job for b in blockers)))

    def give_up(self, run: PredictedRun, now: float, reason: str) -> None:
        self._account(run, now, [], False)
        self.waiting.remove(run)
        self.live_of[run.job].remove(run)
        run.start, run.outcome, run.skip_reason = now, "skipped", reason

    def _timeout_reason(self, run: PredictedRun) -> str:
        blocked = run._blocked[0] if run._blocked else []
        names = ", ".join(dict.fromkeys(b.job for b in blocked)) or "its turn"
        limit = self.config.jobs[run.job].busy_timeout
        return f"waited its busy_timeout ({format_duration(limit)}) for {names}"

    def _account(self, run: PredictedRun, now: float, blockers: list[PredictedRun],
                 busy: bool) -> None:
        """Charge the time since the last look to what blocked the run then."""
        if run._blocked is not None:  # charged to the first: a holder, else the next in line
            previous, was_busy = run._blocked
            charged = run.busy_by if was_busy else run.order_by
            charged[previous[0]] = charged.get(previous[0], 0.0) + now - run._since
        for blocker in blockers:
            if blocker.job not in run.waits_for:
                run.waits_for.append(blocker.job)
        run._blocked, run._since = (blockers, busy) if blockers else None, now

    # --- the rules of phobos.core.order and phobos.core.queue ---------------------------

    def blocked(self, run: PredictedRun, now: float) -> tuple[list[PredictedRun], bool]:
        """What keeps ``run`` waiting at ``now`` and whether that is contention."""
        order = self._order_blockers(run, now)
        if order:
            return order, False
        ahead = [r for r in self.running + self.waiting
                 if r is not run and (r.place, r.arrival) < (run.place, run.arrival)
                 and self.conflict(r.job, run.job)
                 and (r.planned == run.planned or not self.after_going(r))]
        if ahead:
            return ahead, True
        holders = [r for r in self.running if self.conflict(r.job, run.job)]
        return holders, bool(holders)

    def after_going(self, run: PredictedRun) -> bool:
        """Whether a predecessor's run ahead of ``run`` is still going: then ``run``
        holds back only the later runs of its own slot (phobos.core.order)."""
        return any(r.place < run.place for pred in self.config.jobs[run.job].after
                   for r in self.live_of.get(pred, []))

    def _order_blockers(self, run: PredictedRun, now: float) -> list[PredictedRun]:
        for pred in self.config.jobs[run.job].after:
            going = [r for r in self.live_of.get(pred, []) if r.place < run.place]
            if going:
                return going[:1]
            same_slot = self.slot_runs.get((pred, run.planned))
            if same_slot is not None and same_slot.arrival > now:
                return [same_slot]
        for other in self._slot_first(run):
            earlier = self.slot_runs[(other, run.planned)]
            if earlier.arrival > now:
                return [earlier]
        return []

    def _slot_first(self, run: PredictedRun) -> list[str]:
        """Jobs ranked before ``run`` in its slot that need a conflicting resource."""
        key = id(run)
        if key not in self._first:
            self._first[key] = [r.job for r in self.by_slot[run.planned]
                                if r.place.rank < run.place.rank
                                and self.conflict(r.job, run.job)]
        return self._first[key]

    def conflict(self, a: str, b: str) -> bool:
        key = (a, b) if a <= b else (b, a)
        if key not in self._conflicts:
            ours, theirs = self.uses[a], self.uses[b]
            self._conflicts[key] = any(ours[r] or theirs[r] for r in ours.keys() & theirs.keys())
        return self._conflicts[key]
