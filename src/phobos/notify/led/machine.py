"""The LED's state machine, pure: the facts the colour is derived from, how each event
changes them, and the one rule, :data:`PRIORITY`, that picks the colour.

Keeping facts rather than a colour is what lets jobs overlap: when a timer job ends while a
manual one still runs, the LED goes back to blue, not off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any, Final

from phobos.core.model import LedState, Outcome, Trigger

# --------------------------------------------------------------------------------------------
# The rule

#: Which colour shows when several conditions hold at once, highest first. This tuple is the
#: only statement of the rule; `decide` just walks it.
#:
#: * RED (a latched failure) beats everything: a failure that later activity could paint over
#:   would go unnoticed, and noticing failures is what the LED is for.
#: * BLUE (an interactive run: started by hand, or by plugging in a drive) beats YELLOW: a human
#:   is waiting for that job, and a timer job running beside it must not make them think theirs
#:   has ended or turned into background work.
#: * YELLOW (a scheduled run) beats GREEN: green must mean "nothing left to wait for".
#: * GREEN (a drive job succeeded and its drive is still in) beats OFF.
PRIORITY: Final = (LedState.RED, LedState.BLUE, LedState.YELLOW, LedState.GREEN, LedState.OFF)

#: The latched failure standing for the history database's trouble (not a job of the config).
HISTORY: Final = "(history database)"

#: Triggers with a human waiting for the result (blue); every other trigger is scheduled (yellow).
INTERACTIVE: Final = frozenset({Trigger.MANUAL, Trigger.DEVICE})

# Warning counts as success and interrupted as failure; skipped leaves no mark at all.
_SUCCESSES: Final = frozenset({Outcome.SUCCESS, Outcome.WARNING})
_FAILURES: Final = frozenset({Outcome.FAILED, Outcome.INTERRUPTED})


# --------------------------------------------------------------------------------------------
# Facts


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveRun:
    """A run that has started and not finished. It ends early if process ``pid`` dies."""

    run_id: str
    job: str
    trigger: Trigger
    pid: int
    # The process's start time (/proc clock ticks) when the run began: a later process that
    # reuses the PID has another start time, so a dead run cannot stay "running" through it.
    pid_start: int | None
    started: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class LatchedFailure:
    """The latest failure of ``job``; it keeps the LED red until acknowledged."""

    job: str
    run_id: str
    outcome: Outcome
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SafeDrive:
    """``drive`` was written successfully by ``run_id`` and may be unplugged."""

    drive: str
    job: str
    run_id: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class LedBook:
    """Everything the colour is derived from; what ``led.json`` holds."""

    active: tuple[ActiveRun, ...] = ()
    failures: tuple[LatchedFailure, ...] = ()  # at most one per job, oldest first
    safe_drive: SafeDrive | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LedSnapshot:
    """The colour, why, and the facts behind it: what ``phobos led show [--json]`` prints."""

    state: LedState
    reason: str
    active: tuple[ActiveRun, ...]
    failures: tuple[LatchedFailure, ...]
    safe_drive: SafeDrive | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; times are ISO 8601 strings in UTC."""
        return {
            "state": str(self.state),
            "reason": self.reason,
            "active": [record_json(run) for run in self.active],
            "failures": [record_json(failure) for failure in self.failures],
            "safe_drive": None if self.safe_drive is None else record_json(self.safe_drive),
        }

def record_json(record: ActiveRun | LatchedFailure | SafeDrive) -> dict[str, Any]:
    """A fact as a JSON-ready dict (times as ISO 8601 strings), as ``led.json`` and
    ``phobos led show --json`` hold it."""
    return {f.name: _plain(getattr(record, f.name)) for f in fields(record)}


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


# --------------------------------------------------------------------------------------------
# Transitions and the decision: pure functions of a LedBook


def started(book: LedBook, run: ActiveRun) -> LedBook:
    # A new job makes "safe to remove" stale: the drive may be about to be used again.
    others = tuple(r for r in book.active if r.run_id != run.run_id)
    return replace(book, active=(*others, run), safe_drive=None)


def history_trouble(book: LedBook, *, run_id: str, trouble: bool, at: datetime) -> LedBook:
    """The run's history could (``trouble``) or could again not be recorded: latch or clear
    :data:`HISTORY`'s failure."""
    others = tuple(f for f in book.failures if f.job != HISTORY)
    if not trouble:
        return replace(book, failures=others)
    failure = LatchedFailure(job=HISTORY, run_id=f"{run_id}:history", outcome=Outcome.FAILED,
                             at=at)
    return replace(book, failures=(*others, failure))


def finished(book: LedBook, *, run_id: str, job: str, outcome: Outcome, drive: str | None,
              at: datetime, clear_on_success: bool) -> LedBook:
    book = replace(book, active=tuple(r for r in book.active if r.run_id != run_id))
    others = tuple(f for f in book.failures if f.job != job)
    if outcome in _FAILURES:
        failure = LatchedFailure(job=job, run_id=run_id, outcome=outcome, at=at)
        return replace(book, failures=(*others, failure))
    if outcome not in _SUCCESSES:
        return book
    if clear_on_success:
        book = replace(book, failures=others)
    if drive is not None:
        book = replace(book, safe_drive=SafeDrive(drive=drive, job=job, run_id=run_id, at=at))
    return book


def ended(book: LedBook, run_id: str) -> LedBook:
    """The run is over and leaves no mark (its person stopped it at the terminal)."""
    return replace(book, active=tuple(r for r in book.active if r.run_id != run_id))


def detached(book: LedBook, drive: str) -> LedBook:
    if book.safe_drive is None or book.safe_drive.drive != drive:
        return book
    return replace(book, safe_drive=None)


def acked(book: LedBook) -> LedBook:
    return replace(book, failures=())


def pruned(book: LedBook, alive: Callable[[ActiveRun], bool]) -> LedBook:
    return replace(book, active=tuple(run for run in book.active if alive(run)))


def decide(book: LedBook) -> tuple[LedState, str]:
    """The colour for ``book`` (dead runs already dropped) and the reason: first of PRIORITY."""
    holds = _conditions(book)
    return next((state, holds[state]) for state in PRIORITY if state in holds)


def _conditions(book: LedBook) -> dict[LedState, str]:
    """Every colour whose condition holds in ``book``, with why. OFF always holds."""
    holds = {LedState.OFF: "idle"}
    if book.failures:
        holds[LedState.RED] = _failure_reason(book.failures)
    interactive = [run for run in book.active if run.trigger in INTERACTIVE]
    scheduled = [run for run in book.active if run.trigger not in INTERACTIVE]
    if interactive:
        holds[LedState.BLUE] = _running_reason(interactive)
    if scheduled:
        holds[LedState.YELLOW] = _running_reason(scheduled)
    if book.safe_drive is not None:
        safe = book.safe_drive
        holds[LedState.GREEN] = f"drive {safe.drive} is safe to remove ({safe.job} succeeded)"
    return holds


def _failure_reason(failures: tuple[LatchedFailure, ...]) -> str:
    latest = max(failures, key=lambda failure: failure.at)
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    when = latest.at.isoformat(timespec="seconds")
    return f"{latest.job} {latest.outcome} at {when}{more}; `phobos led ack` clears it"


def _running_reason(runs: list[ActiveRun]) -> str:
    return ", ".join(f"{run.job} ({run.trigger})" for run in runs) + " running"
