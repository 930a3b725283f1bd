"""`after` and the lock line under a booted systemd (Debian 12 in systemd-nspawn): four
timers elapse at the same second, each starting its own sandboxed `phobos run`; the
three chained jobs run one after another in their order and the conflicting job listed
after them waits for the whole chain, as `phobos schedule` predicts.

Needs root, systemd-nspawn, nsenter and mmdebstrap (scripts/setup installs them); it
fails, never skips, when they are missing.
"""

from __future__ import annotations

import itertools
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from nspawn import PHOBOS, Container, booted, wheelhouse

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.timeout(600)]

CONFIG = "/etc/phobos/phobos.toml"
ORDER = ["a1", "a2", "a3", "check"]


def _config() -> str:
    # Listed in reverse (a3 first), so only `after` can put the chain in order; check is
    # listed after the chain and fires with it, so it waits for all three.
    return textwrap.dedent("""\
        [jobs.a3]
        kind = "command"
        argv = ["sleep", "2"]
        writes = ["custom:repo"]
        schedule = "*:*:0/30"
        after = ["a2"]

        [jobs.a2]
        kind = "command"
        argv = ["sleep", "2"]
        writes = ["custom:repo"]
        schedule = "*:*:0/30"
        after = ["a1"]

        [jobs.a1]
        kind = "command"
        argv = ["sleep", "2"]
        writes = ["custom:repo"]
        schedule = "*:*:0/30"

        [jobs.check]
        kind = "command"
        argv = ["sleep", "1"]
        writes = ["custom:repo"]
        schedule = "*:*:0/30"
        """)


def _phobos(ct: Container, *args: str) -> Any:
    return ct.run([str(PHOBOS), "-c", CONFIG, *args])


def _first_round(ct: Container) -> dict[str, dict[str, Any]]:
    """The runs of the first slot in which all four jobs finished."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = json.loads(_phobos(ct, "history", "--json", "--limit", "50").stdout)["runs"]
        finished = [r for r in runs if r["ended"] is not None]
        slots: dict[int, dict[str, Any]] = {}
        for run in finished:
            slots.setdefault(int(run["started"]) // 30, {})[run["job"]] = run
        complete = [jobs for _, jobs in sorted(slots.items()) if set(jobs) == set(ORDER)]
        if complete:
            return complete[0]
        time.sleep(1)
    raise AssertionError(f"no slot with all of {ORDER} finished: {runs}")


def test_timers_firing_together_run_the_chain_in_order(tmp_path: Path) -> None:
    wheels = wheelhouse(tmp_path)
    with booted(binds=[(wheels, "/wheels")]) as ct:
        ct.install_phobos("/wheels")
        ct.path(CONFIG).parent.mkdir(parents=True)
        ct.path(CONFIG).write_text(_config())
        _phobos(ct, "systemd", "install")
        runs = _first_round(ct)
        ct.run(["systemctl", "stop", *(f"phobos-job-{job}.timer" for job in ORDER)])
    assert {r["trigger"] for r in runs.values()} == {"timer"}
    assert {r["outcome"] for r in runs.values()} == {"success"}
    by_start = sorted(ORDER, key=lambda job: float(runs[job]["locked"]))
    assert by_start == ORDER, {job: runs[job]["locked"] for job in ORDER}
    for before, after in itertools.pairwise(ORDER):
        assert float(runs[after]["locked"]) >= float(runs[before]["ended"]), (before, after)
