"""Waiting out Borg locks held outside phobos before a Borg step (repos.guarded)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from phobos.config.schema import Duration
from phobos.config.tables import RepoConfig
from phobos.core.step import Step
from phobos.repos.borg_locks import guarded, wait_for_borg_locks
from phobos.repos.repo import Repo
from phobos.tools import borg as b
from phobos.tools import borg_repository

BORG14 = b.Borg(path="/usr/bin/borg", version=(1, 4, 5))
NODE = borg_repository.host_id()  # "this host" as phobos tells Borg to name it


def repo(tmp_path: Path, lock_wait: float = 60.0) -> Repo:
    cfg = RepoConfig(path=tmp_path / "repo", lock_wait=Duration(lock_wait),
                     base_dir=tmp_path / "base")
    (tmp_path / "repo").mkdir(exist_ok=True)
    return Repo(name="main", config=cfg, borg=BORG14,
                access=b.access(BORG14, cfg.path, lock_wait=lock_wait))


def lock(place: Path, pid: int, kind: str = "exclusive") -> None:
    place.mkdir(parents=True, exist_ok=True)
    (place / "lock.roster").write_text(json.dumps({kind: [[NODE, pid, 0]]}))


def test_no_lock_gives_the_whole_lock_wait(tmp_path: Path) -> None:
    lines: list[str] = []
    assert wait_for_borg_locks(repo(tmp_path), exclusive=True, log=lines.append) == 60
    assert lines == []


def test_stale_locks_get_a_short_lock_wait(tmp_path: Path) -> None:
    r = repo(tmp_path)
    (r.config.path / "config").write_text("[repository]\nid = feed\n")
    dead = 2**22 + 4321
    lock(tmp_path / "base" / ".cache" / "borg" / "feed", dead)  # the cache's lock
    lines: list[str] = []
    assert wait_for_borg_locks(r, exclusive=True, log=lines.append) == b.STALE_LOCK_WAIT
    assert len(lines) == 1 and "stale" in lines[0] and f"pid {dead}" in lines[0]


def test_live_outside_lock_is_waited_for_then_given_up(tmp_path: Path) -> None:
    r = repo(tmp_path, lock_wait=0.6)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        while b"sleep" not in Path(f"/proc/{sleeper.pid}/cmdline").read_bytes():
            time.sleep(0.01)  # exec has not happened yet
        lock(r.config.path, sleeper.pid)
        lines: list[str] = []
        started = time.monotonic()
        assert wait_for_borg_locks(r, exclusive=True, log=lines.append, poll=0.05) == 1
        assert time.monotonic() - started >= 0.5
        assert f"locked outside phobos: exclusive Borg lock of pid {sleeper.pid}" in lines[0]
        assert "(sleep 30)" in lines[0]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_shared_holder_blocks_only_exclusive_steps(tmp_path: Path) -> None:
    r = repo(tmp_path, lock_wait=0.3)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        lock(r.config.path, sleeper.pid, kind="shared")
        seen: list[Step] = []

        def run(step: Step) -> object:
            seen.append(step)
            return None

        guarded(run, r, lambda _: None)(r.step("list", b.list_argv(BORG14, r.access)))  # type: ignore[arg-type]
        assert seen[-1].argv[2:4] == ("--lock-wait", "1")  # 0.3 s rounds to Borg's minimum
        assert wait_for_borg_locks(r, exclusive=False, log=lambda _: None) >= 0
        started = time.monotonic()
        wait_for_borg_locks(r, exclusive=True, log=lambda _: None, poll=0.05)
        assert time.monotonic() - started >= 0.25
    finally:
        sleeper.kill()
        sleeper.wait()


def test_borg_lock_of_a_phobos_jobs_child_names_the_job(tmp_path: Path) -> None:
    import dataclasses

    from phobos.core.locks import LockSet, Resource
    from phobos.core.model import BusyPolicy

    r = dataclasses.replace(repo(tmp_path, lock_wait=0.2), lock_dir=tmp_path / "locks")
    job_locks = LockSet(tmp_path / "locks", "offsite", 7)  # this process plays the job
    job_locks.acquire([Resource("repo:main", write=False)], BusyPolicy.FAIL, 0)
    sleeper = subprocess.Popen(["sleep", "30"])  # its child plays `borg with-lock`
    try:
        lock(r.config.path, sleeper.pid)
        lines: list[str] = []
        wait_for_borg_locks(r, exclusive=False, log=lines.append, poll=0.05)
        assert "is locked by job offsite (run 7, pid" in lines[0]
    finally:
        sleeper.kill()
        sleeper.wait()
        job_locks.release()
