"""Waiting out Borg's own locks held outside phobos (a ``borg`` run by hand, another
host): phobos's resource locks already order phobos's own runs, so a Borg step first
waits here, naming the holder, and then gets the ``--lock-wait`` that is left."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from phobos.core import proc
from phobos.core.locks import holders as phobos_holders
from phobos.core.model import format_duration
from phobos.core.proc import Log, StepRunner
from phobos.core.step import Step
from phobos.errors import Interrupted, PhobosError, StepFailed
from phobos.repos.remote import diagnosed
from phobos.repos.repo import Repo
from phobos.tools import borg as borgtool
from phobos.tools import borg_repository


def _blocking(holders: Iterable[borg_repository.LockHolder],
              exclusive: bool) -> list[borg_repository.LockHolder]:
    # A holder on another host may be alive: only Borg on that host could tell.
    return [h for h in holders if h.alive is not False and h.pid != os.getpid()
            and (exclusive or h.exclusive)]


def wait_for_borg_locks(repo: Repo, *, exclusive: bool, log: Log,
                        poll: float = 0.2) -> int:
    """Wait while a live process outside phobos holds Borg's lock on the repository or
    its cache (phobos's own lock keeps other phobos runs out), naming the holder.

    Returns the ``--lock-wait`` for the next Borg command: what is left of
    ``lock_wait``, or :data:`~phobos.tools.borg.STALE_LOCK_WAIT` when only stale locks
    remain, because Borg sleeps a tenth of --lock-wait (up to a minute) after
    removing one. Gives up waiting when ``lock_wait`` has passed and lets Borg fail,
    which explains its lock error with the holder.
    """
    path = repo.local_path
    if path is None:  # a server's locks are out of sight: Borg waits for them itself
        return max(1, round(repo.config.lock_wait))
    places = [path, borg_repository.cache_dir(path, repo.config.base_dir)]
    deadline = time.monotonic() + repo.config.lock_wait
    next_report = 0.0
    while True:
        holders = [h for place in places if place for h in borg_repository.lock_holders(place)]
        live = _blocking(holders, exclusive)
        if not live or time.monotonic() >= deadline:
            break
        if time.monotonic() >= next_report:
            for holder in live:
                log(f"{path} is locked {_whose(holder, repo.lock_dir)}: "
                    f"{holder.describe()}; waiting up to "
                    f"{format_duration(deadline - time.monotonic())}")
            next_report = time.monotonic() + 60.0
        time.sleep(poll)
    stale = [h for h in holders if h.alive is False]
    for holder in stale:
        log(f"{path}: {holder.describe()}")
    if stale and not live:
        return borgtool.STALE_LOCK_WAIT
    return max(1, round(deadline - time.monotonic()))


def _ancestors(pid: int) -> Iterator[int]:
    while pid > 1:
        yield pid
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4: the parent's PID


def _whose(holder: borg_repository.LockHolder, lock_dir: Path | None) -> str:
    """"by job NAME (...)" when a phobos run started the holder (a drive sync's
    ``borg with-lock``), else "outside phobos"."""
    if holder.local and lock_dir is not None:
        runs = {h.pid: h for h in phobos_holders(lock_dir)}
        for pid in _ancestors(holder.pid):
            if pid in runs:
                return f"by {runs[pid].describe()}"
    return "outside phobos"


def guarded(run: StepRunner, repo: Repo, log: Log) -> StepRunner:
    """``run``, but each Borg step first waits out outside Borg locks (see
    :func:`wait_for_borg_locks`) and gets the fitting ``--lock-wait``; when one fails or
    is stopped, a lock its dead Borg left behind (it can, dying on a full disk or stopped
    while it commits) is broken at once. For a repository over SSH, a step that failed
    because SSH did raises that typed error instead (:func:`phobos.repos.remote.diagnosed`);
    its locks are the server's."""
    if repo.endpoint is not None:
        return diagnosed(run, repo.endpoint)

    def guarded_run(step: Step) -> proc.Result:
        if "--lock-wait" in step.argv:
            wait = wait_for_borg_locks(repo, exclusive=borgtool.needs_exclusive(step.argv),
                                       log=log)
            step = dataclasses.replace(step, argv=tuple(borgtool.with_lock_wait(step.argv,
                                                                                wait)))
        try:
            return run(step)
        except (StepFailed, Interrupted):  # its Borg is gone: a lock it left is stale
            for line in break_stale_locks(repo, proc.direct_runner(announce=False)):
                log(line)
            raise

    return guarded_run


def break_stale_locks(repo: Repo, run: StepRunner) -> list[str]:
    """``borg break-lock`` when every holder of the repository's or its cache's lock is
    a dead process on this host (Borg itself would remove them only when it next runs);
    nothing otherwise (nor for a repository on a server: its locks are the server's).
    Returns what was done, for the log and the alert."""
    if repo.config.path is None:
        return []
    places = [repo.config.path, borg_repository.cache_dir(repo.config.path, repo.config.base_dir)]
    holders = [h for place in places if place for h in borg_repository.lock_holders(place)]
    if not holders or any(h.alive is not False for h in holders):
        return []
    pids = ", ".join(sorted({str(h.pid) for h in holders}))
    try:
        run(repo.step("break-lock", borgtool.break_lock_argv(repo.borg, repo.access)))
    except PhobosError as exc:
        return [f"Borg's stale lock in {repo.config.path} (pid {pids}) could not be broken: "
                f"{exc.message}"]
    return [f"broke Borg's stale lock in {repo.config.path} (pid {pids})"]
