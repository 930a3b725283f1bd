"""A stop signal at any moment of a run's wait for its locks ends the run: recorded
interrupted, its work never started, nothing of its place in line left behind.

Once a waiting run ignored a SIGTERM and later ran to completion: the signal's exception
(then a PhobosError) arrived while the lock's holder was being named, where an ``except
PhobosError`` (meant for an unreadable /proc/locks) took it for "holder unknown"; the
handler had already fired, so every later SIGTERM was ignored too. Here the real runner
waits for a lock this test holds, and a SIGTERM is sent at each line (then at every few
lines) the waiting code executes, found with a trace function: every point of the wait,
not a few moments picked by a clock.
"""

from __future__ import annotations

import fcntl
import inspect
import json
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from conftest import Sandbox
from phobos.config.load import load
from phobos.core import locks, order, queue
from phobos.core.history import History
from phobos.core.model import Outcome, Trigger
from phobos.core.runner import run_job
from phobos.errors import ExitCode

WAITING_CODE = {locks.__file__, queue.__file__, order.__file__}
_WAIT_SOURCE, _WAIT_FIRST_LINE = inspect.getsourcelines(locks.LockSet._wait_turn)
#: The line where a poll of the wait sleeps (its count marks where each poll ends).
SLEEP_LINE = _WAIT_FIRST_LINE + next(n for n, line in enumerate(_WAIT_SOURCE)
                                     if "time.sleep(POLL_SECONDS)" in line)
STALE_HOLDERS = 5  # records of processes long gone: naming the holder reads them all


class SignalAtLine:
    """A trace function counting the lines the waiting code executes; at line ``at`` it
    sends this process a SIGTERM. ``polls``: the line counts at which a poll slept."""

    def __init__(self, at: int | None = None) -> None:
        self.at = at
        self.lines = 0
        self.polls: list[int] = []

    def __call__(self, frame: FrameType, event: str, arg: Any) -> Any:
        return self.line if frame.f_code.co_filename in WAITING_CODE else None

    def line(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            self.lines += 1
            if frame.f_code.co_name == "_wait_turn" and frame.f_lineno == SLEEP_LINE:
                self.polls.append(self.lines)
            if self.lines == self.at:
                os.kill(os.getpid(), signal.SIGTERM)
        return self.line


@pytest.fixture
def held(sandbox: Sandbox) -> Iterator[Sandbox]:
    """custom:shared held by this process (as another run would hold it), named in its
    holder record among stale ones."""
    directory = sandbox.run_dir / "locks"
    directory.mkdir(parents=True)
    fd = os.open(directory / "custom--shared.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    for pid in (os.getpid(), *range(990001, 990001 + STALE_HOLDERS)):
        (directory / f"custom--shared.{pid}.holder").write_text(json.dumps(
            {"resource": "custom:shared", "job": "holder", "run_id": 1, "pid": pid,
             "since": 0, "write": True}))
    try:
        yield sandbox
    finally:
        os.close(fd)


@pytest.fixture
def outside_signals() -> Iterator[list[int]]:
    """A SIGTERM that lands outside the run's own handling is counted, not fatal."""
    landed: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: landed.append(signum))
    try:
        yield landed
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_once(sandbox: Sandbox, tracer: SignalAtLine) -> Any:
    config = load(sandbox.write(f"""
        [jobs.waiter]
        kind = "command"
        argv = ["touch", "{sandbox.root}/waiter.ran"]
        writes = ["custom:shared"]
        busy_timeout = "1s"
        """))
    sys.settrace(tracer)
    try:
        return run_job(config, "waiter", Trigger.TIMER)
    finally:
        sys.settrace(None)


def test_a_sigterm_at_any_line_of_a_wait_ends_the_run_before_its_work(
        held: Sandbox, outside_signals: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "POLL_SECONDS", 0.01)
    counting = SignalAtLine()
    unsignalled = wait_once(held, counting)
    assert unsignalled.outcome is Outcome.SKIPPED  # it waited its second out: the lock is held
    assert len(counting.polls) >= 3, counting.polls
    first_poll, third_poll = counting.polls[0], counting.polls[2]
    # Every line up to the first poll's sleep (the whole first look at the line and the
    # locks, naming the holder), then every fifth line of the next two polls.
    points = [*range(1, first_poll + 1), *range(first_poll + 1, third_poll + 1, 5)]
    assert len(points) > 100
    wrong = []
    for at in points:
        report = wait_once(held, SignalAtLine(at))
        ran = (held.root / "waiter.ran").exists()
        left = sorted(p.name for p in (held.run_dir / "locks" / "queue").iterdir())
        if (report.outcome is not Outcome.INTERRUPTED or report.exit_code != ExitCode.INTERRUPTED
                or ran or left):
            wrong.append(f"line {at}: {report.outcome} ({report.message}); ran: {ran}; "
                         f"tickets left: {left}")
    assert outside_signals == []
    assert wrong == []
    history = History.open(held.state)
    outcomes = [run.outcome for run in history.runs("waiter", limit=len(points) + 1)]
    history.close()
    assert outcomes == [Outcome.INTERRUPTED] * len(points) + [Outcome.SKIPPED]
