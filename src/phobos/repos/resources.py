"""The lock resources a repository job takes: ``repo:NAME`` for the repository, shared
``holding:HOST`` and ``storage`` for what its sources read, and the repository lock a CLI
operation takes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from phobos.config.model import Config
from phobos.core import locks
from phobos.core.locks import Resource, locked
from phobos.core.model import BusyPolicy


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
    ``storage`` (shared) if the repository lives on the backup storage."""
    found = [locks.repo(name, write=write)]
    repo = config.repos.get(name)
    if repo is not None and _within(repo.path, config.storage.root):
        found.append(locks.storage(write=False))
    return found


@contextlib.contextmanager
def cli_lock(config: Config, name: str, *, write: bool, what: str) -> Iterator[None]:
    """Take the repository's phobos lock for a CLI operation; fail at once (naming the
    holder) if a job has it, rather than leaving Borg waiting for up to lock_wait."""
    with locked(config.paths.run / "locks", f"cli: repo {what}", 0,
                repo_resources(config, name, write=write), BusyPolicy.FAIL, 0.0):
        yield
