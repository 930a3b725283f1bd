"""Real `phobos run` processes: locks between runs, busy policies, SIGKILL and SIGTERM
recovery, and secrets kept out of logs, history and argv."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from conftest import Sandbox

JOBS = """
[jobs.writer-a]
kind = "command"
argv = ["sh", "-c", "touch {root}/a.started; sleep 1.5"]
writes = ["custom:shared"]

[jobs.writer-b]
kind = "command"
argv = ["sh", "-c", "sleep 0.2"]
writes = ["custom:shared"]
on_busy = "{policy}"
busy_timeout = "{timeout}"

[jobs.reader-1]
kind = "command"
argv = ["sh", "-c", "touch {root}/r1.started; {hold}"]
reads = ["custom:shared"]

[jobs.holder]
kind = "command"
argv = ["sh", "-c", "touch {root}/holder.started; {hold}"]
writes = ["custom:shared"]

[jobs.reader-2]
kind = "command"
argv = ["sh", "-c", "sleep 0.5"]
reads = ["custom:shared"]

[jobs.other]
kind = "command"
argv = ["sh", "-c", "sleep 0.5"]
writes = ["custom:elsewhere"]
"""


def wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def setup(sandbox: Sandbox, policy: str = "wait", timeout: str = "1h") -> None:
    # Jobs that must still run while a test starts others hold until the test says so
    # (at most 20 s): a fixed sleep would end early on a loaded machine.
    hold = (f"i=0; while [ ! -e {sandbox.root}/release ] && [ $i -lt 400 ]; "
            "do sleep 0.05; i=$((i+1)); done")
    sandbox.write(JOBS.format(root=sandbox.root, policy=policy, timeout=timeout, hold=hold))


def release(sandbox: Sandbox) -> None:
    (sandbox.root / "release").touch()


def runs(sandbox: Sandbox) -> dict[str, dict[str, object]]:
    out = sandbox.phobos("history", "--json", "--limit", "50")
    assert out.returncode == 0, out.stderr
    return {run["job"]: run for run in json.loads(out.stdout)["runs"]}


def overlaps(sandbox: Sandbox, job_a: str, job_b: str) -> bool:
    """Whether the two jobs' work (from holding their locks to the end) overlapped."""
    got = runs(sandbox)
    a, b = got[job_a], got[job_b]
    return bool(a["locked"] < b["ended"] and b["locked"] < a["ended"])  # type: ignore[operator]


def test_conflicting_job_waits_and_never_overlaps(sandbox: Sandbox) -> None:
    setup(sandbox)
    first = sandbox.start("run", "writer-a")
    wait_for(sandbox.root / "a.started")
    second = sandbox.phobos("run", "writer-b")
    assert first.wait(30) == 0
    assert second.returncode == 0, second.stderr
    assert "waiting for custom:shared, held by job writer-a" in second.stderr
    assert not overlaps(sandbox, "writer-a", "writer-b")


def test_skip_policy_records_skipped_and_names_the_holder(sandbox: Sandbox) -> None:
    setup(sandbox, policy="skip")
    first = sandbox.start("run", "writer-a")
    wait_for(sandbox.root / "a.started")
    second = sandbox.phobos("run", "writer-b", "--json")
    assert second.returncode == 3
    report = json.loads(second.stdout)
    assert report["outcome"] == "skipped"
    assert report["message"].startswith("custom:shared is busy: held by job writer-a (run ")
    assert first.wait(30) == 0
    assert runs(sandbox)["writer-b"]["outcome"] == "skipped"


def test_fail_policy_records_failed(sandbox: Sandbox) -> None:
    setup(sandbox, policy="fail")
    first = sandbox.start("run", "writer-a")
    wait_for(sandbox.root / "a.started")
    second = sandbox.phobos("run", "writer-b")
    assert second.returncode == 1
    assert first.wait(30) == 0
    assert runs(sandbox)["writer-b"]["outcome"] == "failed"


def test_wait_gives_up_after_busy_timeout_as_skipped(sandbox: Sandbox) -> None:
    setup(sandbox, timeout="0.5s")
    first = sandbox.start("run", "holder")
    wait_for(sandbox.root / "holder.started")
    second = sandbox.phobos("run", "writer-b")
    release(sandbox)
    assert second.returncode == 3
    assert "giving up in" in second.stderr
    assert first.wait(30) == 0


def test_readers_share_and_unrelated_jobs_run_together(sandbox: Sandbox) -> None:
    setup(sandbox)
    first = sandbox.start("run", "reader-1")
    wait_for(sandbox.root / "r1.started")
    assert sandbox.phobos("run", "reader-2").returncode == 0
    assert sandbox.phobos("run", "other").returncode == 0
    release(sandbox)
    assert first.wait(30) == 0
    assert overlaps(sandbox, "reader-1", "reader-2")
    assert overlaps(sandbox, "reader-1", "other")


def test_locks_lists_the_holder_while_running(sandbox: Sandbox) -> None:
    setup(sandbox)
    first = sandbox.start("run", "writer-a")
    wait_for(sandbox.root / "a.started")
    held = json.loads(sandbox.phobos("locks", "--json").stdout)["locks"]
    assert [(h["resource"], h["job"], h["mode"], h["pid"]) for h in held] == [
        ("custom:shared", "writer-a", "write", first.pid)]
    assert first.wait(30) == 0
    assert json.loads(sandbox.phobos("locks", "--json").stdout)["locks"] == []


def _child_pid(sandbox: Sandbox, name: str) -> int:
    pidfile = sandbox.root / name
    wait_for(pidfile)
    return int(pidfile.read_text())


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


LONG_JOB = """
[jobs.long]
kind = "command"
argv = ["sh", "-c", "echo $$ > {root}/child.pid; exec sleep 60"]
writes = ["custom:shared"]

[jobs.quick]
kind = "command"
argv = ["true"]
writes = ["custom:shared"]
on_busy = "fail"
"""


def test_sigkill_frees_lock_kills_child_and_marks_interrupted(sandbox: Sandbox) -> None:
    sandbox.write(LONG_JOB.format(root=sandbox.root))
    runner = sandbox.start("run", "long")
    child = _child_pid(sandbox, "child.pid")
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(10)
    # The lock is free at once: a job with on_busy = "fail" gets it.
    assert sandbox.phobos("run", "quick").returncode == 0
    assert _gone(child)
    status = json.loads(sandbox.phobos("status", "--json").stdout)
    last = {job["job"]: job["last"] for job in status["jobs"]}
    assert last["long"]["outcome"] == "interrupted"
    assert last["long"]["exit_code"] == 4


def test_sigterm_interrupts_stops_child_and_records(sandbox: Sandbox) -> None:
    sandbox.write(LONG_JOB.format(root=sandbox.root))
    runner = sandbox.start("run", "long")
    child = _child_pid(sandbox, "child.pid")
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(30) == 4
    assert _gone(child, timeout=1)
    assert runs(sandbox)["long"]["outcome"] == "interrupted"
    assert runs(sandbox)["long"]["message"] == "stopped by SIGTERM"


SECRET = "s3cret-Passphrase-9f2"

SECRET_JOB = '''
[jobs.secretive]
kind = "command"
argv = ["sh", "-c", """echo $$ > ROOT/child.pid; echo using $API_TOKEN; sleep 1
echo $API_TOKEN >&2; exit 1"""]
secret_env = { API_TOKEN = "SECRET" }
'''


def test_secret_never_in_log_history_or_argv(sandbox: Sandbox) -> None:
    sandbox.write(SECRET_JOB.replace("ROOT", str(sandbox.root)).replace("SECRET", SECRET))
    runner = sandbox.start("run", "secretive")
    child = _child_pid(sandbox, "child.pid")
    cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in (child, runner.pid)]
    stdout, stderr = runner.communicate(timeout=30)
    assert runner.returncode == 1
    assert all(SECRET.encode() not in c for c in cmdlines)
    assert SECRET not in stdout + stderr
    assert "using ********" in stderr
    log = sandbox.phobos("log", "1", "--json").stdout
    assert SECRET not in log and "using ********" in log
    db = sqlite3.connect(sandbox.state / "history.sqlite")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for path in sandbox.state.iterdir():
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in sandbox.phobos("config", "show", "--json").stdout


SLOW_LED = """
[notify.led]
driver = "command"
command = ["sh", "-c", "case {{color}} in yellow|blue) touch {root}/led.busy; sleep 30;; esac"]

[jobs.quiet]
kind = "command"
argv = ["true"]
"""


def test_sigterm_while_notifiers_are_told_the_run_started(sandbox: Sandbox) -> None:
    """A stop signal is never swallowed as a notifier failure: the run ends interrupted."""
    sandbox.write(SLOW_LED.format(root=sandbox.root))
    runner = sandbox.start("run", "quiet", "--json")
    wait_for(sandbox.root / "led.busy")
    runner.send_signal(signal.SIGTERM)
    stdout, _ = runner.communicate(timeout=30)
    assert runner.returncode == 4
    assert json.loads(stdout)["outcome"] == "interrupted"
    assert runs(sandbox)["quiet"]["outcome"] == "interrupted"
