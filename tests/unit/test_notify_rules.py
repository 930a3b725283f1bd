"""Notification logic without servers: event names, the rendered message, ping URLs, the LED
command's argv, e-mail settings that cannot work, the sent-failure ledger, and how the
notifiers are built from the config."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from configs import config_from

from phobos.config.load import DEFAULT_CONFIG
from phobos.config.model import Config
from phobos.config.show import to_plain
from phobos.config.tables import EmailConfig
from phobos.core.model import LedState, Outcome
from phobos.errors import ConfigError
from phobos.notify import ping as ping_module
from phobos.notify.base import EventKind, RunEvent
from phobos.notify.channel import (
    MessageNotifier,
    Note,
    SentLedger,
    event_name,
    log_command,
    render,
    sample_event,
)
from phobos.notify.email import EmailChannel, build_message, config_problems, smtp_password
from phobos.notify.errors import NotifyFailed
from phobos.notify.led.drivers import expand
from phobos.notify.ping import PingNotifier, ping_url, run_rid, shown_url
from phobos.notify.setup import BrokenNotifier, LedNotifier, build_notifiers
from phobos.notify.unit import job_of_unit

SECRET_URL = "https://hc-ping.com/0f4c2a1e-secret"


def finished(outcome: Outcome | None, **extra: Any) -> RunEvent:
    details: dict[str, Any] = {"kind": EventKind.FINISHED, "job": "nightly",
                               "job_kind": "archive", "run_id": 42, "trigger": "timer",
                               "outcome": outcome, "hostname": "nas"}
    return RunEvent(**{**details, **extra})


def config(notify: dict[str, Any], tmp_path: Path, jobs: tuple[str, ...] = ("nightly",)
           ) -> Config:
    raw = {"notify": notify,
           "jobs": {name: {"kind": "command", "argv": ["true"]} for name in jobs}}
    return config_from(raw, root=tmp_path)


# --- events and messages ---------------------------------------------------------------------


@pytest.mark.parametrize(("event", "name"), [
    (finished(Outcome.FAILED), "failure"),
    (finished(Outcome.INTERRUPTED), "failure"),
    (finished(Outcome.WARNING), "warning"),
    (finished(Outcome.SUCCESS), "success"),
    (finished(Outcome.SKIPPED), "skipped"),
    (finished(None, kind=EventKind.OVERDUE), "overdue"),
    (finished(None, kind=EventKind.STARTED), None),
])
def test_event_names(event: RunEvent, name: str | None) -> None:
    assert event_name(event) == name


@pytest.mark.parametrize(("outcome", "subject", "severity"), [
    (Outcome.FAILED, "[phobos@nas] nightly failed", "failure"),
    (Outcome.INTERRUPTED, "[phobos@nas] nightly was interrupted", "failure"),
    (Outcome.WARNING, "[phobos@nas] nightly finished with warnings", "warning"),
    (Outcome.SUCCESS, "[phobos@nas] nightly succeeded", "success"),
    (Outcome.SKIPPED, "[phobos@nas] nightly was skipped", "info"),
])
def test_subject_names_host_job_and_outcome(outcome: Outcome, subject: str,
                                            severity: str) -> None:
    note = render(finished(outcome))
    assert (note.subject, note.severity) == (subject, severity)


def test_body_has_summary_log_tail_and_log_command() -> None:
    event = finished(Outcome.FAILED, message="step create: borg failed with exit code 2",
                     duration=754.0, log_tail=("line one", "line two"), drive="ext-a")
    body = render(event, Path("/srv/phobos.toml")).body
    assert body == (
        "Job:       nightly (archive)\n"
        "Host:      nas\n"
        "Trigger:   timer\n"
        "Outcome:   failed\n"
        "Message:   step create: borg failed with exit code 2\n"
        "Duration:  12m34s\n"
        "Run:       42\n"
        "Drive:     ext-a\n"
        "\n"
        "Last lines of the log:\n"
        "  line one\n"
        "  line two\n"
        "\n"
        "The whole log: phobos -c /srv/phobos.toml log 42\n")


def test_log_command_leaves_out_the_default_config() -> None:
    assert log_command(DEFAULT_CONFIG, 7) == "phobos log 7"
    assert log_command(None, 7) == "phobos log 7"


def test_overdue_and_test_notes() -> None:
    overdue = render(RunEvent(kind=EventKind.OVERDUE, job="check", job_kind="check",
                              run_id=None, trigger="overdue", message="missed Sunday",
                              hostname="nas"))
    assert overdue.subject == "[phobos@nas] check is overdue"
    assert "The whole log" not in overdue.body and "Message:   missed Sunday" in overdue.body
    test = render(sample_event("warning"), test=True)
    assert test.subject == f"[phobos@{socket.gethostname()}] test: test-job finished with " \
                           "warnings"
    assert test.body.startswith("This is a test sent by `phobos notify test`")


# --- message notifier and the ledger ---------------------------------------------------------


@dataclass
class RecordingChannel:
    events: tuple[str, ...]
    name: str = "email"
    sent: list[Note] = field(default_factory=list)

    def send(self, note: Note) -> str:
        self.sent.append(note)
        return "sent"


def test_message_notifier_filters_events_and_records_failures(tmp_path: Path) -> None:
    channel = RecordingChannel(events=("failure", "success"))
    ledger = SentLedger(tmp_path)
    notifier = MessageNotifier(channel=channel, ledger=ledger)
    for outcome in (Outcome.WARNING, Outcome.SUCCESS, Outcome.FAILED):
        notifier.notify(finished(outcome, run_id=int(outcome is Outcome.FAILED) + 10))
    notifier.notify(finished(None, kind=EventKind.STARTED))
    assert [n.subject for n in channel.sent] == ["[phobos@nas] nightly succeeded",
                                                 "[phobos@nas] nightly failed"]
    assert ledger.channels("nightly", 11) == {"email"}
    assert ledger.channels("nightly", 10) == frozenset()


def test_ledger_keeps_the_latest_failed_run_per_job(tmp_path: Path) -> None:
    ledger = SentLedger(tmp_path)
    ledger.record("nightly", 5, "email")
    ledger.record("nightly", 5, "apprise")
    ledger.record("check", 6, "email")
    assert ledger.channels("nightly", 5) == {"email", "apprise"}
    ledger.record("nightly", 9, "apprise")
    assert ledger.channels("nightly", 5) == frozenset()
    assert ledger.channels("nightly", 9) == {"apprise"}
    assert ledger.channels("check", 6) == {"email"}
    ledger.path.write_text("{not json")
    assert ledger.channels("check", 6) == frozenset()  # forgetting risks a mail too many only


# --- pings -----------------------------------------------------------------------------------


def test_ping_urls() -> None:
    assert ping_url("https://hc-ping.com/uuid", "start", "r1") == \
        "https://hc-ping.com/uuid/start?rid=r1"
    assert ping_url("https://hc-ping.com/uuid/", "", "r1") == "https://hc-ping.com/uuid?rid=r1"
    assert ping_url("http://h/k/job?create=1", "fail", "r") == "http://h/k/job/fail?create=1&rid=r"
    assert ping_url("http://h/k", "log") == "http://h/k/log"
    assert shown_url(SECRET_URL, "fail") == "https://hc-ping.com/…/fail"
    assert shown_url("http://user:pw@127.0.0.1:8080/x", "") == "http://127.0.0.1:8080/…"


def test_check_url_per_job_wins_over_base(tmp_path: Path) -> None:
    cfg = config({"ping": {"url": "https://hc-ping.com/KEY/",
                           "jobs": {"nightly": SECRET_URL}}}, tmp_path, ("nightly", "pull.luv"))
    assert cfg.notify.ping is not None
    notifier = PingNotifier.from_config(cfg.notify.ping)
    assert notifier.check_url("nightly") == SECRET_URL
    assert notifier.check_url("pull.luv") == "https://hc-ping.com/KEY/pull.luv"
    only_jobs = PingNotifier.from_config(config({"ping": {"jobs": {"nightly": SECRET_URL}}},
                                                tmp_path).notify.ping)  # type: ignore[arg-type]
    assert only_jobs.check_url("other") is None


@pytest.mark.parametrize(("event", "signal", "with_body"), [
    (finished(None, kind=EventKind.STARTED), "start", False),
    (finished(Outcome.SUCCESS), "", True),
    (finished(Outcome.WARNING), "", True),
    (finished(Outcome.FAILED), "fail", True),
    (finished(Outcome.INTERRUPTED), "fail", True),
    (finished(Outcome.SKIPPED), "log", True),
])
def test_ping_signal_per_event(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, event: RunEvent,
                               signal: str, with_body: bool) -> None:
    calls: list[tuple[str, str, bytes | None, str | None]] = []
    monkeypatch.setattr(ping_module, "ping", lambda base, sig, body, timeout, *, rid=None:
                        calls.append((base, sig, body, rid)))
    cfg = config({"ping": {"url": "http://127.0.0.1:9/KEY"}}, tmp_path)
    PingNotifier.from_config(cfg.notify.ping).notify(event)  # type: ignore[arg-type]
    [(base, got, body, rid)] = calls
    assert (base, got, body is not None, rid) == ("http://127.0.0.1:9/KEY/nightly", signal,
                                                  with_body, run_rid(event))


def test_ping_ignores_overdue_and_needs_a_url(tmp_path: Path) -> None:
    cfg = config({"ping": {"url": "http://127.0.0.1:9/KEY"}}, tmp_path)
    overdue = finished(None, kind=EventKind.OVERDUE, run_id=None)
    PingNotifier.from_config(cfg.notify.ping).notify(overdue)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="set `url`"):
        PingNotifier.from_config(config({"ping": {}}, tmp_path).notify.ping)  # type: ignore


# --- LED command driver -----------------------------------------------------------------------


@pytest.mark.parametrize(("state", "colour", "hex_value"), [
    (LedState.RED, "red", "ff0000"), (LedState.YELLOW, "yellow", "ffff00"),
    (LedState.OFF, "off", "000000"), (LedState.BLUE, "blue", "0000ff")])
def test_command_argv(state: LedState, colour: str, hex_value: str) -> None:
    template = ("blinkstick", "--index", "1", "--set-color", "{color}", "--rgb=#{hex}")
    assert expand(template, state) == ["blinkstick", "--index", "1", "--set-color", colour,
                                       f"--rgb=#{hex_value}"]


# --- e-mail ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("settings", "problem"), [
    ({"username": "u"}, "username is set: add password_file or password_command"),
    ({"password_file": Path("/p")}, "a password is set without a username"),
    ({"username": "u", "password_file": Path("/p"), "security": "starttls",
      "password_command": "cat /p"}, "set password_file or password_command, not both"),
    ({"username": "u", "password_file": Path("/p")}, "refusing to send the SMTP password "
     "unencrypted"),
    ({"username": "u", "password_command": "  ", "security": "tls"},
     "password_command is empty"),
])
def test_email_settings_that_cannot_work(settings: dict[str, Any], problem: str) -> None:
    problems = config_problems(EmailConfig(**settings))
    assert any(p.startswith(problem) for p in problems), problems
    with pytest.raises(ConfigError, match=r"notify\.email: "):
        EmailChannel.from_config(EmailConfig(**settings))


def test_email_settings_that_work() -> None:
    assert config_problems(EmailConfig()) == []
    assert config_problems(EmailConfig(username="u", password_file=Path("/p"),
                                       security="starttls")) == []
    # sendmail ignores the SMTP settings altogether
    assert config_problems(EmailConfig(transport="sendmail", username="u")) == []


def test_message_headers() -> None:
    note = render(finished(Outcome.FAILED))
    message = build_message(EmailConfig(to=("a@x", "b@y")), note)
    assert message["To"] == "a@x, b@y"
    assert message["From"] == f"phobos@{socket.gethostname()}"
    assert message["Subject"] == "[phobos@nas] nightly failed"
    assert message["Auto-Submitted"] == "auto-generated"
    assert (message["X-Phobos-Job"], message["X-Phobos-Run"], message["X-Phobos-Event"]) == (
        "nightly", "42", "failure")
    assert message["Message-ID"] and message["Date"]


def test_smtp_password_from_file_and_command(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("hunter2-long\n")
    assert smtp_password(EmailConfig(password_file=secret)) == "hunter2-long"
    assert smtp_password(EmailConfig(password_command=f"cat '{secret}'")) == "hunter2-long"
    with pytest.raises(NotifyFailed, match="cannot read the SMTP password") as missing:
        smtp_password(EmailConfig(password_file=tmp_path / "nope"))
    assert missing.value.hint
    with pytest.raises(NotifyFailed, match=r"password_command: .*exit code 3") as failed:
        smtp_password(EmailConfig(password_command="sh -c 'cat \"$0\"; exit 3' " + str(secret)))
    assert "hunter2" not in failed.value.message


# --- config and building ---------------------------------------------------------------------


def test_notify_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        config({"led": {"driver": "comand"},
                "email": {"events": ["sucess"], "security": "ssl", "to": []},
                "apprise": {"urls": []}, "ping": {"url": "hc-ping.com/x", "jobs": {"a": "ftp://x"}}},
               tmp_path)
    problems = "\n".join(error.value.problems)
    for expected in ("notify.led.driver: 'comand' is not one of 'none', 'blinkstick', "
                     "'command', 'file' (did you mean 'command'?)",
                     "notify.email.events: 'sucess' is not one of", "(did you mean 'success'?)",
                     "notify.email.security: 'ssl' is not one of",
                     "notify.email.to: name at least one recipient",
                     "notify.apprise.urls: name a URL",
                     "notify.ping.url: must be an http:// or https:// URL",
                     "notify.ping.jobs: a: must be http:// or https:// URLs"):
        assert expected in problems


def test_secret_urls_are_masked_in_config_show(tmp_path: Path) -> None:
    cfg = config({"apprise": {"urls": ["tgram://bot-token/chat"]},
                  "ping": {"url": SECRET_URL, "jobs": {"nightly": SECRET_URL}}}, tmp_path)
    shown = str(to_plain(cfg)["notify"])
    assert "bot-token" not in shown and "secret" not in shown


def test_build_notifiers_order_and_broken_ones_stand_alone(tmp_path: Path) -> None:
    cfg = config({"led": {"driver": "file"}, "email": {"username": "u"},
                  "apprise": {"urls": ["json://127.0.0.1:9/"]},
                  "ping": {"url": "http://127.0.0.1:9/k"}}, tmp_path)
    notifiers = build_notifiers(cfg)
    assert [n.name for n in notifiers] == ["led", "email", "apprise", "ping"]
    assert isinstance(notifiers[0], LedNotifier) and notifiers[0].problem is not None
    assert "file driver needs `path`" in notifiers[0].problem.message
    assert isinstance(notifiers[1], BrokenNotifier)
    assert isinstance(notifiers[2], MessageNotifier)
    assert isinstance(notifiers[3], PingNotifier)
    with pytest.raises(ConfigError):  # reported to the runner, after tracking the event
        notifiers[0].notify(finished(Outcome.FAILED))
    assert notifiers[0].tracker.current_state() is LedState.RED
    with pytest.raises(ConfigError):
        notifiers[1].notify(finished(Outcome.FAILED))


def test_default_config_builds_just_the_led_tracker(tmp_path: Path) -> None:
    notifiers = build_notifiers(config({}, tmp_path))
    assert len(notifiers) == 1 and isinstance(notifiers[0], LedNotifier)


def test_command_driver_needs_a_command(tmp_path: Path) -> None:
    [led] = build_notifiers(config({"led": {"driver": "command"}}, tmp_path))
    assert isinstance(led, LedNotifier) and led.problem is not None
    assert "needs `command`" in led.problem.message


@pytest.mark.parametrize(("unit", "job"), [
    ("phobos-job-nightly.service", "nightly"),
    ("phobos-job-pull-luv.service", "pull-luv"),
    ("phobos-job-unknown.service", None),
    ("phobos-job-nightly.timer", None),
    ("nfs-mount.service", None),
])
def test_job_of_unit(tmp_path: Path, unit: str, job: str | None) -> None:
    assert job_of_unit(unit, config({}, tmp_path, ("nightly", "pull-luv"))) == job
