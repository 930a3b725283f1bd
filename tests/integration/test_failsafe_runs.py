"""Fail-safe runs with the real CLI: what a person sees when the history database is
damaged (run, status, doctor, the dashboard), a run killed with SIGKILL told about once
(also when systemd's failure hook runs too), and doctor warning of a repository
filesystem too full for a Borg commit. The breadth (a hundred faults and their
invariants) is in tests/faults."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import signal
import subprocess
import time
from pathlib import Path

import pytest
from notify_servers import smtp_server
from test_web import get, start_server

from conftest import Sandbox, phobos_env

pytestmark = pytest.mark.root

JOBS = """
[jobs.quick]
kind = "command"
argv = ["true"]

[jobs.long]
kind = "command"
argv = ["sh", "-c", "touch {root}/long.started; exec sleep 60"]

[notify.led]
driver = "file"
path = "{root}/led"

[notify.email]
host = "127.0.0.1"
port = {port}

[web]
"""


def configure(sandbox: Sandbox, port: int, extra: str = "") -> None:
    sandbox.write(JOBS.format(root=sandbox.root, port=port) + extra)


def led(sandbox: Sandbox) -> str:
    return (sandbox.root / "led").read_text().strip()


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_damaged_history_is_said_everywhere_and_never_stops_the_job(
        sandbox: Sandbox) -> None:
    with smtp_server() as smtp:
        configure(sandbox, smtp.port)
        assert sandbox.phobos("run", "quick").returncode == 0
        db = sandbox.state / "history.sqlite"
        with db.open("r+b") as file:
            file.write(b"this is not what SQLite wrote" * 4)

        status = sandbox.phobos("status", "--json")
        assert status.returncode == 1
        assert "history unavailable: the history database" in status.stderr
        assert "damaged" in json.loads(status.stdout)["history_problem"]
        doctor = sandbox.phobos("doctor", "--no-network")
        assert "does not start with an SQLite header" in doctor.stdout
        server = start_server(sandbox)
        try:
            page = get(server.url).body
            assert '<p class="problem">history unavailable:' in page
        finally:
            server.stop()

        run = sandbox.phobos("run", "quick", "--json")
        [mail] = smtp.inbox.wait(1)
    assert run.returncode == 5  # the job succeeded; its record did not: the unit fails
    assert json.loads(run.stdout)["outcome"] == "success"
    assert "moved aside to" in run.stderr and "a fresh one was started" in run.stderr
    assert mail["Subject"].endswith("quick succeeded; its history needs attention")
    assert led(sandbox) == "red"
    kept = [p for p in sandbox.state.iterdir() if ".corrupt-" in p.name]
    assert len(kept) == 1 and kept[0].read_bytes().startswith(b"this is not what")
    after = sandbox.phobos("doctor", "--no-network")
    assert f"{kept[0]} was moved aside on" in after.stdout
    assert sandbox.phobos("status").returncode == 0  # the fresh history works


def at_a_terminal(sandbox: Sandbox, *args: str) -> tuple[int, str]:
    """The real CLI with a pseudo-terminal for stdin, stdout and stderr (progress bars
    on): its exit code and everything it wrote."""
    master, slave = pty.openpty()
    process = subprocess.Popen(sandbox.argv(*args), stdin=slave, stdout=slave, stderr=slave,
                               env=phobos_env(), start_new_session=True)
    os.close(slave)
    output = b""
    with contextlib.suppress(OSError):  # EIO once the last process holding it is gone
        while chunk := os.read(master, 4096):
            output += chunk
    os.close(master)
    return process.wait(timeout=60), output.decode(errors="replace")


def test_a_run_at_a_terminal_runs_though_the_history_is_damaged(sandbox: Sandbox) -> None:
    """The progress bars read the job's typical duration from the history first: a
    damaged one must not stop the run there."""
    with smtp_server() as smtp:
        configure(sandbox, smtp.port)
        assert sandbox.phobos("run", "quick").returncode == 0
        (sandbox.state / "history.sqlite").write_bytes(b"garbage " * 64)
        code, output = at_a_terminal(sandbox, "run", "quick")
        smtp.inbox.wait(1)
    assert code == 5, output
    assert "quick: success" in output and "a fresh one was started" in output
    assert "Traceback" not in output


def test_a_killed_run_is_told_about_once_also_with_systemds_failure_hook(
        sandbox: Sandbox) -> None:
    bin_dir = sandbox.root / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"  # no systemd here: what its status would print
    systemctl.write_text("#!/bin/sh\necho 'Active: failed (Result: signal)'\nexit 3\n")
    systemctl.chmod(0o755)
    with smtp_server() as smtp:
        configure(sandbox, smtp.port)
        runner = sandbox.start("run", "long")
        wait_for(sandbox.root / "long.started")
        os.kill(runner.pid, signal.SIGKILL)
        runner.communicate(timeout=30)

        first = sandbox.phobos("status")  # any start that touches state cleans up
        [mail] = smtp.inbox.wait(1)
        again = sandbox.phobos("status")
        hook = subprocess.run(sandbox.argv("notify", "unit-failure",
                                           "phobos-job-long.service", "--json"),
                              env={**phobos_env(), "PATH": f"{bin_dir}:/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=60)
        time.sleep(0.5)
        mails = len(smtp.inbox.messages)
    assert "run 1 of long: phobos process disappeared" in first.stderr
    assert "disappeared" not in again.stderr
    assert mail["Subject"].endswith("long was interrupted")
    assert "phobos process disappeared (killed or power loss)" in mail.get_content()
    channels = {c["channel"]: c for c in json.loads(hook.stdout)["channels"]}
    assert channels["email"]["status"] == "skipped"
    assert "already told about it" in channels["email"]["detail"]
    assert mails == 1 and led(sandbox) == "red"


def test_doctor_warns_when_a_borg_commit_would_not_fit(sandbox: Sandbox) -> None:
    small = sandbox.root / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "phobos-test", str(small)],
                   check=True)
    try:
        configure(sandbox, 25, extra=f'\n[repos.main]\npath = "{small}/borg"\n'
                  f'encryption = "none"\nbase_dir = "{sandbox.root}/borgbase"\n')
        assert sandbox.phobos("repo", "init", "main").returncode == 0
        doctor = sandbox.phobos("doctor", "--no-network", "--json")
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)
    found = [f for f in json.loads(doctor.stdout)["findings"] if f["area"] == "space"]
    assert [f["severity"] for f in found] == ["error"]
    assert f"free on {small}; a Borg commit needs ~545 MB" in found[0]["message"]
    assert "max_segment_size" in found[0]["fix"]
