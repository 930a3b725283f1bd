"""What a drive holds: which drive-sync jobs copy to it, and where each copy lands on it.

The drive-sync kind (:mod:`phobos.jobs.drive_sync`) builds on this package; this package
sees its jobs only through :class:`DriveCopier`, the few settings that say what lands on
a drive, so that nothing here imports the job module.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from phobos.config.model import Config
from phobos.core.model import JobKind
from phobos.errors import UsageError

#: The directory on a drive that holds the copy of the holding area.
HOLDING_DIR = "holding"


@runtime_checkable
class DriveCopier(Protocol):
    """The settings of a job that copies to drives (a ``drive-sync`` job)."""

    @property
    def repo(self) -> str:
        """The repository copied."""
        ...

    @property
    def drives(self) -> tuple[str, ...]:
        """The drives it rotates through."""
        ...

    @property
    def holding(self) -> bool:
        """Whether the holding area is copied too (to :data:`HOLDING_DIR`)."""
        ...

    @property
    def target(self) -> str | None:
        """The repository copy's directory on the drive, if not the default."""
        ...


def copiers(config: Config) -> dict[str, DriveCopier]:
    """Every drive-sync job of ``config`` by name, in name order."""
    return {name: job for name, job in sorted(config.jobs.items())
            if job.kind == JobKind.DRIVE_SYNC and isinstance(job, DriveCopier)}


def copiers_of(config: Config, drive: str) -> dict[str, DriveCopier]:
    """The drive-sync jobs that copy to ``drive``, by name, in name order."""
    return {name: job for name, job in copiers(config).items() if drive in job.drives}


def repo_target(job: DriveCopier, config: Config) -> str:
    """Where on the drive ``job`` puts its repository copy: ``target``, or by default
    the repository directory's name (``borg`` for ``/backup/borg``)."""
    local = config.repos[job.repo].path  # drive-sync's check_refs refuses a remote repo
    return job.target or (local.name if local is not None else job.repo)


def copied_repo(config: Config, drive: str, repo: str | None) -> tuple[str, str]:
    """(repository, its directory on the drive) of the copy of ``repo`` on ``drive``;
    without ``repo``, of the one repository copied there. UsageError if none is (or,
    without ``repo``, several are)."""
    targets = {job.repo: repo_target(job, config) for job in copiers_of(config, drive).values()}
    if repo is not None and repo in targets:
        return repo, targets[repo]
    if repo is None and len(targets) == 1:
        return next(iter(targets.items()))
    if not targets:
        raise UsageError(f"no drive-sync job copies a repository to drive {drive}",
                         "list the drive in a drive-sync job's `drives`")
    names = ", ".join(sorted(targets))
    if repo is None:
        raise UsageError(f"drive {drive} holds copies of several repositories: {names}",
                         "pick one with --repo")
    raise UsageError(f"drive {drive} holds no copy of repository {repo} (it has: {names})",
                     "see `phobos drive sheet " + drive + "`")
