"""A real `phobos daemon` process: jobs fire at their calendar times through
`phobos run --trigger daemon`, a missed slot is caught up once, SIGTERM interrupts
running jobs cleanly and they are recorded as interrupted."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from datetime import datetime, timedelta

from conftest import Sandbox, phobos_env

JOBS = """
[jobs.tick]
kind = "command"
argv = ["true"]
schedule = "*:*:0/2"

[jobs.long]
kind = "command"
argv = ["sh", "-c", "touch {root}/long.started; exec sleep 60"]
schedule = "*:*:0/3"

[jobs.daily]
kind = "command"
argv = ["true"]
schedule = "*-*-* 00:00:00"

[jobs.manual-only]
kind = "command"
argv = ["true"]
"""


def history(sandbox: Sandbox) -> list[dict[str, object]]:
    out = sandbox.phobos("history", "--json", "--limit", "100")
    assert out.returncode == 0, out.stderr
    runs: list[dict[str, object]] = json.loads(out.stdout)["runs"]
    return runs


def test_daemon_fires_catches_up_and_stops_cleanly(sandbox: Sandbox) -> None:
    sandbox.write(JOBS.format(root=sandbox.root))
    # The daemon last fired `daily` two days ago: today's 00:00 slot was missed.
    sandbox.state.mkdir(parents=True)
    two_days_ago = (datetime.now() - timedelta(days=2)).timestamp()
    (sandbox.state / "daemon.json").write_text(json.dumps({"fired": {"daily": two_days_ago}}))
    daemon = subprocess.Popen(sandbox.argv("daemon"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=phobos_env())
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = history(sandbox)
            ticks = [r for r in runs if r["job"] == "tick" and r["outcome"] == "success"]
            if len(ticks) >= 2 and (sandbox.root / "long.started").exists():
                break
            time.sleep(0.5)
        daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, output
    runs = history(sandbox)
    by_job: dict[str, list[dict[str, object]]] = {}
    for run in runs:
        by_job.setdefault(str(run["job"]), []).append(run)
    assert len([r for r in by_job["tick"] if r["outcome"] == "success"]) >= 2
    assert all(r["trigger"] == "daemon" for r in runs)
    assert [r["outcome"] for r in by_job["daily"]] == ["success"]  # caught up exactly once
    assert by_job["long"][0]["outcome"] == "interrupted"
    assert "manual-only" not in by_job
    # `long` at least; a `tick` may be running at that moment too (a loaded machine).
    stopping = re.search(r"stopping; interrupting (\d+) running job\(s\)", output)
    assert stopping is not None and int(stopping.group(1)) >= 1, output
    # Nothing of the daemon's children is left running.
    assert "running" not in {r["outcome"] for r in history(sandbox)}
