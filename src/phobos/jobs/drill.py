"""The ``drill`` kind: a restore drill, on a schedule.

Restores a random sample of files from the latest archive into a temporary directory
and compares each with its source where the source's size and mtime are unchanged
since the archive (see :func:`phobos.repos.drill.drill`). Any mismatch fails the run; the
stats record files checked, mismatches, skipped files and bytes read.

With ``from_drive``, the drill reads the repository's copy on that off-site drive
instead, so the off-site strand is proven, not assumed: the drive is unlocked and
mounted read-only inside the backup namespace, the copy read as a relocated repository
(:meth:`phobos.repos.repo.Repo.copy_at`), and the drive unmounted and locked again
however the drill ends; its result is kept for ``phobos drive list``. Without the drive
plugged in the run is skipped.

Resources: ``repo:<name>`` shared (Borg's list and extract take its shared lock) or,
from a drive, ``drive:<name>``; and shared locks on what the compared sources read
(holding areas, storage), so a pull does not rewrite a holding folder under the
comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phobos.config.checks import check_ref, positive
from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.config.schema import Problems, setting
from phobos.core import locks
from phobos.core.locks import Resource
from phobos.core.proc import StepRunner
from phobos.core.runner import RunContext
from phobos.drives.attach import mounted_readonly
from phobos.drives.contents import copied_repo, copiers_of
from phobos.drives.identity import get
from phobos.drives.state import record_drill
from phobos.repos.borg_locks import guarded
from phobos.repos.drill import DrillReport, drill, drill_failure
from phobos.repos.repo import Repo, repo_problems
from phobos.repos.resources import repo_resources, source_resources


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillJob(JobBase):
    repo: str = setting(doc="The repository (a [repos.NAME] table).")
    archives_of: str | None = setting(None, doc="Drill the latest archive of this archive "
                                      "job (default: the latest archive of the repo).")
    sample: int = setting(20, check=positive, doc="How many files to restore and compare.")
    max_bytes: int = setting(256 * 1024 * 1024, check=positive,
                             doc="At most this many bytes restored per drill.")
    from_drive: str | None = setting(None, doc="Drill the repository's copy on this "
                                     "off-site drive (a [drives.NAME] table a drive-sync "
                                     "job copies the repo to), mounted read-only for the "
                                     "drill; skipped while the drive is not plugged in.")

    def archive_jobs(self, config: Config) -> list[tuple[str, JobBase]]:
        from phobos.jobs.archive import ArchiveJob

        return [(name, job) for name, job in config.jobs.items()
                if isinstance(job, ArchiveJob) and job.repo == self.repo
                and self.archives_of in (None, name)]

    def resources(self, config: Config) -> tuple[Resource, ...]:
        from phobos.jobs.archive import ArchiveJob

        sources: list[Path] = []
        for _, job in self.archive_jobs(config):
            assert isinstance(job, ArchiveJob)
            sources.extend(job.sources)
        reads = ([locks.drive(self.from_drive)] if self.from_drive is not None
                 else repo_resources(config, self.repo, write=False))
        return (*reads, *source_resources(config, sources))

    def check_refs(self, config: Config, path: tuple[str, ...], problems: Problems) -> None:
        repo_problems(config, self.repo, (*path, "repo"), problems)
        if self.archives_of is not None and not self.archive_jobs(config):
            problems.add((*path, "archives_of"), f"{self.archives_of!r} is not an archive "
                         f"job of repo {self.repo}")
        if self.from_drive is not None:
            check_ref(problems, (*path, "from_drive"), "drive", self.from_drive, config.drives)
            copied = {job.repo for job in copiers_of(config, self.from_drive).values()}
            if self.from_drive in config.drives and self.repo not in copied:
                problems.add((*path, "from_drive"), f"no drive-sync job copies repo "
                             f"{self.repo} to drive {self.from_drive}")


CONFIG = DrillJob


def archives_glob(config: Config, job_name: str | None) -> str | None:
    """The glob of an archive job's archive names (None: every archive)."""
    from phobos.jobs.archive import ArchiveJob, archive_glob

    if job_name is None:
        return None
    job = config.jobs[job_name]
    assert isinstance(job, ArchiveJob)
    return archive_glob(job_name, job.archive_name)


def execute(ctx: RunContext) -> None:
    job = ctx.job
    assert isinstance(job, DrillJob)
    ctx.stats["repo"] = job.repo
    if job.from_drive is None:
        repo = Repo.open(ctx.config, job.repo)
        report = _drill(ctx, job, repo, guarded(ctx.run, repo, ctx.log))
    else:
        report = _drill_drive(ctx, job, job.from_drive)
    ctx.log(f"drill of {report.archive}: {report.files_checked} files compared, "
            f"{len(report.mismatches)} mismatches, {report.skipped_changed} changed and "
            f"{report.skipped_missing} missing at the source (skipped), "
            f"{report.bytes_read} bytes restored")
    error = drill_failure(report)
    if error is not None:
        raise error


def _drill(ctx: RunContext, job: DrillJob, repo: Repo, run: StepRunner) -> DrillReport:
    report = drill(repo, run, sample=job.sample, max_bytes=job.max_bytes,
                   glob=archives_glob(ctx.config, job.archives_of))
    ctx.stats.update(report.as_stats())
    return report


def _drill_drive(ctx: RunContext, job: DrillJob, name: str) -> DrillReport:
    """The drill of the copy on drive ``name``, mounted read-only for it."""
    drive = get(ctx.config, name)
    ctx.stats["drive"] = drive.name
    directory = copied_repo(ctx.config, drive.name, job.repo)[1]
    with mounted_readonly(ctx.config, drive, ctx.log) as mountpoint:
        copy = Repo.copy_at(ctx.config, job.repo, mountpoint / directory,
                            ctx.config.paths.state / "borg-copies" / drive.name)
        ctx.log(f"drilling the copy of repo {job.repo} on drive {drive.name}: {copy.config.path}")
        report = _drill(ctx, job, copy, ctx.run)
    record_drill(ctx.config, drive.name, job=ctx.name, run_id=ctx.run_id,
                 stats=report.as_stats())
    ctx.drive = drive.name  # unmounted and locked: safe to remove
    return report
