"""An operation a person starts outside any job (a restore), recorded in history like a
job's run: ``phobos history`` lists it, ``phobos log RUN`` shows what it did.

Such a run has its own job name (``restore:main``: the ``:`` keeps it apart from every
configured job, whose names cannot hold one) and kind. Its outcome follows how the
operation ended: success, failed (a PhobosError, with its message), interrupted
(Ctrl-C, SIGTERM, SIGHUP). The process running it is the phobos process, so a killed
operation is marked interrupted by the next phobos, as a killed job is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from phobos.config.model import Config
from phobos.core.history import History
from phobos.core.model import Outcome, Trigger
from phobos.core.proc import Redactor
from phobos.core.runner import signals_interrupt
from phobos.errors import ExitCode, Interrupted, PhobosError, StepFailed

Echo = Callable[[str], None]


class Operation:
    """The record of one operation: its run id, log and stats."""

    def __init__(self, history: History, run_id: int, echo: Echo | None) -> None:
        self.history = history
        self.run_id = run_id
        self.stats: dict[str, Any] = {}
        self.redact = Redactor()
        self._echo = echo

    def log(self, line: str) -> None:
        """A line into the run's log and, if echoing, onto the terminal."""
        line = self.redact(line)
        self.history.log(self.run_id, "phobos", line)
        if self._echo is not None:
            self._echo(line)

    def record(self, line: str) -> None:
        """A line for the run's log only (what the command prints itself anyway)."""
        self.history.log(self.run_id, "phobos", self.redact(line))

    def note(self, line: str) -> None:
        """A line for the terminal only (progress that would flood the log)."""
        if self._echo is not None:
            self._echo(self.redact(line))


@contextlib.contextmanager
def recorded(config: Config, job: str, kind: str, echo: Echo | None) -> Iterator[Operation]:
    """Record the operation run inside the ``with`` block as a run of ``job`` (of
    ``kind``). A stop signal (Ctrl-C, SIGTERM, SIGHUP) inside it raises Interrupted, as
    in a job's run; the run is recorded, the exception passed on."""
    history = History.open(config.paths.state)
    try:
        history.recover()
        run_id = history.start_run(job=job, kind=kind, trigger=str(Trigger.MANUAL))
        operation = Operation(history, run_id, echo)
        outcome, code, message = Outcome.FAILED, ExitCode.INTERNAL, "internal error"
        try:
            with signals_interrupt():
                yield operation
            outcome, code, message = Outcome.SUCCESS, ExitCode.OK, ""
        except (Interrupted, KeyboardInterrupt) as exc:
            outcome, code = Outcome.INTERRUPTED, ExitCode.INTERRUPTED
            message = str(exc) or "interrupted"
            raise
        except StepFailed as exc:  # its hint points at the log: name this run's
            outcome, code, message = Outcome.FAILED, exc.exit_code, exc.message
            raise StepFailed(exc.message, f"the whole output: phobos log {run_id}") from None
        except PhobosError as exc:
            outcome, code, message = Outcome.FAILED, exc.exit_code, exc.message
            raise
        finally:
            operation.record(f"{outcome}" + (f": {message}" if message else ""))
            history.finish_run(run_id, outcome=outcome, exit_code=int(code),
                               message=operation.redact(message) or None,
                               stats=operation.stats)
    finally:
        history.close()

