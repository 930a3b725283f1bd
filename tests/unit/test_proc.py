"""The subprocess module: streaming, redaction, exit-code classes, timeouts, env."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from phobos.core import proc
from phobos.core.model import Outcome
from phobos.errors import SecretLeak, StepFailed, ToolMissing


def collect() -> tuple[list[tuple[str, str]], proc.LineSink]:
    lines: list[tuple[str, str]] = []
    return lines, lambda stream, line: lines.append((stream, line))


def test_streams_both_pipes_line_by_line() -> None:
    lines, sink = collect()
    result = proc.run(["sh", "-c", "echo one; echo two >&2; printf 'no newline'"], sink=sink)
    assert result.outcome is Outcome.SUCCESS
    assert sorted(lines) == [("stderr", "two"), ("stdout", "no newline"), ("stdout", "one")]


def test_secret_values_are_redacted_from_output_and_result() -> None:
    lines, sink = collect()
    result = proc.run(["sh", "-c", 'echo "token=$API_TOKEN"; echo "$API_TOKEN" >&2; exit 0'],
                      env={"API_TOKEN": "tok-123456"}, sink=sink)
    assert ("stdout", "token=********") in lines
    assert all("tok-123456" not in line for _, line in lines)
    assert all("tok-123456" not in line for line in result.tail)


def test_explicit_secrets_are_redacted_and_refused_in_argv() -> None:
    lines, sink = collect()
    proc.run(["sh", "-c", "cat"], stdin_data=b"pass: correct-horse\n",
             secrets=["correct-horse"], sink=sink)
    assert lines == [("stdout", "pass: ********")]
    with pytest.raises(SecretLeak):
        proc.run(["echo", "--password=correct-horse"], secrets=["correct-horse"])


def test_environment_is_an_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEAKY_VARIABLE", "should-not-pass")
    result = proc.run(["env"], capture=True, env={"EXTRA": "yes"})
    names = {line.split("=", 1)[0] for line in result.stdout.splitlines()}
    assert "LEAKY_VARIABLE" not in names
    assert {"PATH", "EXTRA"} <= names


@pytest.mark.parametrize(("code", "outcome"), [(0, Outcome.SUCCESS), (24, Outcome.WARNING),
                                               (1, Outcome.WARNING), (23, Outcome.FAILED)])
def test_exit_codes_are_classified(code: int, outcome: Outcome) -> None:
    result = proc.run(["sh", "-c", f"exit {code}"], warn_codes=(1, 24), check=False)
    assert result.outcome is outcome and result.returncode == code


def test_failure_message_names_program_code_meaning_and_stderr() -> None:
    with pytest.raises(StepFailed) as exc:
        proc.run(["sh", "-c", "echo 'no space left' >&2; exit 11"],
                 explain=lambda code: "error in file I/O" if code == 11 else "")
    assert exc.value.message == ("sh failed with exit code 11 (error in file I/O): "
                                 "no space left")


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    started = time.monotonic()
    with pytest.raises(StepFailed, match="did not finish within"):
        proc.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], timeout=1)
    assert time.monotonic() - started < 15
    grandchild = int(pidfile.read_text())
    _wait_gone(grandchild)


def test_a_program_left_running_by_a_child_that_obeyed_sigterm_is_killed_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``borg with-lock REPO rsync ...`` on a drive pulled out: Borg exits on SIGTERM,
    rsync lingers and keeps the drive busy. The step returns once rsync is gone too."""
    monkeypatch.setattr(proc, "KILL_GRACE_SECONDS", 1.0)
    pidfile = tmp_path / "lingering.pid"
    # The grandchild ignores SIGTERM (an ignored signal stays ignored across exec).
    script = f"(trap '' TERM; exec sleep 60) & echo $! > {pidfile}; exec sleep 60"
    with pytest.raises(StepFailed, match="did not finish within"):
        proc.run(["sh", "-c", script], timeout=1)
    lingering = int(pidfile.read_text())
    stat = Path(f"/proc/{lingering}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_missing_program_is_a_clear_error() -> None:
    with pytest.raises(ToolMissing, match="no-such-tool-xyz: program not found"):
        proc.run(["no-such-tool-xyz"])


def test_capture_keeps_stdout_unredacted_for_parsing() -> None:
    result = proc.run(["printf", '{"a": 1}\n'], capture=True)
    assert result.stdout == '{"a": 1}'


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still alive")
