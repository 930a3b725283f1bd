"""The ``drive-sync`` kind: the seed's third strand.

When one of the job's drives is plugged in (``phobos drive attached``) or the job is run
by hand, for each of its drives that is present: unlock it, mount it inside the backup
namespace, copy the Borg repository with ``borg with-lock REPO rsync -a --delete`` (and
optionally the holding area with plain rsync), flush the drive, verify the copy (file
list and sizes), record the sync for rotation, unmount and lock. On any failure or
interruption the drive is unmounted and locked before the error is reported.

Why the verification list comes from rsync itself: ``borg with-lock`` commits a
transaction after its command ends, so the repository differs from the copy as soon as
the lock is released. ``-ii`` makes rsync print every file it considered (changed or
not) with its size, *while the lock is held*: exactly the state the copy must match.
Borg's lock files are excluded: they mean nothing on another machine and would need a
``borg break-lock`` there before the copy could be used.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from phobos import namespace
from phobos.config.model import Config, JobBase, RepoConfig
from phobos.config.schema import Problems, setting, suggest
from phobos.core.locks import Resource
from phobos.core.runner import RunContext
from phobos.core.step import Step
from phobos.drives import drive as drives
from phobos.drives.drive import Drive
from phobos.errors import Absent, PhobosError, StepFailed
from phobos.tools import borg as borgtool
from phobos.tools import mount as mnt

LIST_FORMAT = "%i|%l|%n"
REPO_EXCLUDES = ("--exclude=/lock.exclusive", "--exclude=/lock.roster")
RSYNC_VANISHED = 24


def _nonempty(names: tuple[str, ...]) -> str | None:
    return None if names else "list at least one drive, e.g. [\"ext-a\", \"ext-b\"]"


def _relative(target: str | None) -> str | None:
    if target is None:
        return None
    path = PurePosixPath(target)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return f"{target!r} must be a relative directory on the drive, without '..'"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class DriveSyncJob(JobBase):
    repo: str = setting(doc="The Borg repository copied to the drive ([repos.NAME]).")
    drives: tuple[str, ...] = setting(doc="The drives this job rotates through; plugging "
                                      "any of them in runs it.", check=_nonempty)
    holding: bool = setting(False, doc="Also copy the holding area ([storage] holding) to "
                            "`holding/` on the drive.")
    target: str | None = setting(None, check=_relative,
                                 doc="Directory on the drive for the repository copy "
                                 "(default: the repository directory's name, e.g. `borg`).")
    rsync_options: tuple[str, ...] = setting((), doc="Extra rsync options, e.g. "
                                             "`[\"--max-alloc=4GiB\"]`.")

    def resources(self, config: Config) -> tuple[Resource, ...]:
        # The copy only reads the repo; `borg with-lock` keeps Borg's own writers out too.
        found = [Resource(f"drive:{name}", write=True) for name in self.drives]
        found.append(Resource(f"repo:{self.repo}", write=False))
        if self.holding:
            found += [Resource(f"holding:{host}", write=False) for host in config.hosts]
        return tuple(found)

    def check_refs(self, config: Config, path: tuple[str, ...], problems: Problems) -> None:
        if self.repo not in config.repos:
            problems.add((*path, "repo"), f"no repo named {self.repo!r}"
                         + (suggest(self.repo, config.repos) or f" (define [repos.{self.repo}])"))
        for index, name in enumerate(self.drives):
            if name not in config.drives:
                problems.add((*path, "drives", f"[{index}]"), f"no drive named {name!r}"
                             + (suggest(name, config.drives) or f" (define [drives.{name}])"))


CONFIG = DriveSyncJob


# --- planning (pure) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Copy:
    """One tree copied to the drive: its step, and where the copy lands."""

    what: str
    source: Path
    dest: Path
    step: Step


def repo_target(job: DriveSyncJob, config: Config) -> str:
    return job.target or config.repos[job.repo].path.name


def rsync_argv(source: Path, dest: Path, options: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Mirror ``source`` into ``dest``, listing every file considered with its size."""
    return ("rsync", "-a", "--delete", "--delete-excluded", "-ii",
            f"--out-format={LIST_FORMAT}", *options, f"{source}/", f"{dest}/")


def with_lock_argv(repo: RepoConfig, command: tuple[str, ...]) -> tuple[str, ...]:
    """``command`` under Borg's exclusive repository lock, waiting as long as the repo's
    ``lock_wait`` (phobos's own locks already keep phobos's Borg jobs away)."""
    return ("borg", "with-lock", "--lock-wait", str(int(repo.lock_wait)), str(repo.path),
            *command)


def borg_env(repo: RepoConfig) -> dict[str, str]:
    env = {"BORG_HOST_ID": borgtool.host_id()}  # see host_id: stale locks must be seen
    if repo.base_dir:
        env["BORG_BASE_DIR"] = str(repo.base_dir)
    return env


_RSYNC_EXITS = {
    1: "syntax or usage error", 2: "protocol incompatibility, or a Borg error such as a lock "
    "timeout", 3: "errors selecting input/output files", 11: "file I/O error (drive full?)",
    12: "error in the data stream", 20: "interrupted", 23: "partial transfer due to errors",
    24: "some source files vanished", 30: "timeout in data send/receive",
}


def explain(code: int) -> str:
    return _RSYNC_EXITS.get(code, "")


def plan(job: DriveSyncJob, config: Config, mountpoint: Path) -> list[Copy]:
    """The copies for one drive mounted at ``mountpoint``."""
    repo = config.repos[job.repo]
    dest = mountpoint / repo_target(job, config)
    rsync = rsync_argv(repo.path, dest, (*REPO_EXCLUDES, *job.rsync_options))
    copies = [Copy(what=f"repo {job.repo}", source=repo.path, dest=dest,
                   step=Step(name="copy-repo", argv=with_lock_argv(repo, rsync),
                             env=borg_env(repo), capture=True, explain=explain))]
    if job.holding:
        holding = config.storage.holding
        copies.append(Copy(
            what="holding area", source=holding, dest=mountpoint / "holding",
            step=Step(name="copy-holding",
                      argv=rsync_argv(holding, mountpoint / "holding", job.rsync_options),
                      capture=True, warn_codes=(RSYNC_VANISHED,), explain=explain)))
    return copies


# --- verification (pure but for the walk) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str  # rsync's type letter: f file, d directory, L symlink, D device, S special
    size: int


_ESCAPE = re.compile(r"\\#([0-7]{3})")


def parse_listing(text: str) -> dict[str, Entry]:
    """``%i|%l|%n`` lines of rsync ``-ii`` into relative path -> entry (``.`` is the top).
    Deletions (``*deleting``) and anything else are skipped."""
    entries: dict[str, Entry] = {}
    for line in text.splitlines():
        item, sep, rest = line.partition("|")
        size, sep2, name = rest.partition("|")
        if not (sep and sep2) or len(item) != 11 or item.startswith("*"):
            continue
        try:
            length = int(size)
        except ValueError:
            continue
        name = _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), name).rstrip("/")
        entries[os.path.normpath(name or ".")] = Entry(item[1], length)
    return entries


def scan(top: Path) -> dict[str, Entry]:
    """The same view of a tree on disk (symlinks not followed)."""
    found = {".": Entry("d", 0)}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in (*dirnames, *filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            found[os.path.relpath(full, top)] = Entry(_kind(st.st_mode), st.st_size)
    return found


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISLNK(mode):
        return "L"
    return "D" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "S"


def differences(expected: dict[str, Entry], found: dict[str, Entry]) -> list[str]:
    """Readable differences between the listing and the copy (empty: they match)."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = sorted(name for name in set(expected) & set(found)
                   if expected[name].kind != found[name].kind
                   or (expected[name].kind != "d" and expected[name].size != found[name].size))
    problems = []
    for label, names in (("missing on the drive", missing), ("unexpected on the drive", extra),
                         ("different type or size", wrong)):
        if names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            problems.append(f"{len(names)} {label} ({shown})")
    return problems


def verify(copy: Copy, listing: dict[str, Entry]) -> None:
    problems = differences(listing, scan(copy.dest))
    if problems:
        raise StepFailed(f"verify: the copy of the {copy.what} at {copy.dest} does not match "
                         f"what rsync listed: {'; '.join(problems)}",
                         "the drive may be failing: check `dmesg`, then plug it in again")


# --- execution --------------------------------------------------------------------------------


def execute(ctx: RunContext) -> None:
    job = ctx.job
    assert isinstance(job, DriveSyncJob)
    namespace.require_inside(ctx.config)
    present = [(drive, device) for drive in (drives.get(ctx.config, n) for n in job.drives)
               if (device := drives.locate(drive.uuid)) is not None]
    if not present:
        raise Absent(f"none of this job's drives ({', '.join(job.drives)}) is plugged in",
                     "plug one in (that starts the job), or see `phobos drive list`")
    _require_repo(ctx.config.repos[job.repo], job.repo)
    for drive, device in present:
        sync_drive(ctx, job, drive, device)
        ctx.drive = drive.name  # the LED turns green for it: safe to remove


def _require_repo(repo: RepoConfig, name: str) -> None:
    if not (repo.path / "config").is_file():
        raise PhobosError(f"repo {name}: {repo.path} is not a Borg repository",
                          "check [repos] path, and that the storage is mounted in the "
                          "namespace (`phobos ns status`)")


def sync_drive(ctx: RunContext, job: DriveSyncJob, drive: Drive, device: str) -> None:
    """One drive, start to end; the drive is released whatever happens."""
    ctx.log(f"drive {drive.name} (UUID {drive.uuid}) is {device}")
    cleanup = namespace.direct_runner(ctx.log)
    leftover = drives.release(drive, cleanup, ctx.log)  # a dead run's, or `drive mount`'s
    if leftover:
        ctx.log("released what an earlier session left: " + "; ".join(leftover))
    try:
        mountpoint = drives.attach(drive, device, ctx.run, readonly=False)
        stats = copy_and_verify(ctx, job, mountpoint)
        drives.record_sync(ctx.config, drive, job=ctx.name, run_id=ctx.run_id, stats=stats)
        drives.release(drive, ctx.run, ctx.log)
    except BaseException:
        _release_after_failure(ctx, drive, cleanup)
        raise
    ctx.stats.setdefault("drives", {})[drive.name] = stats
    ctx.log(f"drive {drive.name}: {stats['files']} files, {stats['bytes']} bytes verified; "
            "unmounted and locked: safe to remove")


def copy_and_verify(ctx: RunContext, job: DriveSyncJob, mountpoint: Path) -> dict[str, Any]:
    """Copy every tree, flush the drive, then check each copy against its listing."""
    copies = plan(job, ctx.config, mountpoint)
    listings = []
    stats: dict[str, Any] = {"files": 0, "bytes": 0, "copied_bytes": 0, "copy_seconds": 0.0}
    for copy in copies:
        copy.dest.parent.mkdir(parents=True, exist_ok=True)
        result = ctx.run(copy.step)
        listing = parse_listing(result.stdout)
        listings.append((copy, listing))
        files = [e for e in listing.values() if e.kind == "f"]
        stats["files"] += len(files)
        stats["bytes"] += sum(e.size for e in files)
        stats["copied_bytes"] += _copied_bytes(result.stdout)
        stats["copy_seconds"] += result.duration
    ctx.run(Step(name="flush", argv=mnt.sync_fs(mountpoint)))
    for copy, listing in listings:
        verify(copy, listing)
        ctx.log(f"verified the {copy.what}: {len(listing)} entries match")
    return stats


def _copied_bytes(text: str) -> int:
    """Bytes of files rsync transferred (itemized with '>' in the first column)."""
    total = 0
    for line in text.splitlines():
        item, _, rest = line.partition("|")
        if item.startswith(">f"):
            size = rest.partition("|")[0]
            total += int(size) if size.isdigit() else 0
    return total


def _release_after_failure(ctx: RunContext, drive: Drive, cleanup: namespace.StepRunner) -> None:
    ctx.log(f"cleaning up drive {drive.name} after the failure")
    try:
        done = drives.release(drive, cleanup, ctx.log)
        ctx.log("; ".join(done) or "nothing was left mounted or unlocked")
    except Exception as exc:  # the job's own error is what must be reported
        ctx.log(f"cleanup failed: {exc}; run `phobos drive release {drive.name}`")
