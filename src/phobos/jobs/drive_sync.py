"""The ``drive-sync`` kind: the off-site strand of the original setup.

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
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from phobos import namespace
from phobos.config.checks import check_ref
from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.config.schema import Problems, setting
from phobos.config.tables import RepoConfig
from phobos.core import locks
from phobos.core.locks import Resource
from phobos.core.proc import StepRunner, direct_runner
from phobos.core.runner import RunContext
from phobos.core.step import Step
from phobos.drives.attach import attach, release
from phobos.drives.contents import HOLDING_DIR, repo_target
from phobos.drives.devices import locate
from phobos.drives.identity import Drive, get
from phobos.drives.state import record_sync
from phobos.errors import Absent, PhobosError, StepFailed, UsageError
from phobos.tools import borg as borgtool
from phobos.tools import borg_repository, rsync
from phobos.tools import mount as mnt
from phobos.tools.rsync import Entry

REPO_EXCLUDES = tuple(f"--exclude=/{name}" for name in borg_repository.LOCK_FILES)


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
        found = [locks.drive(name) for name in self.drives]
        found.append(locks.repo(self.repo, write=False))
        if self.holding:
            found += [locks.holding(host, write=False) for host in config.hosts]
        return tuple(found)

    def check_refs(self, config: Config, path: tuple[str, ...], problems: Problems) -> None:
        check_ref(problems, (*path, "repo"), "repo", self.repo, config.repos)
        if self.repo in config.repos and config.repos[self.repo].path is None:
            problems.add((*path, "repo"), f"repository {self.repo} is on a server (`url`): "
                         "a drive sync copies a repository on this machine")
        for index, name in enumerate(self.drives):
            check_ref(problems, (*path, "drives", f"[{index}]"), "drive", name, config.drives)


CONFIG = DriveSyncJob


# --- planning (pure) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Copy:
    """One tree copied to the drive: its step, and where the copy lands."""

    what: str
    source: Path
    dest: Path
    step: Step


def explain_copy(code: int) -> str:
    """What the exit ``code`` of ``borg with-lock REPO rsync ...`` means: rsync's, passed
    on by Borg, except that Borg's own failure (a lock timeout) is 2 as well."""
    meaning = rsync.explain_mirror(code)
    return f"{meaning}, or a Borg error such as a lock timeout" if code == 2 else meaning


def plan(job: DriveSyncJob, config: Config, mountpoint: Path, *,
         progress: bool = False) -> list[Copy]:
    """The copies for one drive mounted at ``mountpoint``; with ``progress`` each copy
    reports its progress.

    Each copy runs in the drive's root (``cwd``) and writes to a path relative to it: if
    the drive's filesystem vanishes mid-copy (unmounted under it), the copy goes on into
    that detached filesystem or fails, and never fills the bare mount point on the NAS."""
    repo = config.repos[job.repo]
    assert repo.path is not None  # check_refs: a repository on this machine
    target = repo_target(job, config)
    mirror = rsync.mirror_argv(repo.path, f"./{target}", (*REPO_EXCLUDES, *job.rsync_options),
                               progress=progress)
    reader = rsync.progress_reader if progress else None
    copies = [Copy(what=f"repo {job.repo}", source=repo.path, dest=mountpoint / target,
                   # Waits up to the repo's lock_wait for Borg's lock: phobos's own locks
                   # already keep phobos's Borg jobs away.
                   step=Step(name="copy-repo",
                             argv=borgtool.with_lock_argv(repo.path, repo.lock_wait, mirror),
                             env=borgtool.base_env(repo.base_dir), capture=True,
                             cwd=str(mountpoint), explain=explain_copy, progress=reader))]
    if job.holding:
        holding = config.storage.holding
        copies.append(Copy(
            what="holding area", source=holding, dest=mountpoint / HOLDING_DIR,
            step=Step(name="copy-holding",
                      argv=rsync.mirror_argv(holding, f"./{HOLDING_DIR}", job.rsync_options,
                                             progress=progress),
                      capture=True, cwd=str(mountpoint), warn_codes=rsync.WARN_CODES,
                      explain=rsync.explain_mirror, progress=reader)))
    return copies


# --- verification (pure but for the walk) -----------------------------------------------------


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


def require_member(job: JobBase, name: str, drive: str) -> None:
    """UsageError unless ``job`` is a drive-sync job that rotates ``drive``."""
    if not isinstance(job, DriveSyncJob):
        raise UsageError(f"job {name} is a {job.kind} job: only drive-sync jobs sync a drive",
                         "leave out --drive")
    if drive not in job.drives:
        raise UsageError(f"drive {drive} is not one of job {name}'s drives "
                         f"({', '.join(job.drives)})", "see `phobos drive list`")


def execute(ctx: RunContext) -> None:
    """Sync every drive of the job that is present, or only ``ctx.only_drive`` (the one
    plugged in: its twin, if it happens to be in too, waits for its own turn)."""
    job = ctx.job
    assert isinstance(job, DriveSyncJob)
    namespace.require_inside(ctx.config)
    names = job.drives if ctx.only_drive is None else (ctx.only_drive,)
    present = [(drive, device) for drive in (get(ctx.config, n) for n in names)
               if (device := locate(drive.uuid)) is not None]
    if not present:
        if ctx.only_drive is not None:
            raise Absent(f"drive {ctx.only_drive} is not plugged in (any more)",
                         "plug it in again, or see `phobos drive list`")
        raise Absent(f"none of this job's drives ({', '.join(job.drives)}) is plugged in",
                     "plug one in (that starts the job), or see `phobos drive list`")
    _require_repo(ctx.config.repos[job.repo], job.repo)
    for drive, device in present:
        sync_drive(ctx, job, drive, device)
        ctx.drive = drive.name  # the LED turns green for it: safe to remove


def _require_repo(repo: RepoConfig, name: str) -> None:
    if repo.path is None or not (repo.path / "config").is_file():
        raise PhobosError(f"repo {name}: {repo.path} is not a Borg repository",
                          "check [repos] path, and that the storage is mounted in the "
                          "namespace (`phobos ns status`)")


def sync_drive(ctx: RunContext, job: DriveSyncJob, drive: Drive, device: str) -> None:
    """One drive, start to end; the drive is released whatever happens."""
    ctx.log(f"drive {drive.name} (UUID {drive.uuid}) is {device}")
    cleanup = direct_runner(ctx.log)
    leftover = release(drive, cleanup, ctx.log)  # a dead run's, or `drive mount`'s
    if leftover:
        ctx.log("released what an earlier session left: " + "; ".join(leftover))
    try:
        mountpoint = attach(drive, device, ctx.run, readonly=False)
        stats = copy_and_verify(ctx, job, mountpoint)
        record_sync(ctx.config, drive, job=ctx.name, run_id=ctx.run_id, stats=stats)
        release(drive, ctx.run, ctx.log)
    except BaseException:
        with ctx.stop.held():
            _release_after_failure(ctx, drive, cleanup)
        raise
    ctx.stats.setdefault("drives", {})[drive.name] = stats
    ctx.log(f"drive {drive.name}: {stats['files']} files, {stats['bytes']} bytes verified; "
            "unmounted and locked: safe to remove")


def copy_and_verify(ctx: RunContext, job: DriveSyncJob, mountpoint: Path) -> dict[str, Any]:
    """Copy every tree, flush the drive, then check each copy against its listing."""
    copies = plan(job, ctx.config, mountpoint, progress=ctx.tool_progress)
    listings = []
    stats: dict[str, Any] = {"files": 0, "bytes": 0, "copied_bytes": 0, "copy_seconds": 0.0}
    for copy in copies:
        copy.dest.parent.mkdir(parents=True, exist_ok=True)
        result = ctx.run(copy.step)
        listing = rsync.parse_listing(result.stdout)
        listings.append((copy, listing))
        files = [e for e in listing.values() if e.kind == "f"]
        stats["files"] += len(files)
        stats["bytes"] += sum(e.size for e in files)
        stats["copied_bytes"] += rsync.copied_bytes(result.stdout)
        stats["copy_seconds"] += result.duration
    ctx.run(Step(name="flush", argv=mnt.sync_fs(mountpoint)))
    if mnt.mounted_at(mnt.read_mountinfo(), mountpoint) is None:
        raise StepFailed(f"the drive's filesystem disappeared from {mountpoint} during the "
                         "sync (unplugged, or unmounted by someone): the copy is incomplete",
                         "plug the drive in again: the next sync completes the copy")
    for copy, listing in listings:
        verify(copy, listing)
        ctx.log(f"verified the {copy.what}: {len(listing)} entries match")
    return stats


def _release_after_failure(ctx: RunContext, drive: Drive, cleanup: StepRunner) -> None:
    ctx.log(f"cleaning up drive {drive.name} after the failure")
    try:
        done = release(drive, cleanup, ctx.log)
        ctx.log("; ".join(done) or "nothing was left mounted or unlocked")
    except Exception as exc:  # the job's own error is what must be reported
        ctx.log(f"cleanup failed: {exc}; run `phobos drive release {drive.name}`")
