"""Message channels (e-mail, Apprise): which events they want, what the message says, and
the record of failure notifications that went out.

A *channel* sends one rendered :class:`Note`; :class:`MessageNotifier` turns run events into
notes for it, filtered by the channel's configured ``events``. When a channel has told someone
about a failed run, :class:`SentLedger` records it, so that systemd's ``OnFailure=`` hook
(``phobos notify unit-failure``) does not mail the same failure a second time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from phobos.core.files import exclusive_lock, write_atomic
from phobos.core.model import Outcome, format_duration
from phobos.errors import PhobosError
from phobos.notify.base import EventKind, RunEvent
from phobos.notify.errors import NotifyFailed

# --------------------------------------------------------------------------------------------
# Events as the config names them

_FINISHED_NAMES = {
    Outcome.FAILED: "failure",
    # The original setup mails every unit failure, and a stopped job is one.
    Outcome.INTERRUPTED: "failure",
    Outcome.WARNING: "warning",
    Outcome.SUCCESS: "success",
    Outcome.SKIPPED: "skipped",
}


def event_name(event: RunEvent) -> str | None:
    """The config's name for ``event`` (``failure``, ``success``...); None for STARTED."""
    if event.kind is EventKind.OVERDUE:
        return "overdue"
    if event.kind is not EventKind.FINISHED or event.outcome is None:
        return None
    if event.trouble:
        return "failure"  # the job may have worked; its record did not, and that needs a person
    if event.by_user and event.outcome is Outcome.INTERRUPTED:
        return None  # they stopped it themselves: nobody needs telling
    return _FINISHED_NAMES.get(event.outcome)


_VERBS = {
    Outcome.FAILED: "failed",
    Outcome.INTERRUPTED: "was interrupted",
    Outcome.WARNING: "finished with warnings",
    Outcome.SUCCESS: "succeeded",
    Outcome.SKIPPED: "was skipped",
}


# --------------------------------------------------------------------------------------------
# The message


@dataclass(frozen=True, slots=True, kw_only=True)
class Note:
    """One rendered message. ``severity`` is failure, warning, success or info (Apprise's
    notification types); ``headers`` are extra e-mail headers for filtering."""

    subject: str
    body: str
    severity: str
    headers: Mapping[str, str] = field(default_factory=dict)


def log_command(config_source: Path | None, run_id: int) -> str:
    """The command that shows the whole log of ``run_id`` (with ``-c`` for a non-default
    config, so it can be pasted as it is)."""
    from phobos.config.load import DEFAULT_CONFIG

    config = "" if config_source in (None, DEFAULT_CONFIG) else f" -c {config_source}"
    return f"phobos{config} log {run_id}"


def render(event: RunEvent, config_source: Path | None = None, *, test: bool = False) -> Note:
    """Subject ``[phobos@HOST] nightly failed``; body: summary, log tail, how to see the log.

    Every text in ``event`` is already redacted, so the note may go anywhere.
    """
    what = _what(event)
    prefix = f"[phobos@{event.host}]" + (" test:" if test else "")
    lines = _summary(event)
    if event.log_tail:
        lines += ["", "Last lines of the log:", *(f"  {line}" for line in event.log_tail)]
    if event.recorded:
        assert event.run_id is not None
        lines += ["", f"The whole log: {log_command(config_source, event.run_id)}"]
    if test:
        lines = ["This is a test sent by `phobos notify test`; nothing really ran.", "", *lines]
    headers = {"X-Phobos-Job": event.job, "X-Phobos-Event": event_name(event) or "started"}
    if event.run_id is not None:
        headers["X-Phobos-Run"] = str(event.run_id)
    return Note(subject=f"{prefix} {event.job} {what}", body="\n".join(lines) + "\n",
                severity=_severity(event), headers=headers)


def _what(event: RunEvent) -> str:
    if event.kind is EventKind.OVERDUE:
        return "is overdue"
    if event.kind is EventKind.STARTED or event.outcome is None:
        return "started"
    verb = _VERBS.get(event.outcome, str(event.outcome))
    return f"{verb}; its history needs attention" if event.trouble else verb


def _severity(event: RunEvent) -> str:
    name = event_name(event)
    return {"failure": "failure", "overdue": "failure", "warning": "warning",
            "success": "success"}.get(name or "", "info")


def _summary(event: RunEvent) -> list[str]:
    rows = [("Job", f"{event.job} ({event.job_kind})"), ("Host", event.host),
            ("Trigger", event.trigger),
            ("Outcome", str(event.outcome) if event.outcome else event_name(event) or "started")]
    if event.message:
        rows.append(("Message", event.message))
    if event.trouble:
        rows.append(("Problem", event.trouble))
    if event.duration is not None:
        rows.append(("Duration", format_duration(event.duration)))
    if event.run_id is not None:
        rows.append(("Run", str(event.run_id) if event.recorded
                     else "not in the history database (see phobos's log file)"))
    if event.drive:
        rows.append(("Drive", event.drive))
    return [f"{key + ':':<10} {value}" for key, value in rows]


# --------------------------------------------------------------------------------------------
# Channels and the notifier that feeds them


class Channel(Protocol):
    """Sends notes somewhere. ``send`` raises NotifyFailed (or any error) when it cannot and
    returns a short description of what it did (``sent to root via 127.0.0.1:25``)."""

    @property
    def name(self) -> str: ...

    @property
    def events(self) -> tuple[str, ...]: ...

    def send(self, note: Note) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageNotifier:
    """A Notifier that renders the events a channel wants and records sent failures."""

    channel: Channel
    ledger: SentLedger
    config_source: Path | None = None
    # Under a systemd unit with an OnFailure= hook, failure messages are the hook's job:
    # it sends one message with the unit's status, and the unit may have no network.
    defer_failures: bool = False

    @property
    def name(self) -> str:
        return self.channel.name

    def notify(self, event: RunEvent) -> None:
        """Send ``event`` if the channel's ``events`` name it; errors propagate (the runner
        turns them into warnings)."""
        name = event_name(event)
        if name is None or name not in self.channel.events:
            return
        if name == "failure" and self.defer_failures:
            return
        self.channel.send(render(event, self.config_source))
        if name != "failure" or event.run_id is None or not event.recorded:
            return
        try:
            self.ledger.record(event.job, event.run_id, self.channel.name)
        except OSError as exc:
            raise NotifyFailed(f"sent, but could not record that in {self.ledger.path}: "
                               f"{exc.strerror or exc}; `phobos notify unit-failure` may "
                               "send this failure again") from exc


# --------------------------------------------------------------------------------------------
# Which failures were already notified


@dataclass(frozen=True, slots=True)
class SentLedger:
    """``<state_dir>/notified.json``: per job, the latest failed run whose failure a channel
    delivered, and which channels delivered it. Written under a ``flock``, replaced whole."""

    state_dir: Path

    @property
    def path(self) -> Path:
        return self.state_dir / "notified.json"

    def record(self, job: str, run_id: int, channel: str) -> None:
        """``channel`` delivered the failure of run ``run_id`` of ``job``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(self.state_dir / "notified.lock"):
            jobs = self._load()
            entry = jobs.get(job, {})
            channels = set(entry.get("channels", ())) if entry.get("run_id") == run_id else set()
            jobs[job] = {"run_id": run_id, "channels": sorted(channels | {channel}),
                         "at": datetime.now(UTC).isoformat(timespec="seconds")}
            write_atomic(self.path, json.dumps({"version": 1, "jobs": jobs}, indent=2) + "\n")

    def channels(self, job: str, run_id: int) -> frozenset[str]:
        """The channels that delivered the failure of run ``run_id`` of ``job``."""
        entry = self._load().get(job, {})
        if entry.get("run_id") != run_id:
            return frozenset()
        return frozenset(str(name) for name in entry.get("channels", ()))

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable: forgetting means at worst one mail too many, never one less
        jobs = doc.get("jobs") if isinstance(doc, dict) else None
        return {k: v for k, v in jobs.items() if isinstance(v, dict)} if isinstance(
            jobs, dict) else {}


# --------------------------------------------------------------------------------------------
# Trying channels by hand: `phobos notify test` and `phobos notify unit-failure`


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """What one channel did with one note: ``status`` is sent, skipped or failed."""

    channel: str
    status: str
    detail: str
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"channel": self.channel, "status": self.status, "detail": self.detail,
                "hint": self.hint}


def attempt(channel: str, send: Callable[[], str]) -> Delivery:
    """Run ``send``; any error becomes a failed Delivery (as in the runner: never a crash)."""
    try:
        return Delivery(channel=channel, status="sent", detail=send())
    except PhobosError as exc:
        return Delivery(channel=channel, status="failed", detail=exc.message, hint=exc.hint)
    except Exception as exc:  # a library's own error must be reported, not raised
        return Delivery(channel=channel, status="failed", detail=f"{type(exc).__name__}: {exc}")


TEST_JOB = "test-job"


def sample_event(name: str) -> RunEvent:
    """A made-up event of kind ``name`` (failure, warning, success, skipped, overdue)."""
    if name == "overdue":
        return RunEvent(kind=EventKind.OVERDUE, job=TEST_JOB, job_kind="command", run_id=None,
                        trigger="overdue", message=f"{TEST_JOB} should have run and has not "
                        "succeeded since (a test)")
    outcome = {value: key for key, value in _FINISHED_NAMES.items()
               if key is not Outcome.INTERRUPTED}[name]
    return RunEvent(kind=EventKind.FINISHED, job=TEST_JOB, job_kind="command", run_id=None,
                    trigger="manual", outcome=outcome, duration=1.0,
                    message=f"this is what a {name} notification looks like",
                    log_tail=("step command: /usr/local/bin/example", "the job's last lines"))
