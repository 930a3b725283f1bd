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
    :func:`wait_for_borg_locks`) and gets the fitting ``--lock-wait``; for a repository
    over SSH, a step that failed because SSH did raises that typed error instead
    (:func:`phobos.repos.remote.diagnosed`)."""
    if repo.endpoint is not None:
        return diagnosed(run, repo.endpoint)

    def guarded_run(step: Step) -> proc.Result:
        if "--lock-wait" in step.argv:
            wait = wait_for_borg_locks(repo, exclusive=borgtool.needs_exclusive(step.argv),
                                       log=log)
            step = dataclasses.replace(step, argv=tuple(borgtool.with_lock_wait(step.argv,
                                                                                wait)))
        return run(step)

    return guarded_run
