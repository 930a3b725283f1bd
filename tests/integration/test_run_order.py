"""Real `phobos run` processes in line for a lock: they get it in the order they came
(flock alone would not say), a reader does not pass a writer ahead of it, a run waiting
in line or for its predecessor stops at once on SIGTERM and leaves no ticket, and a
killed waiter's ticket does not hold anyone up."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from conftest import Sandbox

JOBS = """
[jobs.hold]
kind = "command"
argv = ["sh", "-c", "touch {root}/hold.started; sleep {hold}"]
writes = ["custom:r"]
{waiters}
[jobs.reader]
kind = "command"
argv = ["sleep", "0.2"]
reads = ["custom:r"]

[jobs.after-hold]
kind = "command"
argv = ["true"]
after = ["hold"]
"""

WAITER = """
[jobs.w{n}]
kind = "command"
argv = ["sleep", "0.2"]
writes = ["custom:r"]
"""


def setup(sandbox: Sandbox, hold: float = 6.0, waiters: int = 4) -> None:
    sandbox.write(JOBS.format(root=sandbox.root, hold=hold,
                              waiters="".join(WAITER.format(n=n) for n in range(1, 1 + waiters))))


def wait_until(check: object, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def tickets(sandbox: Sandbox) -> list[str]:
    queue = sandbox.run_dir / "locks" / "queue"
    return sorted(p.name for p in queue.glob("*.ticket")) if queue.is_dir() else []


def history(sandbox: Sandbox) -> dict[str, dict[str, object]]:
    out = sandbox.phobos("history", "--json", "--limit", "50")
    assert out.returncode == 0, out.stderr
    return {run["job"]: run for run in json.loads(out.stdout)["runs"]}


def start_in_line(sandbox: Sandbox, name: str) -> subprocess.Popen[str]:
    """Start `phobos run NAME` and return once it has taken its ticket."""
    before = len(tickets(sandbox))
    child = sandbox.start("run", name)
    wait_until(lambda: len(tickets(sandbox)) > before, what=f"{name}'s ticket")
    return child


def test_waiters_get_the_lock_in_the_order_they_came(sandbox: Sandbox) -> None:
    setup(sandbox)
    holder = sandbox.start("run", "hold")
    wait_until(lambda: (sandbox.root / "hold.started").exists(), what="hold")
    # The last writer comes first in the file's order and by name: only arrival counts.
    order = ["w3", "w1", "reader", "w4", "w2"]
    children = [start_in_line(sandbox, name) for name in order]
    line = json.loads(sandbox.phobos("locks", "--json").stdout)["line"]
    assert [t["job"] for t in line] == ["hold", *order]
    assert [t["holding"] for t in line] == [True] + [False] * len(order)
    shown = sandbox.phobos("locks").stdout
    assert "In line, first first:" in shown and "custom:r (read)" in shown
    assert holder.wait(60) == 0
    for child in children:
        assert child.wait(60) == 0, child.communicate()
    runs = history(sandbox)
    locked = sorted(order, key=lambda name: float(runs[name]["locked"]))  # type: ignore[arg-type]
    assert locked == order
    assert float(runs["reader"]["locked"]) >= float(runs["w1"]["ended"])  # type: ignore[arg-type]
    assert tickets(sandbox) == []


def test_sigterm_in_line_or_waiting_for_a_predecessor_stops_at_once(sandbox: Sandbox
                                                                     ) -> None:
    setup(sandbox, hold=30.0, waiters=1)
    holder = sandbox.start("run", "hold")
    wait_until(lambda: (sandbox.root / "hold.started").exists(), what="hold")
    in_line = start_in_line(sandbox, "w1")
    after = start_in_line(sandbox, "after-hold")  # waits for hold's run to finish
    time.sleep(0.5)
    for child in (in_line, after):
        assert child.poll() is None
        child.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert child.wait(10) == 4
        assert time.monotonic() - started < 3
    _, err = after.communicate()
    assert "waiting for hold to finish first" in err
    assert len(tickets(sandbox)) == 1  # only the holder's
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(10) == 4
    runs = history(sandbox)
    assert {runs[n]["outcome"] for n in ("w1", "after-hold", "hold")} == {"interrupted"}
    assert tickets(sandbox) == []


def test_a_killed_waiter_does_not_hold_up_the_line(sandbox: Sandbox) -> None:
    setup(sandbox, hold=2.0, waiters=2)
    holder = sandbox.start("run", "hold")
    wait_until(lambda: (sandbox.root / "hold.started").exists(), what="hold")
    victim = start_in_line(sandbox, "w1")
    behind = start_in_line(sandbox, "w2")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    assert holder.wait(60) == 0
    assert behind.wait(60) == 0
    assert history(sandbox)["w2"]["outcome"] == "success"
    assert tickets(sandbox) == []  # the dead one was removed by the first to look
    assert not list(Path(sandbox.run_dir / "locks" / "queue").glob(".*.tmp"))
