"""Resource locks: the global order, holder records verified against the kernel, refusal
across processes, release on a failed acquire, shared locks in one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from phobos.core.locks import LockSet, Resource, holders, merge
from phobos.core.model import BusyPolicy
from phobos.errors import Busy


def test_merge_orders_globally_and_write_wins() -> None:
    merged = merge([Resource("repo:main", write=False), Resource("holding:luv"),
                    Resource("repo:main", write=True), Resource("drive:ext-a", write=False)])
    assert merged == [Resource("drive:ext-a", False), Resource("holding:luv", True),
                      Resource("repo:main", True)]


def test_holder_is_recorded_and_verified_against_the_kernel(tmp_path: Path) -> None:
    locks = LockSet(tmp_path, "nightly", 7)
    locks.acquire([Resource("repo:main")], BusyPolicy.FAIL, 1)
    [holder] = holders(tmp_path)
    assert (holder.job, holder.run_id, holder.pid, holder.write) == ("nightly", 7, os.getpid(),
                                                                     True)
    # A stale record (its process does not hold the lock) is ignored.
    (tmp_path / "repo--main.999999.holder").write_text(
        '{"resource": "repo:main", "job": "ghost", "run_id": 1, "pid": 999999, '
        '"since": 0, "write": true}')
    assert [h.job for h in holders(tmp_path)] == ["nightly"]
    locks.release()
    assert holders(tmp_path) == []


def test_second_writer_in_another_process_is_refused(tmp_path: Path) -> None:
    locks = LockSet(tmp_path, "a", 1)
    locks.acquire([Resource("storage")], BusyPolicy.FAIL, 1)
    code = ("import sys; from pathlib import Path; from phobos.core.locks import LockSet, Resource;"
            "from phobos.core.model import BusyPolicy; from phobos.errors import Busy\n"
            "try:\n LockSet(Path(sys.argv[1]), 'b', 2).acquire([Resource('storage')], "
            "BusyPolicy.FAIL, 1)\nexcept Busy as e:\n print(e.message); sys.exit(3)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True)
    assert out.returncode == 3
    assert out.stdout.startswith("storage is busy: held by job a (run 1, pid ")
    locks.release()


def test_failed_acquire_releases_what_it_took(tmp_path: Path) -> None:
    blocker = LockSet(tmp_path, "blocker", 1)
    blocker.acquire([Resource("zzz")], BusyPolicy.FAIL, 1)
    code = ("import sys; from pathlib import Path; from phobos.core.locks import LockSet, Resource;"
            "from phobos.core.model import BusyPolicy\n"
            "try:\n LockSet(Path(sys.argv[1]), 'b', 2).acquire([Resource('aaa'), "
            "Resource('zzz')], BusyPolicy.FAIL, 1)\nexcept Exception:\n sys.exit(3)")
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 3
    assert [h.resource for h in holders(tmp_path)] == ["zzz"]
    blocker.release()


def test_same_process_shared_locks_do_not_block(tmp_path: Path) -> None:
    first, second = LockSet(tmp_path, "r1", 1), LockSet(tmp_path, "r2", 2)
    first.acquire([Resource("holding:luv", write=False)], BusyPolicy.FAIL, 1)
    second.acquire([Resource("holding:luv", write=False)], BusyPolicy.FAIL, 1)
    third = LockSet(tmp_path, "w", 3)
    with pytest.raises(Busy):
        third.acquire([Resource("holding:luv", write=True)], BusyPolicy.FAIL, 1)
    first.release()
    second.release()
