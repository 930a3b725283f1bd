"""Failure e-mail from real `phobos run` processes to a real SMTP server (aiosmtpd) on
127.0.0.1: plain, STARTTLS with AUTH, implicit TLS, a rejected login, the server down, and
the local-sendmail transport. A notifier problem is a warning in the run log; the job's own
outcome and exit code never change."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import sqlite3
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from notify_servers import SMTP_PASSWORD, SMTP_USER, Cert, free_port, make_cert, smtp_server

from conftest import Sandbox

HOST = socket.gethostname()

JOBS = """
[jobs.nightly]
kind = "command"
argv = ["sh", "-c", "echo archiving /home; echo 'borg: repository is locked' >&2; exit 3"]

[jobs.fine]
kind = "command"
argv = ["sh", "-c", "echo all good"]
"""


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "smtp.pass"
    path.write_text(SMTP_PASSWORD + "\n")
    path.chmod(0o600)
    return path


def email_table(port: int, **extra: str) -> str:
    lines = ["[notify.email]", 'to = ["admin@example.org"]', 'sender = "phobos@nas.example"',
             'host = "127.0.0.1"', f"port = {port}"]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def run(sandbox: Sandbox, job: str) -> tuple[int, dict[str, object]]:
    done = sandbox.phobos("run", job, "--json")
    return done.returncode, json.loads(done.stdout)


def log_of(sandbox: Sandbox, run_id: object) -> list[str]:
    done = sandbox.phobos("log", str(run_id), "--json")
    assert done.returncode == 0, done.stderr
    return [entry["line"] for entry in json.loads(done.stdout)["log"]]


def test_failed_run_mails_summary_log_tail_and_log_command(sandbox: Sandbox) -> None:
    with smtp_server() as server:
        sandbox.write(JOBS + email_table(server.port))
        code, report = run(sandbox, "nightly")
        assert code == 1 and report["outcome"] == "failed"
        [message] = server.inbox.wait()
    assert message["Subject"] == f"[phobos@{HOST}] nightly failed"
    assert message["From"] == "phobos@nas.example"
    assert message["To"] == "admin@example.org"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Phobos-Run"] == str(report["run_id"])
    assert server.inbox.envelopes == [("phobos@nas.example", ["admin@example.org"])]
    body = message.get_content()
    assert "Job:       nightly (command)" in body
    assert "Trigger:   manual" in body
    assert "Outcome:   failed" in body
    assert "exit code 3" in body and "Duration:" in body
    assert f"Run:       {report['run_id']}" in body
    assert "Last lines of the log:\n" in body
    assert "  archiving /home" in body and "borg: repository is locked" in body
    assert f"The whole log: phobos -c {sandbox.config} log {report['run_id']}" in body
    # The command in the mail works as printed.
    assert "archiving /home" in log_of(sandbox, report["run_id"])


def test_success_sends_nothing_by_default_and_mail_when_configured(sandbox: Sandbox) -> None:
    with smtp_server() as server:
        sandbox.write(JOBS + email_table(server.port))
        assert run(sandbox, "fine")[0] == 0
        assert server.inbox.messages == []
        sandbox.write(JOBS + email_table(server.port, events='["failure", "success"]'))
        assert run(sandbox, "fine")[0] == 0
        [message] = server.inbox.wait()
    assert message["Subject"] == f"[phobos@{HOST}] fine succeeded"
    assert "Outcome:   success" in message.get_content()


def test_starttls_with_login(sandbox: Sandbox, cert: Cert, password_file: Path) -> None:
    with smtp_server(starttls=cert, auth=True) as server:
        sandbox.write(JOBS + email_table(
            server.port, security='"starttls"', ca_file=f'"{cert.cert}"',
            username=f'"{SMTP_USER}"', password_file=f'"{password_file}"'))
        code, report = run(sandbox, "nightly")
        assert code == 1
        [message] = server.inbox.wait()
    assert server.inbox.logins == [("PLAIN", True)]
    assert message["Subject"] == f"[phobos@{HOST}] nightly failed"
    assert not any("warning" in line for line in log_of(sandbox, report["run_id"]))


def test_implicit_tls_with_password_command(sandbox: Sandbox, cert: Cert,
                                            password_file: Path) -> None:
    with smtp_server(implicit_tls=cert, auth=True) as server:
        sandbox.write(JOBS + email_table(
            server.port, security='"tls"', ca_file=f'"{cert.cert}"',
            username=f'"{SMTP_USER}"', password_command=f'"cat {password_file}"'))
        assert run(sandbox, "nightly")[0] == 1
        [message] = server.inbox.wait()
    assert server.inbox.logins == [("PLAIN", True)]
    assert message["Subject"] == f"[phobos@{HOST}] nightly failed"
    assert_password_nowhere(sandbox)


def test_rejected_login_is_a_warning_without_the_password(sandbox: Sandbox, cert: Cert,
                                                          tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-the-password-at-all\n")
    with smtp_server(starttls=cert, auth=True) as server:
        sandbox.write(JOBS + email_table(
            server.port, security='"starttls"', ca_file=f'"{cert.cert}"',
            username=f'"{SMTP_USER}"', password_file=f'"{wrong}"'))
        done = sandbox.phobos("run", "nightly", "--json", timeout=60)
        assert server.inbox.messages == []
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["outcome"] == "failed"
    # smtplib tries each mechanism the server offers; every attempt was refused.
    assert server.inbox.logins and not any(ok for _, ok in server.inbox.logins)
    warnings = [line for line in log_of(sandbox, report["run_id"]) if "notifier email" in line]
    assert warnings == [f"warning: notifier email failed: 127.0.0.1:{server.port} refused the "
                        f"login of '{SMTP_USER}': 535 5.7.8 Authentication credentials invalid"]
    assert "not-the-password-at-all" not in done.stdout + done.stderr
    assert b"not-the-password-at-all" not in (sandbox.state / "history.sqlite").read_bytes()


def test_untrusted_certificate_is_refused(sandbox: Sandbox, cert: Cert) -> None:
    with smtp_server(starttls=cert) as server:
        sandbox.write(JOBS + email_table(server.port, security='"starttls"'))
        code, report = run(sandbox, "nightly")
        assert server.inbox.messages == []
    assert code == 1
    [warning] = [line for line in log_of(sandbox, report["run_id"]) if "notifier" in line]
    assert "certificate verify failed" in warning


@pytest.mark.parametrize(("job", "code", "outcome"), [("nightly", 1, "failed"),
                                                      ("fine", 0, "success")])
def test_server_down_leaves_outcome_and_exit_code_alone(sandbox: Sandbox, job: str, code: int,
                                                        outcome: str) -> None:
    port = free_port()  # nobody listens here
    sandbox.write(JOBS + email_table(port, events='["failure", "success"]'))
    got, report = run(sandbox, job)
    assert (got, report["outcome"]) == (code, outcome)
    assert f"warning: notifier email failed: cannot send mail via 127.0.0.1:{port}: " \
           "Connection refused" in log_of(sandbox, report["run_id"])
    history = json.loads(sandbox.phobos("history", "--json").stdout)["runs"]
    assert [(r["job"], r["outcome"]) for r in history] == [(job, outcome)]


def test_sendmail_transport_gets_the_message_on_stdin(sandbox: Sandbox, tmp_path: Path) -> None:
    spool = tmp_path / "spool.eml"
    script = tmp_path / "fake-sendmail"
    script.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat > {spool}\n')
    script.chmod(0o755)
    sandbox.write(JOBS + f'[notify.email]\ntransport = "sendmail"\nsendmail = ["{script}", '
                  '"-t", "-oi"]\n')
    code, report = run(sandbox, "nightly")
    assert code == 1
    assert (tmp_path / "argv").read_text() == "-t -oi\n"
    message = email.message_from_bytes(spool.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    assert message["To"] == "root"
    assert message["Subject"] == f"[phobos@{HOST}] nightly failed"
    assert f"phobos -c {sandbox.config} log {report['run_id']}" in message.get_content()


def test_sendmail_missing_is_a_warning(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.write(JOBS + f'[notify.email]\ntransport = "sendmail"\n'
                  f'sendmail = ["{tmp_path}/no-such-sendmail", "-t"]\n')
    code, report = run(sandbox, "nightly")
    assert code == 1
    [warning] = [line for line in log_of(sandbox, report["run_id"]) if "notifier" in line]
    assert warning.startswith("warning: notifier email failed: cannot send mail: ")
    assert "program not found" in warning


def test_unusable_email_table_is_a_warning_and_the_led_still_works(sandbox: Sandbox) -> None:
    led = sandbox.root / "led"
    sandbox.write(JOBS + f'[notify.led]\ndriver = "file"\npath = "{led}"\n'
                  '[notify.email]\nusername = "phobos"\n')
    code, report = run(sandbox, "nightly")
    assert code == 1
    assert led.read_text() == "red\n"
    warnings = [line for line in log_of(sandbox, report["run_id"]) if "notifier" in line]
    assert warnings and all(w.startswith("warning: notifier email failed: notify.email: "
                                         "username is set") for w in warnings)


def assert_password_nowhere(sandbox: Sandbox) -> None:
    """The SMTP password is in no log line, no step argv and no history column."""
    db = sqlite3.connect(sandbox.state / "history.sqlite")
    try:
        rows: Iterator[tuple[object, ...]] = db.execute(
            "SELECT line FROM log UNION ALL SELECT argv FROM steps "
            "UNION ALL SELECT COALESCE(message, '') || stats FROM runs")
        assert not any(SMTP_PASSWORD in str(row[0]) for row in rows)
    finally:
        db.close()
