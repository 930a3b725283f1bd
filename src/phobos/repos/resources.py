"""The lock resources a repository job takes: ``repo:NAME`` for the repository, shared
``holding:HOST`` and ``storage`` for what its sources read, and the repository lock a CLI
operation takes (waiting politely, naming the job that has it and when it should end)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from phobos.config.model import Config
from phobos.core import locks
from phobos.core.locks import LockSet, Resource
from phobos.core.model import BusyPolicy, format_duration
from phobos.errors import Busy, PhobosError
from phobos.repos.remote import link_of


def _within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def source_resources(config: Config, sources: Iterable[Path]) -> list[Resource]:
    """Read locks for what ``sources`` read: ``holding:<host>`` for each pulled host
    whose holding folder is (inside) a source, and ``storage`` if anything lies on it.

    ``storage`` is taken shared by every Borg job touching the storage, so that a job
    that must have the storage to itself (``writes = ["storage"]``: a filesystem check,
    swapping the device) excludes them all; shared locks never exclude each other.
    """
    holding = config.storage.holding
    found: list[Resource] = []
    for source in sources:
        for host in config.hosts:
            folder = holding / host
            if _within(folder, source) or _within(source, folder):
                found.append(locks.holding(host, write=False))
        if _within(source, config.storage.root) or _within(config.storage.root, source):
            found.append(locks.storage(write=False))
    return found


def repo_resources(config: Config, name: str, *, write: bool) -> list[Resource]:
    """``repo:<name>`` (exclusive for anything that takes Borg's exclusive lock) and
    ``storage`` (shared) if the repository lives on the backup storage; for one over
    SSH, ``net:<link>`` instead, taken as the repository is: writers (create, prune,
    check) take turns on the link, readers share it."""
    found = [locks.repo(name, write=write)]
    repo = config.repos.get(name)
    if repo is None:
        return found
    link = link_of(repo)
    if link is not None:
        found.append(locks.net(link, write=write))
    elif repo.path is not None and _within(repo.path, config.storage.root):
        found.append(locks.storage(write=False))
    return found


@contextlib.contextmanager
def cli_lock(config: Config, name: str, *, write: bool, what: str, wait: bool | None = None,
             tell: Callable[[str], None] | None = None) -> Iterator[None]:
    """Take the repository's phobos lock for a CLI operation.

    When a job has it: with ``wait``, tell the person (``tell``) which job it is and when
    it should end, and wait for it (up to the repository's ``lock_wait``, repeating the
    news every minute); otherwise fail at once with that message (exit 3), rather than
    leaving Borg waiting behind the job. ``wait`` None: the operation cannot wait (False:
    it could, but was asked not to with ``--no-wait``). The link of a repository over
    SSH is not taken: a person's look at one repository must not wait for a job sending
    another one's data over the same link.
    """
    lock_set = LockSet(config.paths.run / "locks", f"cli: repo {what}", 0)
    resources = [r for r in repo_resources(config, name, write=write) if r.kind != locks.NET]
    try:
        lock_set.acquire(resources, BusyPolicy.FAIL, 0.0)
    except Busy as exc:
        message = busy_message(config, name, resources, exc.message)
        if not wait:
            raise Busy(message, "run it again when that has finished" + (
                ", or without --no-wait to wait for it" if wait is False
                else " (`phobos status` shows how far it is)")) from None
        if tell is not None:
            tell(f"{message}; waiting for it (Ctrl-C to give up)")
        lock_wait = config.repos[name].lock_wait
        try:
            lock_set.acquire(resources, BusyPolicy.WAIT, lock_wait,
                             on_wait=_news(config, name, resources, tell))
        except Busy as exc:
            raise Busy(f"gave up after {format_duration(lock_wait)} ([repos.{name}] "
                       f"lock_wait): {busy_message(config, name, resources, exc.message)}",
                       "run it again when that has finished") from None
    try:
        yield
    finally:
        lock_set.release()


def _news(config: Config, name: str, resources: list[Resource],
          tell: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """What a waiting person is told every minute (the first report, at once, was
    already given)."""
    if tell is None:
        return None
    reports = 0

    def report(line: str) -> None:
        nonlocal reports
        reports += 1
        if reports > 1:
            tell(f"still waiting: {busy_message(config, name, resources, line)}")

    return report


def busy_message(config: Config, name: str, resources: list[Resource], reason: str) -> str:
    """``repo main is in use by job nightly (run 42, step create, ...), expected to
    finish at 03:14 (in 3m05s)``: who holds a lock among ``resources`` that keeps us
    out, and until when; the lock's own ``reason`` when nobody holds one (a run waiting
    in line ahead of us)."""
    import time

    from phobos.core.history import History
    from phobos.schedule.running import describe_holder

    ours = {r.name: r.write for r in locks.merge(resources)}
    found: dict[int, locks.Holder] = {}
    try:
        every = locks.holders(config.paths.run / "locks")
    except PhobosError:  # /proc/locks hidden: the holder cannot be named
        every = []
    for holder in every:
        if holder.resource in ours and (holder.write or ours[holder.resource]):
            found.setdefault(holder.pid, holder)
    if not found:
        return f"repo {name}: {reason}"
    history = History.open(config.paths.state)
    try:
        now = time.time()
        who = "; ".join(describe_holder(config, history, h, now) for h in found.values())
    finally:
        history.close()
    return f"repo {name} is in use by {who}"
