"""``phobos restore``: one path (a file or a directory, as the person knows it) from an
archive into a directory, keeping its path below it: ``/etc/fstab`` lands in
``DIR/etc/fstab``, ``luv:/etc/fstab`` in ``DIR/luv/etc/fstab`` (see
:mod:`phobos.repos.layout`).

The archive is the newest one holding the path, or the newest made at or before
``--at``, or the one named; the catalog (:mod:`phobos.repos.catalog`) answers which
archives hold the path, and an archive it has not seen yet is listed into it on the
way. Borg extracts into a staging directory inside DIR and the result is moved into
place (:mod:`phobos.repos.placing`: nothing is ever written outside DIR, no symbolic
link is followed, an existing path is replaced only with ``overwrite``).

From the repository: the restore holds ``repo:NAME`` as a reader (it waits while a
job writes the repository) and waits out Borg locks held outside phobos. From a drive
(``drive``): it holds ``drive:NAME``, unlocks and mounts the drive read-only inside the
backup namespace, reads the copy there (see :meth:`phobos.repos.repo.Repo.copy_at`)
and unmounts and locks the drive again however the restore ends.

Every restore is a run in history: job ``restore:REPO``, kind ``restore``
(:mod:`phobos.core.operation`), with what was restored from where in its stats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from phobos import namespace
from phobos.config.model import Config
from phobos.core import locks
from phobos.core.locks import locked
from phobos.core.model import BusyPolicy, parse_duration
from phobos.core.operation import Echo, Operation, recorded
from phobos.core.proc import Log, StepRunner, direct_runner
from phobos.drives.attach import mounted_readonly
from phobos.drives.contents import copied_repo
from phobos.drives.identity import get
from phobos.errors import PhobosError, UsageError
from phobos.repos.borg_locks import guarded
from phobos.repos.catalog import Catalog, Row, slots_of
from phobos.repos.find import list_archives
from phobos.repos.layout import KnownPath, Layout
from phobos.repos.placing import Anchor, check_target, place, staging
from phobos.repos.repo import Repo
from phobos.repos.resources import repo_resources
from phobos.tools import borg as borgtool
from phobos.tools.borg_contents import TYPE_WORDS, parse_repository_id, prefix_pattern

REPO_WAIT = 6 * 3600.0  # how long a restore waits for a job writing the repository
Runner = Callable[[Log], StepRunner]  # a step runner, given where the output goes
PROGRESS_EVERY = 1.0
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``--at``: ``2026-11-29`` (the end of that day), ``2026-11-29 03:00``,
    ``2026-11-29T03:00:00``, or how long ago: ``3d``, ``12h``, ``2w``. Local time."""
    now = now or datetime.now()
    text = text.strip()
    if _DATE.match(text):
        return datetime.fromisoformat(text) + timedelta(days=1, microseconds=-1)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        raise UsageError(f"--at {text!r} is neither a time nor a duration",
                         "use 2026-11-29, '2026-11-29 03:00' or a time ago such as 3d"
                         ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreRequest:
    path: KnownPath
    target: Path  # absolute
    repo: str
    at: datetime | None = None
    archive: str | None = None
    drive: str | None = None
    overwrite: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreReport:
    """What was restored, from where, to where."""

    path: str
    destination: Path
    type: str
    repo: str
    drive: str | None
    archive: str
    time: str
    items: int
    bytes: int
    run_id: int

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "destination": str(self.destination),
                "type": TYPE_WORDS.get(self.type, self.type), "repo": self.repo,
                "drive": self.drive, "archive": self.archive, "time": self.time,
                "items": self.items, "bytes": self.bytes, "run_id": self.run_id}


def restore(config: Config, request: RestoreRequest, echo: Echo | None) -> RestoreReport:
    """Restore ``request.path`` below ``request.target`` (see the module doc)."""
    layout = Layout.of(config)
    relpath = layout.restored_path(request.path)
    destination = check_target(request.target, relpath, overwrite=request.overwrite)
    anchor = Anchor.of(request.target)
    with recorded(config, f"restore:{request.repo}", "restore", echo) as op:
        op.stats.update({"path": str(request.path), "to": str(request.target),
                         "repo": request.repo, "drive": request.drive})
        op.log(f"restoring {request.path} to {destination}"
               + (f" from drive {request.drive}" if request.drive else ""))
        with _source(config, request, op) as (repo, runner):
            anchor.check()
            chosen = _choose(config, repo, runner(op.log), op, request)
            items, size = _extract(config, repo, runner, op, request, chosen)
        op.stats.update({"archive": chosen.archive, "items": items, "bytes": size})
        op.record(f"restored {request.path} from archive {chosen.archive} "
                  f"({chosen.time[:19]}): {items} items in {destination}")
        return RestoreReport(path=str(request.path), destination=destination,
                             type=chosen.row.type, repo=request.repo, drive=request.drive,
                             archive=chosen.archive, time=chosen.time, items=items,
                             bytes=size, run_id=op.run_id)


@contextlib.contextmanager
def _source(config: Config, request: RestoreRequest, op: Operation
            ) -> Iterator[tuple[Repo, Runner]]:
    """The repository to read (held, mounted) and what makes runners for its steps,
    given where their output goes."""
    if request.drive is None:
        resources = repo_resources(config, request.repo, write=False)
        namespace.enter_for_job(config, resources, op.log)
        with locked(config.paths.run / "locks", f"restore:{request.repo}", op.run_id,
                    resources, BusyPolicy.WAIT, REPO_WAIT, on_wait=op.log):
            repo = Repo.open(config, request.repo)
            yield repo, lambda log: guarded(direct_runner(log, announce=False), repo, op.log)
        return
    drive = get(config, request.drive)
    with locked(config.paths.run / "locks", f"restore:{request.repo}", op.run_id,
                [locks.drive(drive.name)], BusyPolicy.FAIL, 0.0):
        namespace.enter(config, direct_runner(op.log))
        with mounted_readonly(config, drive, op.log) as mountpoint:
            copy = mountpoint / copied_repo(config, drive.name, request.repo)[1]
            if not (copy / "config").is_file():
                raise PhobosError(f"drive {drive.name} holds no Borg repository at {copy}",
                                  "has the drive ever been synced? see `phobos drive list`")
            repo = Repo.copy_at(config, request.repo, copy,
                                config.paths.state / "borg-copies" / drive.name)
            yield repo, lambda log: direct_runner(log, announce=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Chosen:
    archive: str
    time: str
    slot: int
    row: Row


def _choose(config: Config, repo: Repo, run: StepRunner, op: Operation,
            request: RestoreRequest) -> _Chosen:
    """The archive to restore from: the newest (at or before ``at``) holding the path,
    or the named one; archives the catalog has not seen are listed into it first."""
    archive_path = Layout.of(config).archive_path(request.path)
    catalog = Catalog.open(config.paths.state, repo.name)
    try:
        with catalog.refreshing():
            listing = run(repo.step("list", borgtool.list_argv(repo.borg, repo.access),
                                    capture=True)).stdout
            catalog.use_repository(parse_repository_id(listing))
            for archive in _candidates(borgtool.parse_archives(listing), request):
                chosen = _holding(catalog, repo, run, op, archive, archive_path)
                if chosen is not None:
                    return chosen
                if request.archive is not None:
                    raise UsageError(f"{request.path} is not in archive {request.archive}",
                                     f"`phobos find {request.path}` shows the archives "
                                     "holding it")
    finally:
        catalog.close()
    when = f" made at or before {request.at:%Y-%m-%d %H:%M}" if request.at else ""
    where = f" on drive {request.drive}" if request.drive else ""
    raise PhobosError(f"no archive{when} of repository {repo.name}{where} holds "
                      f"{request.path}", f"`phobos find {request.path}` shows where it is; "
                      "paths are as on the machine they came from (HOST:/path for a "
                      "pulled host)")


def _candidates(archives: list[dict[str, Any]], request: RestoreRequest
                ) -> list[dict[str, Any]]:
    if request.archive is not None:
        named = [a for a in archives if a["name"] == request.archive]
        if not named:
            raise UsageError(f"repository {request.repo} has no archive named "
                             f"{request.archive!r}" + (f" on drive {request.drive}"
                                                       if request.drive else ""),
                             f"see `phobos repo list {request.repo}`")
        return named
    ordered = sorted(archives, key=lambda a: a["time"], reverse=True)
    if request.at is None:
        return ordered
    return [a for a in ordered if datetime.fromisoformat(a["time"]) <= request.at]


def _holding(catalog: Catalog, repo: Repo, run: StepRunner, op: Operation,
             archive: dict[str, Any], archive_path: str) -> _Chosen | None:
    known = catalog.archives()
    if archive["id"] not in known:
        op.log(f"listing archive {archive['name']} into the catalog")
        list_archives(catalog, repo, run, op.log, [archive])
        known = catalog.archives()
    slot = known[archive["id"]].slot
    for row in catalog.versions_of(archive_path):
        if slot in slots_of(row.holders):
            return _Chosen(archive=archive["name"], time=archive["time"], slot=slot, row=row)
    return None


def _extract(config: Config, repo: Repo, runner: Runner, op: Operation,
             request: RestoreRequest, chosen: _Chosen) -> tuple[int, int]:
    """Borg extract into staging, then place; returns (items, bytes) restored."""
    layout = Layout.of(config)
    archive_path = layout.archive_path(request.path)
    relpath = layout.restored_path(request.path)
    catalog = Catalog.open(config.paths.state, repo.name)
    try:
        total, size = catalog.size_below(chosen.slot, archive_path)
    finally:
        catalog.close()
    progress = _Progress(op, relpath, total)
    argv = borgtool.extract_argv(repo.borg, repo.access, chosen.archive,
                                 [prefix_pattern(archive_path)] if archive_path else [],
                                 strip_components=layout.strip_components(request.path),
                                 list_items=True)
    with staging(request.target) as stage:
        op.log(f"borg extract of {archive_path or 'everything'} from {chosen.archive} "
               f"({total} items, {size} bytes)")
        # Borg's warnings (a file it could not write, exit 1 or 100-127) fail a restore:
        # a restore that left files out is not a restore.
        step = dataclasses.replace(repo.step("extract", argv, cwd=str(stage)), warn_codes=())
        runner(progress)(step)
        if not (stage / relpath).exists() and not (stage / relpath).is_symlink():
            raise PhobosError(f"Borg extracted nothing for {request.path} from "
                              f"{chosen.archive}", "see `phobos log " + str(op.run_id) + "`")
        place(stage, relpath, request.target)
    progress.finish()
    return progress.count, size


class _Progress:
    """Borg's ``--list`` lines (one per extracted item) as a progress line every
    second on the terminal; Borg's other messages go to the run's log."""

    def __init__(self, op: Operation, relpath: str, total: int) -> None:
        self.op, self.relpath, self.total = op, relpath, total
        self.count = 0
        self.last: float | None = None  # from the first item on: Borg's start is not progress

    def __call__(self, line: str) -> None:
        if line == self.relpath or line.startswith(self.relpath + "/") or not self.relpath:
            self.count += 1
            if self.last is None:
                self.last = time.monotonic()
            elif time.monotonic() - self.last >= PROGRESS_EVERY:
                self.last = time.monotonic()
                self.op.note(f"restoring: {self.count} of {self.total} items"
                             + (f" ({100 * self.count // self.total}%)" if self.total else ""))
            return
        self.op.log(line)

    def finish(self) -> None:
        self.op.note(f"restored {self.count} of {self.total} items")
