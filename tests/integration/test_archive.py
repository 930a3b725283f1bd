"""The archive kind on a real repository: create with stats, prune per policy (only the
job's own archives), compact, two jobs on one repo serialized by phobos, SIGKILL during
create, and a Borg lock held outside phobos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from borgbox import BorgBox, initialized, make_tree, wait_for

from phobos.tools import borg_repository

# Borg integration: every test runs with the venv's Borg 1.4 and Debian's 1.2.
pytestmark = pytest.mark.usefixtures("each_borg")


def test_create_records_stats(sandbox: Any, each_borg: tuple[int, ...]) -> None:
    box = initialized(sandbox)
    box.ok("run", "nightly")
    run = box.last_run("nightly")
    stats = run["stats"]
    assert run["outcome"] == "success"
    assert stats["nfiles"] == 40
    if each_borg >= (1, 4):
        assert stats["original_size"] == 40 * 20_000
    else:  # Borg 1.2 counts the archive's item metadata too (a few hundred bytes here)
        assert 40 * 20_000 < stats["original_size"] < 40 * 20_000 + 4096
    assert stats["compressed_size"] > 0 and stats["deduplicated_size"] > 0
    assert stats["duration"] >= 0 and stats["repo"] == "main"
    assert box.archives() == [stats["archive"]]
    status = json.loads(box.ok("status", "--json").stdout)["jobs"]
    assert status[0]["last"]["stats"]["nfiles"] == 40


# Archives made before the run, with their timestamps (all at 03:00).
PAST = ["2025-01-15", "2025-02-10", "2025-02-20", "2025-03-01", "2025-03-05", "2025-03-06",
        "2025-03-07"]


def test_prune_keeps_what_the_policy_says_and_only_this_jobs_archives(sandbox: Any) -> None:
    box = initialized(sandbox)
    box.write(f"""\
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/src"]
        keep = {{ daily = 3, weekly = 2, monthly = 2 }}
        """)
    src = str(box.root / "src")
    for day in PAST:
        box.borg("create", "--timestamp", f"{day}T03:00:00",
                 f"{box.repo}::nightly-{day}T03:00:00", src)
    # Another job's archives on the same repo, one with a name sharing the prefix.
    box.borg("create", "--timestamp", "2025-03-07T03:00:00",
             f"{box.repo}::nightly-2-2025-03-07T03:00:00", src)
    box.borg("create", "--timestamp", "2025-01-01T03:00:00", f"{box.repo}::other-2025-01-01", src)
    box.ok("run", "nightly")
    run = box.last_run("nightly")
    now_archive = run["stats"]["archive"]
    # daily: now, 03-07, 03-06; weekly: 03-01 (W09), 02-20 (W08); monthly: 01-15.
    kept = {f"nightly-{d}T03:00:00" for d in
            ("2025-01-15", "2025-02-20", "2025-03-01", "2025-03-06", "2025-03-07")}
    assert set(box.archives()) == kept | {now_archive, "nightly-2-2025-03-07T03:00:00",
                                          "other-2025-01-01"}
    assert run["stats"]["pruned"] == 2
    assert run["stats"]["compact_freed"] is not None
    steps = json.loads(box.ok("log", str(run["id"]), "--json").stdout)["steps"]
    assert [s["name"] for s in steps] == ["create", "prune", "compact"]


def test_compact_frees_space_after_prune(sandbox: Any) -> None:
    box = initialized(sandbox)
    box.write(f"""\
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/src"]
        keep = {{ last = 1 }}
        """)
    box.ok("run", "nightly")
    for path in (box.root / "src").rglob("*.bin"):  # all new content: the old is garbage
        path.write_bytes(os.urandom(20_000))
    before = sum(f.stat().st_size for f in (box.repo / "data").rglob("*") if f.is_file())
    box.ok("run", "nightly")
    after = sum(f.stat().st_size for f in (box.repo / "data").rglob("*") if f.is_file())
    run = box.last_run("nightly")
    assert run["stats"]["pruned"] == 1 and len(box.archives()) == 1
    assert run["stats"]["compact_freed"] >= 700_000
    assert after < before + 400_000  # the old archive's 800 kB went away


def _two_jobs(box: BorgBox) -> None:
    make_tree(box.root / "big", files=8, size=25_000_000, seed=7)  # 200 MB: a few seconds
    make_tree(box.root / "small", files=10, size=10_000, seed=8)
    box.write(f"""\
        [jobs.big]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/big"]
        keep = {{ daily = 7 }}

        [jobs.small]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/small"]
        keep = {{ daily = 7 }}
        """, repo_extra='lock_wait = "1s"')  # Borg's own default: it would time out


def test_two_archive_jobs_on_one_repo_are_serialized_by_phobos(sandbox: Any) -> None:
    box = BorgBox(sandbox)
    _two_jobs(box)
    box.ok("repo", "init", "main")
    first = sandbox.start("run", "big")
    wait_for(lambda: (box.repo / "lock.roster").exists(), what="big's borg create")
    second = sandbox.start("run", "small")
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    big, small = box.last_run("big"), box.last_run("small")
    assert big["outcome"] == small["outcome"] == "success"
    assert "waiting for repo:main" in box.log_text(small["id"])
    assert small["locked"] >= big["ended"] - 0.5  # small's work began after big's ended
    archives = box.archives()
    assert len(archives) == 2 and {a.split("-")[0] for a in archives} == {"big", "small"}


def test_sigkill_during_create_then_next_run_and_check_are_clean(sandbox: Any) -> None:
    box = initialized(sandbox)
    make_tree(box.root / "src" / "bulk", files=12, size=25_000_000, seed=3)  # 300 MB
    proc = sandbox.start("run", "nightly")
    wait_for(lambda: any(h.exclusive for h in borg_repository.lock_holders(box.repo)),
             what="borg create holding its lock")
    borg_pid = borg_repository.lock_holders(box.repo)[0].pid
    time.sleep(0.7)  # mid-way through the ~2 s create
    assert proc.poll() is None
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    wait_for(lambda: not Path(f"/proc/{borg_pid}").exists(), timeout=30,
             what="borg to die with phobos (PR_SET_PDEATHSIG)")
    box.ok("run", "nightly")
    killed, latest = json.loads(box.ok("history", "nightly", "--json").stdout)["runs"][::-1]
    assert killed["outcome"] == "interrupted" and latest["outcome"] == "success"
    assert latest["duration"] < 30  # the stale lock cost a second, not Borg's minute-long nap
    # The next phobos to start broke the dead Borg's lock (phobos.reconcile), before the run.
    assert "broke Borg's stale lock" in box.log_text(killed["id"])
    assert box.archives() == [latest["stats"]["archive"]]  # nothing half-made committed
    check = box.borg("check", str(box.repo), check=False)
    assert check.returncode == 0, check.stderr


def _hold_borg_lock(box: BorgBox, seconds: float) -> subprocess.Popen[str]:
    """An outside ``borg with-lock`` holding the repository for ``seconds`` (in a session
    of its own: killing its group ends the sleep too)."""
    env = {**os.environ, "BORG_PASSPHRASE": "unused", "BORG_BASE_DIR": str(box.root / "b2")}
    holder = subprocess.Popen(["borg", "with-lock", str(box.repo), "sleep", str(seconds)],
                              env=env, text=True, start_new_session=True)
    wait_for(lambda: (box.repo / "lock.roster").exists(), what="the outside borg lock")
    return holder


def test_outside_borg_lock_is_waited_for_and_named(sandbox: Any) -> None:
    box = initialized(sandbox)
    holder = _hold_borg_lock(box, 3)
    started = time.monotonic()
    box.ok("run", "nightly")
    assert time.monotonic() - started >= 1.5  # borg waited (lock_wait is a day)
    holder.wait(timeout=30)
    log = box.log_text(box.last_run("nightly")["id"])
    assert f"exclusive Borg lock of pid {holder.pid} on this host (borg with-lock" in log


def test_outside_borg_lock_timeout_names_the_holder(sandbox: Any,
                                                    each_borg: tuple[int, ...]) -> None:
    box = initialized(sandbox)
    box.write(f"""\
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/src"]
        """, repo_extra='lock_wait = "1s"')
    # Held far longer than the run takes even on a loaded machine, then let go: the
    # message can only name a holder that still holds the lock when Borg gives up.
    holder = _hold_borg_lock(box, 120)
    try:
        result = box.phobos("run", "nightly")
    finally:
        os.killpg(holder.pid, signal.SIGTERM)  # Borg and its sleep
        holder.wait(timeout=30)
    assert result.returncode == 1, result.stderr
    message = box.last_run("nightly")["message"]
    if each_borg >= (1, 4):
        assert "exit code 73 (timed out waiting for the repository lock" in message
    else:  # Borg 1.2 exits 2 for every error; its own line says it was the lock
        assert "exit code 2 (error: " in message and "(timeout)" in message
    assert f"pid {holder.pid}" in message


def test_a_missing_source_fails_the_run_unless_missing_ok(sandbox: Any) -> None:
    box = initialized(sandbox)
    gone = box.root / "gone"
    box.write(f"""\
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/src", "{gone}"]
        """)
    done = box.phobos("run", "nightly")
    assert done.returncode == 1, done.stderr
    run = box.last_run("nightly")
    assert run["outcome"] == "failed"
    assert run["message"].startswith(f"source {gone} does not exist: it would not be backed up")
    assert box.archives() == []  # nothing half-done: Borg never ran
    box.write(f"""\
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/src", "{gone}"]
        missing_ok = true
        """)
    box.ok("run", "nightly")
    run = box.last_run("nightly")
    assert run["outcome"] == "success" and run["stats"]["nfiles"] == 40
    assert f"missing_ok: leaving out {gone} (does not exist)" in box.log_text(run["id"])
