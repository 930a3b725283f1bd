"""One job run, end to end: the single code path behind every trigger.

``run_job`` records the run in history, takes the job's resource locks in global
order (per its busy policy), runs the kind's ``execute`` with a :class:`RunContext`,
and records the outcome. Signals (SIGTERM from systemd, Ctrl-C, SIGHUP) become
:class:`~phobos.errors.Interrupted`, which stops the current step's process group
and is recorded as an interrupted run. The returned report carries the exit code.

A stop signal is also remembered (:class:`StopRequest`): should anything between the
signal and the runner's handler swallow the exception, the run still stops before its
work starts and before each further step. Ctrl-C at the terminal where the run is the
foreground job is the person's own decision: recorded as interrupted, without an
alarm (no red LED, no failure mail); any other stop signal alerts.

The history is written through :class:`~phobos.core.recorder.RunRecorder`: a damaged
or unwritable database never stops the job; its problem is reported on stderr, to the
notifiers (LED red, mail) and by exit code 5 when the job itself did not fail.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.core import proc
from phobos.core.console import say
from phobos.core.history import DUE, FOR_HOOK
from phobos.core.locks import locked
from phobos.core.model import BusyPolicy, Outcome, Trigger, format_duration
from phobos.core.order import RunOrder
from phobos.core.progress import ProgressListener, RunTracker, state_directory
from phobos.core.recorder import RunRecorder, open_for_run
from phobos.core.step import Step
from phobos.errors import Absent, Busy, ExitCode, Interrupted, PhobosError, StepFailed
from phobos.notify.base import EventKind, Notifier, RunEvent, dispatch

Echo = Callable[[str], None]
LOG_TAIL_LINES = 40


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    run_id: int
    job: str
    outcome: Outcome
    exit_code: ExitCode
    message: str | None
    duration: float
    problem: str | None = None  # the history's problem, if it had one (see core.recorder)


class StopRequest:
    """The stop signal a run received, kept after the exception it raised: checked at
    the points where work would start (:meth:`check`)."""

    def __init__(self) -> None:
        self.received: Interrupted | None = None
        self.settled = False  # the outcome is decided: later signals change nothing
        self.holding = False  # a cleanup runs that a signal must not cut short

    @contextmanager
    def held(self) -> Iterator[None]:
        """Keep a stop signal from interrupting the block (remembered: :meth:`check`
        raises it afterwards). For cleanups that must finish once begun: a drive whose
        copy failed as it was pulled out gets systemd's SIGTERM a moment later, in the
        middle of its unmount."""
        held_before, self.holding = self.holding, True
        try:
            yield
        finally:
            self.holding = held_before

    @property
    def by_user(self) -> bool:
        return self.received is not None and self.received.by_user

    def check(self) -> None:
        """Raise Interrupted again if a stop signal arrived (and was swallowed)."""
        if self.received is not None:
            raise Interrupted(self.received.message, by_user=self.received.by_user)


class RunContext:
    """What a job kind sees while it runs: config, logging, steps, stats, progress.

    ``tool_progress``: plan the programs with their progress output (kinds read it);
    ``listener`` is told about each step's progress (terminal bars; while it shows them,
    the once-a-minute progress line goes to the log only).
    """

    def __init__(self, *, config: Config, name: str, job: JobBase, run_id: int,
                 trigger: Trigger, history: RunRecorder, echo: Echo | None,
                 deadline: float | None, tool_progress: bool = True,
                 listener: ProgressListener | None = None,
                 only_drive: str | None = None,
                 stop: StopRequest | None = None) -> None:
        self.config = config
        self.name = name
        self.job = job
        self.run_id = run_id
        self.trigger = trigger
        self.history = history
        self.stats: dict[str, Any] = {}
        self.drive: str | None = None  # set by drive jobs: the drive now safe to remove
        self.only_drive = only_drive  # a drive job syncs just this one (the one plugged in)
        self.warnings: list[str] = []
        self._echo = echo
        self.tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._deadline = deadline
        self._step_seq = 0
        self._seq_lock = threading.Lock()
        # Every secret the config names (config/secrets.py), not only the step's own:
        # a command printing the Borg passphrase or the SMTP password is redacted too.
        from phobos.config.secrets import redactor

        self.redact = redactor(config)
        self.tool_progress = tool_progress
        self.tracker = RunTracker(state_directory(config.paths.run), run_id=run_id, job=name,
                                  listener=listener,
                                  log=lambda line: self.log(line, echo=listener is None))
        self.stop = stop or StopRequest()
        self.started = time.time()  # as recorded (within a moment) when the run started

    def log(self, line: str, stream: str = "phobos", *, echo: bool = True) -> None:
        """A line into the run's log (redacted) and, if echoing, onto the terminal."""
        line = self.redact(line)
        self.history.log(self.run_id, stream, line)
        self.tail.append(line)
        if self._echo is not None and echo:
            self._echo(f"[{self.name}] {line}")

    def warn_notifier(self, message: str) -> None:
        """A notifier problem: logged, but it never changes the run's outcome."""
        self.log(f"warning: {message}")

    def warn(self, message: str) -> None:
        """Record a warning: the run ends as `warning` unless it fails."""
        self.warnings.append(message)
        self.log(f"warning: {message}")

    def run(self, step: Step) -> proc.Result:
        """Run one step; a failing exit code raises StepFailed naming the step."""
        self.stop.check()
        with self._seq_lock:  # steps may run in parallel threads
            self._step_seq += 1
            seq = self._step_seq
        self.redact.add(*step.secrets, *proc.secret_env_values(step.env))
        shown = [self.redact(a) for a in step.argv]
        self.history.start_step(self.run_id, seq, step.name, shown)
        self.log(f"step {step.name}: {' '.join(shown)}")
        self.tracker.step_started(seq, step.name, step.label)
        try:
            result = proc.run(
                step.argv, env=step.env, secrets=(*self.redact.secrets, *step.secrets),
                ok_codes=step.ok_codes, warn_codes=step.warn_codes,
                timeout=self._step_timeout(step), sink=self._sink_for(step),
                capture=step.capture,
                cwd=step.cwd, stdin_data=step.stdin, check=False,
                on_start=lambda pid: self.history.set_child(self.run_id, pid),
                reader=step.progress() if step.progress is not None else None,
                on_progress=lambda progress: self.tracker.update(seq, progress))
        except BaseException:
            self.history.finish_step(self.run_id, seq, None, Outcome.FAILED)
            raise
        finally:
            self.tracker.step_finished(seq)
        self.history.finish_step(self.run_id, seq, result.returncode, result.outcome)
        if result.outcome is Outcome.FAILED:
            error = proc.failure(result, step.explain, step.diagnose)
            raise StepFailed(f"step {step.name}: {error.message}", error.hint)
        if result.outcome is Outcome.WARNING:
            meaning = step.explain(result.returncode) if step.explain else ""
            self.warn(f"step {step.name}: {proc.describe_exit(result.returncode)}"
                      + (f" ({meaning})" if meaning else ""))
        return result

    def _step_timeout(self, step: Step) -> float | None:
        if self._deadline is None:
            return step.timeout
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise StepFailed(f"the job's timeout passed before step {step.name}",
                             "raise the job's `timeout` if the work really takes this long")
        return left if step.timeout is None else min(left, step.timeout)

    def _sink_for(self, step: Step) -> proc.LineSink:
        """Output lines of ``step``, prefixed with its label when it has one (parallel
        steps, e.g. one pull per host, would be indistinguishable otherwise)."""
        prefix = f"{step.label}: " if step.label else ""
        return lambda stream, line: self.log(prefix + line, stream)


def run_job(config: Config, name: str, trigger: Trigger, echo: Echo | None = None, *,
            tool_progress: bool = True,
            listener: ProgressListener | None = None,
            only_drive: str | None = None) -> RunReport:
    """Run job ``name`` once and record it. Never raises for the job's own failure, nor
    for its bookkeeping's: the report says what happened (only a bad job name raises,
    before recording). ``tool_progress`` and ``listener``: see :class:`RunContext`.
    ``only_drive``: a drive-sync job syncs that drive only (the one just plugged in)."""
    from phobos.jobs import kind_module

    job = config.job(name)
    module = kind_module(job.kind)
    recorder = open_for_run(config.paths.state, config.paths.log)
    try:
        _reconcile(config, recorder)
        # Signals count from here: a SIGTERM while the run is being set up (or while a
        # notifier is told it started) still ends as a recorded interrupted run.
        with signals_interrupt() as stop:
            run_id = recorder.start_run(job=name, kind=str(job.kind), trigger=str(trigger))
            deadline = None if job.timeout is None else time.monotonic() + job.timeout
            ctx = RunContext(config=config, name=name, job=job, run_id=run_id,
                             trigger=trigger, history=recorder, echo=echo, deadline=deadline,
                             tool_progress=tool_progress, listener=listener,
                             only_drive=only_drive, stop=stop)
            report = _run_and_record(ctx, module.execute)
    finally:
        recorder.close()
    return report


def _run_and_record(ctx: RunContext, execute: Callable[[RunContext], None]) -> RunReport:
    started = time.monotonic()
    try:
        outcome, code, message, notifiers = _start_and_execute(ctx, execute)
        ctx.stop.settled = True  # the work is over: a stop signal now changes nothing
    except Interrupted as exc:
        # The first stop signal came in the moment between the job's end and the line
        # above (it alone raises): the run still ends recorded, never left "running".
        ctx.stop.settled = True
        outcome, code, message, notifiers = (Outcome.INTERRUPTED, ExitCode.INTERRUPTED,
                                             exc.message, None)
    duration = time.monotonic() - started
    message = ctx.redact(message) if message else None
    ctx.log(f"{outcome} after {format_duration(duration)}"
            + (f": {message}" if message else ""))
    # Due until told: should this process die before the notifiers are through, the next
    # phobos to start tells instead (phobos.reconcile).
    alert = ctx.history.problem is not None or (
        outcome in (Outcome.FAILED, Outcome.INTERRUPTED) and not ctx.stop.by_user)
    hook = _left_to_the_hook()
    ctx.history.finish_run(ctx.run_id, outcome=outcome, exit_code=int(code), message=message,
                           stats=ctx.stats,
                           alert=None if not alert else FOR_HOOK if hook else DUE)
    ctx.history.settle()
    problem = ctx.history.problem
    if problem is not None and code in (ExitCode.OK, ExitCode.SKIPPED):
        code = ExitCode.UNRECORDED  # the unit must fail visibly: systemd's OnFailure= fires
    trouble = None if problem is None else ctx.redact(str(problem))
    if notifiers is None:  # stopped while building them: the outcome must still be told
        notifiers = _notifiers(ctx)
    dispatch(notifiers, _event(ctx, EventKind.FINISHED, outcome=outcome, message=message,
                               duration=duration, trouble=trouble, by_user=ctx.stop.by_user),
             warn=ctx.warn_notifier)
    if alert and not hook:
        ctx.history.claim_alert(ctx.run_id)
    return RunReport(run_id=ctx.run_id, job=ctx.name, outcome=outcome, exit_code=code,
                     message=message, duration=duration, problem=trouble)


def _left_to_the_hook() -> bool:
    """Failure messages are systemd's OnFailure= hook's: it takes the alert on. Otherwise
    the runner has told (the channels' ledger says which delivered); should it die first,
    the alert stays due for the next phobos that starts (phobos.reconcile)."""
    from phobos.notify.setup import FAILURE_HOOK_ENV

    return bool(os.environ.get(FAILURE_HOOK_ENV))


def _reconcile(config: Config, recorder: RunRecorder) -> None:
    """Clean up after runs whose process died (see :mod:`phobos.reconcile`); its own
    trouble is reported and never stops this run."""
    if recorder.history is None:
        return
    from phobos.reconcile import reconcile

    try:
        reconcile(config, recorder.history, say=_say)
    except (PhobosError, sqlite3.Error, OSError) as exc:
        _say(f"warning: cleaning up after dead runs failed: {exc}")


def _say(line: str) -> None:
    say(f"phobos: {line}")


def _start_and_execute(ctx: RunContext, execute: Callable[[RunContext], None]
                       ) -> tuple[Outcome, ExitCode, str | None, list[Notifier] | None]:
    """Tell the notifiers, then run; an interruption before the job's own handling
    (while notifying) is recorded like any other. Notifiers None: interrupted while
    they were being built."""
    notifiers: list[Notifier] | None = None
    try:
        notifiers = _notifiers(ctx)
        dispatch(notifiers, _event(ctx, EventKind.STARTED), warn=ctx.warn_notifier)
    except Interrupted as exc:
        return Outcome.INTERRUPTED, ExitCode.INTERRUPTED, exc.message, notifiers
    return (*_execute(ctx, execute), notifiers)


def _notifiers(ctx: RunContext) -> list[Notifier]:
    from phobos.notify.setup import build_notifiers

    try:
        return build_notifiers(ctx.config)
    except Interrupted:
        raise
    except PhobosError as exc:  # a broken notifier setup must not stop the backup
        ctx.warn_notifier(f"notifiers unavailable: {exc}")
        return []


def _event(ctx: RunContext, kind: EventKind, **details: Any) -> RunEvent:
    return RunEvent(kind=kind, job=ctx.name, job_kind=str(ctx.job.kind), run_id=ctx.run_id,
                    trigger=str(ctx.trigger), log_tail=tuple(ctx.tail), pid=os.getpid(),
                    drive=ctx.drive, **details)


def _execute(ctx: RunContext,
             execute: Callable[[RunContext], None]) -> tuple[Outcome, ExitCode, str | None]:
    """Locks, then the kind's execute; every way out becomes (outcome, code, message)."""
    job = ctx.job
    try:
        ctx.log(f"run {ctx.run_id} of {job.kind} job {ctx.name} ({ctx.trigger})")
        from phobos.namespace import enter_for_job

        enter_for_job(ctx.config, job.resources(ctx.config), ctx.log)
        with locked(ctx.config.paths.run / "locks", ctx.name, ctx.run_id,
                    job.resources(ctx.config), job.on_busy, job.busy_timeout,
                    on_wait=ctx.log, order=_order(ctx)) as held:
            ctx.history.mark_locked(ctx.run_id)
            if held.held:
                ctx.log("holding " + ", ".join(str(r) for r in held.held))
            ctx.stop.check()  # a stop signal swallowed while waiting ends here, at the latest
            execute(ctx)
    except Busy as exc:
        if job.on_busy is BusyPolicy.FAIL:
            return Outcome.FAILED, ExitCode.FAILED, exc.message
        return Outcome.SKIPPED, ExitCode.SKIPPED, exc.message
    except Absent as exc:  # no drive plugged in, say: nothing to do is not a failure
        return Outcome.SKIPPED, ExitCode.SKIPPED, exc.message
    except Interrupted as exc:
        proc.terminate_all()  # children of worker threads (parallel pulls)
        return Outcome.INTERRUPTED, ExitCode.INTERRUPTED, exc.message
    except StepFailed as exc:  # its hint is always "see phobos log": the mail says so
        return Outcome.FAILED, ExitCode.FAILED, exc.message
    except PhobosError as exc:
        hint = f" (hint: {exc.hint})" if exc.hint else ""
        return Outcome.FAILED, ExitCode.FAILED, exc.message + hint
    except Exception as exc:  # a bug: record it, never leave the run "running"
        for line in traceback.format_exc().splitlines():
            ctx.log(line, "stderr")
        return Outcome.FAILED, ExitCode.INTERNAL, f"internal error: {exc!r}"
    finally:
        ctx.tracker.close()  # the work is over: nothing left to show as running
    if ctx.warnings:
        return Outcome.WARNING, ExitCode.OK, "; ".join(ctx.warnings)
    return Outcome.SUCCESS, ExitCode.OK, None


def _order(ctx: RunContext) -> RunOrder:
    """The run's place in line and its `after` rules (phobos.core.order)."""
    order = RunOrder(ctx.config, ctx.name, str(ctx.trigger), ctx.started, ctx.history)
    if order.slot is not None:
        ctx.log(f"on time for the slot at {time.strftime('%H:%M:%S', time.localtime(order.slot))}"
                f" (place {order.place.rank + 1} of its order)")
    return order


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextmanager
def signals_interrupt() -> Iterator[StopRequest]:
    """Turn the first stop signal into Interrupted (remembered in the StopRequest);
    later ones are ignored so that cleanup (killing the child, releasing locks,
    recording history) completes."""
    stop = StopRequest()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.received is not None or stop.settled:
            return
        if signum == signal.SIGINT and _foreground_at_a_terminal():
            stop.received = Interrupted("stopped by Ctrl-C at the terminal", by_user=True)
        else:
            stop.received = Interrupted(f"stopped by {signal.Signals(signum).name}")
        if not stop.holding:
            raise Interrupted(stop.received.message, by_user=stop.received.by_user)

    previous = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _foreground_at_a_terminal() -> bool:
    """Whether this process is the foreground job of a terminal (where Ctrl-C comes from
    the person running it, not from systemd or another program)."""
    for fd in (0, 1, 2):
        try:
            return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False

