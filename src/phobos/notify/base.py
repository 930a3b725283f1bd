"""The notifier interface: the runner reports run events; notifiers show or send them.

A notifier that fails (SMTP down, LED unplugged) is reported as a warning through the
``warn`` callback and never changes the job's own outcome or exit code.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from phobos.core.model import Outcome
from phobos.errors import Interrupted


class EventKind(StrEnum):
    STARTED = "started"
    FINISHED = "finished"
    OVERDUE = "overdue"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEvent:
    """One thing that happened to a job. ``outcome`` is None for STARTED.

    Every text in it is already redacted: notifiers may send it anywhere.
    """

    kind: EventKind
    job: str
    job_kind: str
    run_id: int | None
    trigger: str
    outcome: Outcome | None = None
    message: str | None = None
    duration: float | None = None
    log_tail: tuple[str, ...] = ()
    drive: str | None = None
    pid: int | None = None
    hostname: str = ""
    # The run's bookkeeping failed (history damaged or unwritable): always worth a
    # failure message and a red LED, whatever the job's own outcome.
    trouble: str | None = None
    # Stopped by the person at its terminal (Ctrl-C): recorded, but no alarm.
    by_user: bool = False

    @property
    def recorded(self) -> bool:
        """Whether the run is in the history database (runs logged to the fallback log
        while it was unavailable have negative ids)."""
        return self.run_id is not None and self.run_id > 0

    @property
    def host(self) -> str:
        return self.hostname or socket.gethostname()


class Notifier(Protocol):
    """Something that reacts to run events: LED, e-mail, Apprise, pings."""

    @property
    def name(self) -> str: ...

    def notify(self, event: RunEvent) -> None: ...


def dispatch(notifiers: Sequence[Notifier], event: RunEvent,
             warn: Callable[[str], None]) -> None:
    """Send ``event`` to every notifier; a failing one becomes a warning, nothing more."""
    for notifier in notifiers:
        try:
            notifier.notify(event)
        except Interrupted:
            raise  # a stop signal is not the notifier's failure: the run must stop
        except Exception as exc:  # any failure of a notifier must stay a warning
            warn(f"notifier {notifier.name} failed: {exc}")
