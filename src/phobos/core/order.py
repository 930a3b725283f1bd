"""Who goes first: the place of a run in the line for the locks, and the ``after`` rule.

The rules (docs/schedule.md explains them for admins; :mod:`phobos.schedule.simulate`
predicts with exactly these):

- **Slot.** A run started by its timer or the daemon within ``START_GRACE`` (plus the
  job's ``randomized_delay``) of an elapse *S* of its calendar is *on time* for slot *S*.
- **Order of a slot.** The jobs whose calendars elapse at *S* take their turn in one fixed
  order (:func:`run_order`): a job after its predecessors (``after``), each chain of
  ``after`` kept together, chains and single jobs in the order the config lists them.
- **Place in line.** An on-time run's place is (*S*, its rank in that order); any other
  run's place is (the moment it started, 0). Places decide the lock queue
  (:mod:`phobos.core.queue`): whoever is ahead goes first.
- **Held back.** A run whose predecessor's run ahead of it is still going does not stand
  in the way of runs of other slots (a job of 03:20 may use what the fifth link of a
  03:00 chain will need, while the third link runs); it does hold back the later runs of
  its own slot, so a chain is not split by a job that fired together with it.
- **after.** Before its turn, a run waits, in its ``after`` order, for each predecessor's
  runs ahead of it in line that are still going, and (when on time) for the
  predecessor's run of the same slot, if that job fires at *S* too. A predecessor that
  has not started by ``START_GRACE`` (plus its ``randomized_delay``) after *S* is not
  going to: the run stops waiting for it. It never waits for a run placed behind it, so
  waits cannot go round in a circle.
- **Letting the slot go first.** An on-time run also waits for the jobs ranked before
  it in its slot that need a conflicting resource to take their tickets (they may start
  a moment later than it), at most until the same deadline.

Waiting for the order is not "busy": it happens whatever ``on_busy`` says, within
``busy_timeout`` like any wait.
"""

from __future__ import annotations

import functools
import heapq
import os
import time
from collections.abc import Iterable, Sequence
from enum import Enum

from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.core.history import Run, RunSource
from phobos.core.locks import merge
from phobos.core.model import Outcome, Trigger
from phobos.core.queue import Place, Ticket, Wait
from phobos.oncalendar.elapse import next_usec
from phobos.oncalendar.errors import CalendarError
from phobos.oncalendar.parse import parse_calendar
from phobos.oncalendar.spec import CalendarSpec

START_GRACE = 30.0  # seconds a timer's `phobos run` may take to show up in the line
SCHEDULED = (Trigger.TIMER, Trigger.DAEMON)
USEC = 1_000_000


@functools.lru_cache(maxsize=1024)
def _parsed(schedule: str, tz: str | None) -> CalendarSpec | None:
    try:
        return parse_calendar(schedule)
    except CalendarError:
        return None  # config validation reports it; ordering just ignores it


def calendar_of(job: JobBase) -> CalendarSpec | None:
    """The job's parsed schedule, or None when it runs only when triggered. (Parsed once
    per local zone: ``$TZ`` is part of the cache key.)"""
    return None if job.schedule is None else _parsed(job.schedule, os.environ.get("TZ"))


def elapse_after(spec: CalendarSpec, when: float) -> float | None:
    """The first elapse strictly after ``when`` (epoch seconds), or None."""
    try:
        found = next_usec(spec, round(when * USEC))
    except CalendarError:
        return None
    return None if found is None else found / USEC


def fires_at(job: JobBase, when: float) -> bool:
    """Whether the job's calendar elapses exactly at ``when``."""
    spec = calendar_of(job)
    return spec is not None and elapse_after(spec, when - 1 / USEC) == when


def lateness(job: JobBase) -> float:
    """How long after its slot a run still counts as on time."""
    return START_GRACE + float(job.randomized_delay or 0.0)


def slot_of(job: JobBase, trigger: str, started: float) -> float | None:
    """The calendar slot a run started at ``started`` by ``trigger`` is on time for."""
    spec = calendar_of(job)
    if spec is None or trigger not in SCHEDULED:
        return None
    found, moment = None, started - lateness(job)
    for _ in range(10_000):  # a per-second calendar within the grace stays far below
        nxt = elapse_after(spec, moment)
        if nxt is None or nxt > started:
            break
        found = moment = nxt
    return found


def run_order(config: Config, names: Iterable[str]) -> list[str]:
    """``names`` in the order they take their turn when they fire together.

    A job comes after its predecessors among ``names``; the jobs linked by ``after``
    (a chain) stay together; chains and lone jobs follow the config's order.
    """
    chosen = [n for n in config.jobs if n in set(names)]
    index = {name: i for i, name in enumerate(config.jobs)}
    preds = {n: [p for p in config.jobs[n].after if p in index and p in chosen]
             for n in chosen}
    group = _chains(chosen, preds)
    first: dict[str, int] = {}
    for name in chosen:
        first.setdefault(group[name], index[name])
    waiting = {n: len(p) for n, p in preds.items()}
    followers: dict[str, list[str]] = {n: [] for n in chosen}
    for name, before in preds.items():
        for pred in before:
            followers[pred].append(name)
    ready = [(first[group[n]], index[n], n) for n in chosen if not waiting[n]]
    heapq.heapify(ready)
    order = []
    while ready:
        *_, name = heapq.heappop(ready)
        order.append(name)
        for follower in followers[name]:
            waiting[follower] -= 1
            if not waiting[follower]:
                heapq.heappush(ready, (first[group[follower]], index[follower], follower))
    return order


def _chains(names: Sequence[str], preds: dict[str, list[str]]) -> dict[str, str]:
    """Each name's chain (names linked by ``after``, either way), as one member's name."""
    parent = {n: n for n in names}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for name, before in preds.items():
        for pred in before:
            parent[root(pred)] = root(name)
    return {n: root(n) for n in names}


def slot_order(config: Config, when: float) -> list[str]:
    """The jobs whose calendars elapse at ``when``, in their order."""
    return run_order(config, [n for n, job in config.jobs.items() if fires_at(job, when)])


def place_of(config: Config, name: str, trigger: str, started: float
             ) -> tuple[Place, float | None]:
    """A run's place in line and the slot it is on time for (None: not on time)."""
    slot = slot_of(config.jobs[name], trigger, started)
    if slot is None:
        return Place(started, 0), None
    order = slot_order(config, slot)
    return Place(slot, order.index(name) if name in order else len(order)), slot


def conflicting(config: Config, a: str, b: str) -> list[str]:
    """Resources jobs ``a`` and ``b`` both use, at least one of them writing."""
    ours = writes_of(config, a)
    theirs = writes_of(config, b)
    return sorted(r for r in ours.keys() & theirs.keys() if ours[r] or theirs[r])


def writes_of(config: Config, name: str) -> dict[str, bool]:
    """The job's resources: name -> written (exclusive), one entry per name."""
    return {r.name: r.write for r in merge(config.jobs[name].resources(config))}


class Presence(Enum):
    NOT_YET = "not started"
    STARTING = "starting"
    QUEUED = "in line or running"
    DONE = "done"


class RunOrder:
    """The order rules of one run, asked by :meth:`phobos.core.locks.LockSet.acquire`
    at every poll: ``self(tickets)`` says what the run still waits for, or None."""

    def __init__(self, config: Config, name: str, trigger: str, started: float,
                 history: RunSource) -> None:
        self.config = config
        self.name = name
        self.job = config.jobs[name]
        self.history = history
        self.place, self.slot = place_of(config, name, trigger, started)
        self._settled: set[str] = set()  # jobs of the slot no longer waited for
        self._fires: dict[str, bool] = {}  # job -> fires in this run's slot too
        self._first: list[str] = []
        if self.slot is not None:
            order = slot_order(config, self.slot)
            self._first = [n for n in order[:self.place.rank] if conflicting(config, n, name)]

    def __call__(self, tickets: Sequence[Ticket]) -> Wait | None:
        for pred in self.job.after:
            wait = self._predecessor(pred, tickets)
            if wait is not None:
                return wait
        for other in self._first:
            wait = self._slot_first(other, tickets)
            if wait is not None:
                return wait
        return None

    def held_back(self, ticket: Ticket, tickets: Sequence[Ticket]) -> bool:
        """Whether ``ticket``, ahead of this run in line, is still waiting for one of its
        predecessors and belongs to another slot: then it does not stand in this run's
        way. (A chain's later links keep their place against the runs of their own slot,
        not against a job of another time that arrives while the chain is going.)"""
        if ticket.place.when == self.place.when:
            return False
        job = self.config.jobs.get(ticket.job)
        return job is not None and any(
            other.job in job.after and other.ahead_of(ticket) for other in tickets)

    def _predecessor(self, pred: str, tickets: Sequence[Ticket]) -> Wait | None:
        going = [t for t in tickets if t.job == pred and t.place < self.place]
        if going:
            return Wait(f"waiting for {pred} to finish first ({going[0].describe()})",
                        (pred,), busy=False)
        if self.slot is None or pred in self._settled or not self._fires_too(pred):
            return None
        if self._presence(pred, tickets) is not Presence.DONE:
            return Wait(f"waiting for {pred} to run first (it fires at "
                        f"{_clock(self.slot)} too)", (pred,), busy=False)
        return None

    def _fires_too(self, job: str) -> bool:
        if job not in self._fires:
            self._fires[job] = self.slot is not None and fires_at(self.config.jobs[job],
                                                                  self.slot)
        return self._fires[job]

    def _slot_first(self, other: str, tickets: Sequence[Ticket]) -> Wait | None:
        if other in self._settled:
            return None
        state = self._presence(other, tickets)
        if state is Presence.NOT_YET or state is Presence.STARTING:
            return Wait(f"letting {other} go first (it fires at {_clock(self.slot)} too)",
                        (other,), busy=False)
        return None

    def _presence(self, job: str, tickets: Sequence[Ticket]) -> Presence:
        """Where ``job``'s run of this slot is; settles (stops watching) done or late ones."""
        assert self.slot is not None
        run = self._slot_run(job)
        now = time.time()
        if run is None:
            if now < self.slot + lateness(self.config.jobs[job]):
                return Presence.NOT_YET
            state = Presence.DONE  # its timer did not start it: not going to run
        elif run.outcome is not Outcome.RUNNING:
            state = Presence.DONE
        elif any(t.run_id == run.id and t.job == job for t in tickets):
            return Presence.QUEUED
        elif now - run.started < START_GRACE:
            return Presence.STARTING
        else:
            state = Presence.DONE  # recorded as running, but gone: recover() marks it
        self._settled.add(job)
        return state

    def _slot_run(self, job: str) -> Run | None:
        """The job's run that is on time for this run's slot, if it has started."""
        for run in self.history.runs(job, 5):
            if run.started < self.slot - 1:  # type: ignore[operator]
                break
            if slot_of(self.config.jobs[job], run.trigger, run.started) == self.slot:
                return run
        return None


def _clock(when: float | None) -> str:
    return "?" if when is None else time.strftime("%H:%M:%S", time.localtime(when))
