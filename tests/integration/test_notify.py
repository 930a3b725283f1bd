"""Apprise and healthchecks.io pings from real `phobos run` processes to real HTTP servers on
127.0.0.1; `phobos notify test` across every channel; `phobos notify unit-failure` (systemd's
OnFailure= hook) with and without systemctl, and without mailing a failure twice."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from notify_servers import HttpServer, free_port, http_server, silent_server, smtp_server

from conftest import Sandbox, phobos_env

HOST = socket.gethostname()

JOBS = """
[jobs.nightly]
kind = "command"
argv = ["sh", "-c", "echo archiving /home; echo 'borg: repository is locked' >&2; exit 3"]

[jobs.fine]
kind = "command"
argv = ["sh", "-c", "echo all good"]

[jobs.fine-with-warning]
kind = "command"
argv = ["sh", "-c", "exit 24"]
warn_codes = [24]
"""


def run(sandbox: Sandbox, job: str) -> tuple[int, dict[str, object]]:
    done = sandbox.phobos("run", job, "--json")
    return done.returncode, json.loads(done.stdout)


def log_of(sandbox: Sandbox, run_id: object) -> list[str]:
    done = sandbox.phobos("log", str(run_id), "--json")
    assert done.returncode == 0, done.stderr
    return [entry["line"] for entry in json.loads(done.stdout)["log"]]


def notifier_lines(sandbox: Sandbox, run_id: object) -> list[str]:
    return [line for line in log_of(sandbox, run_id) if "notifier" in line]


# --- Apprise ---------------------------------------------------------------------------------


def apprise_table(*urls: str, events: str = '["failure"]') -> str:
    return f"[notify.apprise]\nurls = {json.dumps(list(urls))}\nevents = {events}\n"


def test_apprise_json_target_gets_the_failure(sandbox: Sandbox) -> None:
    with http_server() as web:
        sandbox.write(JOBS + apprise_table(f"json://127.0.0.1:{web.port}/hook"))
        code, report = run(sandbox, "nightly")
        [request] = web.wait(1)
    assert code == 1
    assert (request.method, request.path) == ("POST", "/hook")
    payload = request.json()
    assert payload["title"] == f"[phobos@{HOST}] nightly failed"
    assert payload["type"] == "failure"
    assert "Outcome:   failed" in payload["message"]
    assert "borg: repository is locked" in payload["message"]
    assert notifier_lines(sandbox, report["run_id"]) == []


def test_apprise_events_filter_and_success_type(sandbox: Sandbox) -> None:
    with http_server() as web:
        sandbox.write(JOBS + apprise_table(f"json://127.0.0.1:{web.port}/hook",
                                           events='["success", "warning"]'))
        assert run(sandbox, "nightly")[0] == 1
        assert run(sandbox, "fine")[0] == 0
        assert run(sandbox, "fine-with-warning")[0] == 0
        requests = web.wait(2)
    assert [r.json()["type"] for r in requests] == ["success", "warning"]
    assert [r.json()["title"] for r in requests] == [
        f"[phobos@{HOST}] fine succeeded",
        f"[phobos@{HOST}] fine-with-warning finished with warnings"]


def test_apprise_failure_names_the_url_and_keeps_the_outcome(sandbox: Sandbox) -> None:
    with http_server(status=500) as broken, http_server() as working:
        sandbox.write(JOBS + apprise_table(f"json://127.0.0.1:{broken.port}/hook-token-a1",
                                           f"json://127.0.0.1:{working.port}/b"))
        code, report = run(sandbox, "nightly")
        assert len(working.wait(1)) == 1  # one bad URL does not stop the others
    assert (code, report["outcome"]) == (1, "failed")
    [warning] = notifier_lines(sandbox, report["run_id"])
    # Named by its place and service: the token in its path stays out of the log.
    assert warning.startswith("warning: notifier apprise failed: 1 of 2 Apprise URLs failed: "
                              "#1 json://…: ")
    log = sandbox.phobos("log", str(report["run_id"])).stdout
    assert "hook-token-a1" not in log and "#1 json://…" in log


# --- pings -----------------------------------------------------------------------------------


def ping_table(web: HttpServer, **extra: str) -> str:
    lines = ["[notify.ping]", f'url = "{web.base}/ping/KEY"']
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def test_pings_start_then_success_or_fail_with_log_and_one_rid(sandbox: Sandbox) -> None:
    with http_server() as web:
        sandbox.write(JOBS + ping_table(web))
        assert run(sandbox, "fine")[0] == 0
        assert run(sandbox, "nightly")[0] == 1
        requests = web.wait(4)
    assert [(r.method, r.path) for r in requests] == [
        ("GET", "/ping/KEY/fine/start"), ("POST", "/ping/KEY/fine"),
        ("GET", "/ping/KEY/nightly/start"), ("POST", "/ping/KEY/nightly/fail")]
    rids = [r.query["rid"][0] for r in requests]
    assert rids[0] == rids[1] != rids[2] == rids[3]
    assert requests[0].headers["User-Agent"].startswith("phobos/")
    body = requests[3].body.decode()
    assert "Outcome:   failed" in body and "borg: repository is locked" in body


def test_per_job_url_wins_and_send_log_off(sandbox: Sandbox) -> None:
    with http_server() as web:
        sandbox.write(JOBS + "[notify.ping]\nsend_log = false\n"
                      f'jobs = {{ nightly = "{web.base}/uuid-1234" }}\n')
        assert run(sandbox, "fine")[0] == 0  # no URL for this job: no ping
        assert run(sandbox, "nightly")[0] == 1
        requests = web.wait(2)
    assert [(r.method, r.path, r.body) for r in requests] == [
        ("GET", "/uuid-1234/start", b""), ("GET", "/uuid-1234/fail", b"")]


def test_ping_server_down_or_silent_is_a_warning(sandbox: Sandbox) -> None:
    port = free_port()
    sandbox.write(JOBS + f'[notify.ping]\nurl = "http://127.0.0.1:{port}/KEY"\n')
    code, report = run(sandbox, "fine")
    assert (code, report["outcome"]) == (0, "success")
    assert notifier_lines(sandbox, report["run_id"]) == [
        f"warning: notifier ping failed: ping http://127.0.0.1:{port}/…/start failed: "
        "Connection refused",
        f"warning: notifier ping failed: ping http://127.0.0.1:{port}/… failed: "
        "Connection refused"]
    with silent_server() as silent:
        sandbox.write(JOBS + f'[notify.ping]\nurl = "http://127.0.0.1:{silent}/KEY"\n'
                      'timeout = "0.5s"\n')
        started = time.monotonic()
        code, report = run(sandbox, "nightly")
        took = time.monotonic() - started
    assert (code, report["outcome"]) == (1, "failed")
    assert took < 10
    lines = notifier_lines(sandbox, report["run_id"])
    assert len(lines) == 2 and all("timed out" in line for line in lines)


def test_ping_http_error_is_a_warning(sandbox: Sandbox) -> None:
    with http_server(status=404) as web:
        sandbox.write(JOBS + ping_table(web))
        code, report = run(sandbox, "fine")
    assert code == 0
    assert notifier_lines(sandbox, report["run_id"])[0] == (
        f"warning: notifier ping failed: ping http://127.0.0.1:{web.port}/…/start answered "
        "HTTP 404 Not Found")


# --- phobos notify test ----------------------------------------------------------------------


def test_notify_test_sends_through_every_channel(sandbox: Sandbox) -> None:
    with smtp_server() as smtp, http_server() as web:
        sandbox.write(JOBS + f'[notify.email]\nhost = "127.0.0.1"\nport = {smtp.port}\n'
                      + apprise_table(f"json://127.0.0.1:{web.port}/hook")
                      + f'[notify.ping]\njobs = {{ nightly = "{web.base}/uuid-1" }}\n')
        done = sandbox.phobos("notify", "test")
        [message] = smtp.inbox.wait()
        requests = web.wait(2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"email: sent: sent to root via 127.0.0.1:{smtp.port} (none)",
        "apprise: sent: sent to 1 URL",
        "ping: sent: logged a test line to the checks of nightly"]
    assert message["Subject"] == f"[phobos@{HOST}] test: test-job failed"
    assert "This is a test sent by `phobos notify test`" in message.get_content()
    hook = next(r for r in requests if r.path == "/hook")
    assert hook.json()["title"] == f"[phobos@{HOST}] test: test-job failed"
    # A test must not tell the outside monitor that a job ran: /log changes no check.
    log = next(r for r in requests if r.path != "/hook")
    assert (log.method, log.path, log.body) == ("POST", "/uuid-1/log", b"phobos notify test\n")


def test_notify_test_event_choice_and_json(sandbox: Sandbox) -> None:
    with smtp_server() as smtp:
        sandbox.write(JOBS + f'[notify.email]\nhost = "127.0.0.1"\nport = {smtp.port}\n')
        done = sandbox.phobos("notify", "test", "--event", "success", "--json")
        [message] = smtp.inbox.wait()
    assert done.returncode == 0
    assert json.loads(done.stdout) == {"ok": True, "channels": [
        {"channel": "email", "status": "sent", "hint": None,
         "detail": f"sent to root via 127.0.0.1:{smtp.port} (none)"}]}
    assert message["Subject"] == f"[phobos@{HOST}] test: test-job succeeded"


def test_notify_test_reports_the_failing_channel_and_exits_1(sandbox: Sandbox) -> None:
    port = free_port()
    with http_server() as web:
        sandbox.write(JOBS + f'[notify.email]\nhost = "127.0.0.1"\nport = {port}\n'
                      + apprise_table(f"json://127.0.0.1:{web.port}/hook"))
        done = sandbox.phobos("notify", "test")
        assert len(web.wait(1)) == 1
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0] == (f"email: failed: cannot send mail via 127.0.0.1:{port}: "
                        "Connection refused")
    assert lines[1].startswith("email: hint: check [notify.email] host, port")
    assert lines[2] == "apprise: sent: sent to 1 URL"


def test_notify_test_without_channels_says_so(sandbox: Sandbox) -> None:
    sandbox.write(JOBS)
    done = sandbox.phobos("notify", "test")
    assert done.returncode == 1
    assert "no notification channel is configured" in done.stderr


# --- phobos notify unit-failure --------------------------------------------------------------


def fake_systemctl(directory: Path) -> Path:
    """A `systemctl` that prints what `systemctl status --full` would, and exits 3 (as the
    real one does for a failed unit)."""
    directory.mkdir(exist_ok=True)
    script = directory / "systemctl"
    script.write_text('#!/bin/sh\necho "args: $*"\n'
                      'echo "× $6 - Backup job"\n'
                      'echo "     Active: failed (Result: exit-code)"\nexit 3\n')
    script.chmod(0o755)
    return directory


def unit_failure(sandbox: Sandbox, unit: str, path: str) -> tuple[int, dict[str, object]]:
    env = {**phobos_env(), "PATH": path}
    done = subprocess.run(sandbox.argv("notify", "unit-failure", unit, "--json"), env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def statuses(report: dict[str, object]) -> dict[str, str]:
    channels = report["channels"]
    assert isinstance(channels, list)
    return {entry["channel"]: entry["status"] for entry in channels}


def led_and_email(sandbox: Sandbox, port: int) -> str:
    return (JOBS + f'[notify.led]\ndriver = "file"\npath = "{sandbox.root}/led"\n'
            f'[notify.email]\nhost = "127.0.0.1"\nport = {port}\n')


def test_unit_failure_mails_systemctl_status_and_latches_red(sandbox: Sandbox) -> None:
    bin_dir = fake_systemctl(sandbox.root / "bin")
    with smtp_server() as smtp:
        sandbox.write(led_and_email(sandbox, smtp.port))
        code, report = unit_failure(sandbox, "nfs-mount.service", f"{bin_dir}:/usr/bin:/bin")
        [message] = smtp.inbox.wait()
    assert code == 0 and statuses(report) == {"led": "sent", "email": "sent"}
    assert message["Subject"] == f"[phobos@{HOST}] unit nfs-mount.service failed"
    body = message.get_content()
    assert "The systemd unit nfs-mount.service failed" in body
    assert "args: status --full --no-pager --lines=30 -- nfs-mount.service" in body
    assert "Active: failed (Result: exit-code)" in body
    assert (sandbox.root / "led").read_text() == "red\n"
    show = json.loads(sandbox.phobos("led", "show", "--json").stdout)
    assert show["state"] == "red"
    assert [f["job"] for f in show["failures"]] == ["nfs-mount.service"]


def test_unit_failure_without_systemctl_says_so(sandbox: Sandbox) -> None:
    empty = sandbox.root / "empty-bin"
    empty.mkdir()
    with smtp_server() as smtp:
        sandbox.write(led_and_email(sandbox, smtp.port))
        code, _ = unit_failure(sandbox, "nfs-mount.service", str(empty))
        [message] = smtp.inbox.wait()
    assert code == 0
    assert "systemctl is not available on this host" in message.get_content()


def test_job_unit_failure_already_mailed_by_the_runner_is_not_mailed_again(
        sandbox: Sandbox) -> None:
    bin_dir = fake_systemctl(sandbox.root / "bin")
    with smtp_server() as smtp:
        sandbox.write(led_and_email(sandbox, smtp.port))
        code, run_report = run(sandbox, "nightly")
        assert code == 1 and len(smtp.inbox.wait()) == 1
        code, report = unit_failure(sandbox, "phobos-job-nightly.service", str(bin_dir))
        time.sleep(0.3)  # a second mail, if any, would have arrived by now
        assert len(smtp.inbox.messages) == 1
    assert code == 0
    assert statuses(report) == {"led": "sent", "email": "skipped"}
    channels = report["channels"]
    assert isinstance(channels, list)
    assert channels[1]["detail"] == ("the runner already sent the failure of run "
                                     f"{run_report['run_id']}")
    assert (sandbox.root / "led").read_text() == "red\n"


def test_job_unit_failure_is_mailed_when_the_runner_could_not(sandbox: Sandbox) -> None:
    bin_dir = fake_systemctl(sandbox.root / "bin")
    port = free_port()
    sandbox.write(led_and_email(sandbox, port))
    code, run_report = run(sandbox, "nightly")  # the SMTP server is down during the run
    assert code == 1
    with smtp_server() as smtp:
        sandbox.write(led_and_email(sandbox, smtp.port))
        code, report = unit_failure(sandbox, "phobos-job-nightly.service", str(bin_dir))
        [message] = smtp.inbox.wait()
    assert code == 0 and statuses(report) == {"led": "sent", "email": "sent"}
    body = message.get_content()
    assert (f"It runs the phobos job nightly; its latest run {run_report['run_id']} (manual) "
            "ended failed: step command: sh failed with exit code 3") in body
    assert "  borg: repository is locked" in body
    assert f"The whole log: phobos -c {sandbox.config} log {run_report['run_id']}" in body
    assert "Active: failed (Result: exit-code)" in body


def test_unit_failure_reports_a_failed_channel(sandbox: Sandbox) -> None:
    sandbox.write(led_and_email(sandbox, free_port()))
    code, report = unit_failure(sandbox, "nfs-mount.service", os.defpath)
    assert code == 1
    assert statuses(report) == {"led": "sent", "email": "failed"}


def test_under_a_failure_hook_the_runner_leaves_the_mail_to_the_hook(sandbox: Sandbox) -> None:
    """systemd job units set PHOBOS_FAILURE_HOOK: the unit may have no network, and the
    OnFailure= unit sends one mail with the unit's status and the run's log tail."""
    bin_dir = fake_systemctl(sandbox.root / "bin")
    with smtp_server() as smtp:
        sandbox.write(led_and_email(sandbox, smtp.port))
        env = {**phobos_env(), "PHOBOS_FAILURE_HOOK": "phobos-failure@%n.service"}
        done = subprocess.run(sandbox.argv("run", "nightly", "--json"), env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        run_id = json.loads(done.stdout)["run_id"]
        time.sleep(0.3)
        assert smtp.inbox.messages == []  # the runner sent nothing
        assert "notifier email failed" not in "\n".join(log_of(sandbox, run_id))
        assert (sandbox.root / "led").read_text() == "red\n"  # the LED is local: latched
        code, report = unit_failure(sandbox, "phobos-job-nightly.service", str(bin_dir))
        [message] = smtp.inbox.wait()
    assert code == 0 and statuses(report)["email"] == "sent"
    assert f"latest run {run_id} (manual) ended failed" in message.get_content()
