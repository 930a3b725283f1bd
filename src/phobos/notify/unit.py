"""systemd's ``OnFailure=`` hook: ``phobos notify unit-failure UNIT``.

The original setup's ``status-email-user@.service`` mails ``systemctl status --full UNIT``
and turns the LED red. phobos does the same for any unit — with one exception: when the unit
is a phobos job unit (``phobos-job-NAME.service``) whose latest run failed and whose failure
a channel already delivered (the :class:`~phobos.notify.channel.SentLedger` says so), that
channel is not used a second time. A run that died without notifying (SIGKILL, power loss)
is cleaned up after and told about by :mod:`phobos.reconcile`, here or by whichever phobos
started first: once, so this hook then sends nothing more for it. When the history cannot
be read, the message says so and still goes out.
"""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import sqlite3
from dataclasses import dataclass

from phobos.config.model import Config
from phobos.config.secrets import redactor
from phobos.core import proc
from phobos.core.history import DISAPPEARED, DUE, FOR_HOOK, TAKEN, History, Run
from phobos.core.model import LedState, Outcome
from phobos.errors import HistoryUnavailable, PhobosError, ToolMissing
from phobos.notify.channel import Delivery, Note, SentLedger, attempt, log_command

JOB_UNIT = re.compile(r"^phobos-job-(?P<job>.+)\.service$")
_FAILED = (Outcome.FAILED, Outcome.INTERRUPTED)
LOG_TAIL_LINES = 40


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitFailure:
    """What is known about a failed unit. ``job``/``run`` only for phobos job units;
    ``notified``: channels that already delivered ``run``'s failure."""

    unit: str
    job: str | None
    run: Run | None
    log_tail: tuple[str, ...]
    status: str
    notified: frozenset[str]
    told: bool = False  # someone else (the cleanup after its dead process) told everyone
    cleaned: tuple[str, ...] = ()  # what this hook cleaned up after its dead process


def job_of_unit(unit: str, config: Config) -> str | None:
    """The job a ``phobos-job-NAME.service`` unit runs, if NAME is a configured job."""
    match = JOB_UNIT.match(unit)
    if match is None or match["job"] not in config.jobs:
        return None
    return match["job"]


def inspect(config: Config, unit: str) -> UnitFailure:
    """Gather the unit's status and, for a job unit, its latest run and whether its
    failure was already notified."""
    job = job_of_unit(unit, config)
    latest = _latest_run(config, job) if job is not None else _Latest()
    notified: frozenset[str] = frozenset()
    if job is not None and latest.run is not None and latest.run.outcome in _FAILED:
        notified = SentLedger(config.paths.state).channels(job, latest.run.id)
    return UnitFailure(unit=unit, job=job, run=latest.run, log_tail=latest.tail,
                       status=systemctl_status(unit), notified=notified, told=latest.told,
                       cleaned=latest.cleaned)


@dataclass(frozen=True, slots=True)
class _Latest:
    run: Run | None = None
    tail: tuple[str, ...] = ()
    told: bool = False  # someone else took on telling about it
    cleaned: tuple[str, ...] = ()  # what was cleaned up after its dead process


def _latest_run(config: Config, job: str) -> _Latest:
    """The job's latest run and its log tail. If it is due for an alert (it failed, its
    process died), this hook takes that on and cleans up after it; other dead runs are
    left to :func:`phobos.reconcile.reconcile`, called here too."""
    from phobos.reconcile import cleanup, reconcile

    try:
        history = History.open(config.paths.state)
    except HistoryUnavailable as exc:
        return _Latest(tail=(f"history unavailable: {exc.message}",))
    try:
        with contextlib.suppress(sqlite3.Error):
            history.recover()  # a run whose phobos was killed with the unit: interrupted
        runs = history.runs(job, 1)
        latest = _Latest()
        if runs:
            run = runs[0]
            lines = [line.line for line in history.log_lines(run.id)]
            mine = _claimed(history, run.id)
            cleaned = tuple(cleanup(config, run)) if mine and run.message == DISAPPEARED \
                else ()
            latest = _Latest(run=run, tail=tuple(lines[-LOG_TAIL_LINES:]),
                             told=not mine and history.alert_of(run.id) == TAKEN,
                             cleaned=cleaned)
        with contextlib.suppress(PhobosError, sqlite3.Error, OSError):
            reconcile(config, history, say=lambda _line: None)
        return latest
    finally:
        history.close()


def _claimed(history: History, run_id: int) -> bool:
    try:
        return history.alert_of(run_id) in (DUE, FOR_HOOK) and history.claim_alert(run_id)
    except sqlite3.Error:  # a read-only history: tell, as before there were alerts
        return False


def systemctl_status(unit: str) -> str:
    """``systemctl status --full UNIT`` (stdout, then stderr), or why there is none."""
    argv = ["systemctl", "status", "--full", "--no-pager", "--lines=30", "--", unit]
    try:
        # Exit codes 1-4 describe the unit (failed, inactive...), not a failure to report it.
        result = proc.run(argv, capture=True, check=False, timeout=30.0)
    except ToolMissing:
        return "systemctl is not available on this host: no unit status to show."
    except PhobosError as exc:
        return f"systemctl status did not work: {exc.message}"
    errors = [line.removeprefix("stderr: ") for line in result.tail
              if line.startswith("stderr: ")]
    text = "\n".join(part for part in (result.stdout.rstrip(), *errors) if part)
    return text or f"systemctl status printed nothing ({proc.describe_exit(result.returncode)})"


def unit_note(failure: UnitFailure, config: Config) -> Note:
    """The failure message: subject ``[phobos@HOST] unit UNIT failed``; the run (for a job
    unit) and the unit's status in the body."""
    host = socket.gethostname()
    lines = [f"The systemd unit {failure.unit} failed on {host}.", ""]
    lines += _run_lines(failure, config)
    lines += [f"systemctl status --full {failure.unit}:", "",
              *(f"  {line}" for line in failure.status.splitlines())]
    headers = {"X-Phobos-Unit": failure.unit, "X-Phobos-Event": "failure"}
    if failure.job is not None:
        headers["X-Phobos-Job"] = failure.job
    # The unit's journal lines are not phobos's own: redact every secret the config knows.
    redact = redactor(config)
    return Note(subject=f"[phobos@{host}] unit {failure.unit} failed",
                body=redact("\n".join(lines) + "\n"), severity="failure", headers=headers)


def _run_lines(failure: UnitFailure, config: Config) -> list[str]:
    if failure.job is None:
        return []
    run = failure.run
    if run is None:
        return [f"It runs the phobos job {failure.job}, which has no recorded run.",
                *failure.log_tail, ""]
    said = f": {run.message}" if run.message else ""
    lines = [f"It runs the phobos job {failure.job}; its latest run {run.id} "
             f"({run.trigger}) ended {run.outcome}{said}", ""]
    if failure.cleaned:
        lines += ["Cleaned up after it: " + "; ".join(failure.cleaned), ""]
    if failure.log_tail:
        lines += ["Last lines of its log:", *(f"  {line}" for line in failure.log_tail), ""]
    lines += [f"The whole log: {log_command(config.source, run.id)}", ""]
    return lines


def latch_led(config: Config, failure: UnitFailure) -> LedState:
    """Latch red for the unit's job (or the unit): ``phobos led ack`` clears it."""
    from phobos.notify.setup import led_tracker

    run = failure.run
    outcome = run.outcome if run is not None and run.outcome in _FAILED else Outcome.FAILED
    run_id = str(run.id) if run is not None else f"unit:{failure.unit}"
    return led_tracker(config).job_finished(run_id, failure.job or failure.unit, str(outcome))


def deliver(config: Config, failure: UnitFailure) -> list[Delivery]:
    """Latch the LED and send the note through every message channel that takes failures
    and has not already delivered this run's failure."""
    from phobos.notify.setup import message_channels

    results = [attempt("led", lambda: f"now {latch_led(config, failure)}")]
    note = unit_note(failure, config)
    for name, channel in message_channels(config).items():
        if isinstance(channel, PhobosError):
            results.append(Delivery(channel=name, status="failed", detail=channel.message,
                                    hint=channel.hint))
        elif "failure" not in channel.events:
            results.append(Delivery(channel=name, status="skipped",
                                    detail="`failure` is not among its events"))
        elif failure.told and failure.run is not None:
            results.append(Delivery(channel=name, status="skipped",
                                    detail=f"run {failure.run.id}'s process died; the cleanup "
                                    "after it already told about it"))
        elif name in failure.notified and failure.run is not None:
            results.append(Delivery(channel=name, status="skipped",
                                    detail=f"the runner already sent the failure of run "
                                    f"{failure.run.id}"))
        else:
            results.append(attempt(name, functools.partial(channel.send, note)))
    return results
