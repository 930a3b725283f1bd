"""The ``drill`` kind: a restore drill, on a schedule.

Restores a random sample of files from the latest archive into a temporary directory
and compares each with its source where the source's size and mtime are unchanged
since the archive (see :func:`phobos.repos.drill.drill`). Any mismatch fails the run; the
stats record files checked, mismatches, skipped files and bytes read.

Resources: ``repo:<name>`` shared (Borg's list and extract take its shared lock), and
shared locks on what the compared sources read (holding areas, storage), so a pull
does not rewrite a holding folder under the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phobos.config.checks import positive
from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.config.schema import Problems, setting
from phobos.core.locks import Resource
from phobos.core.runner import RunContext
from phobos.repos.borg_locks import guarded
from phobos.repos.drill import drill, drill_failure
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
        return (*repo_resources(config, self.repo, write=False),
                *source_resources(config, sources))

    def check_refs(self, config: Config, path: tuple[str, ...], problems: Problems) -> None:
        repo_problems(config, self.repo, (*path, "repo"), problems)
        if self.archives_of is not None and not self.archive_jobs(config):
            problems.add((*path, "archives_of"), f"{self.archives_of!r} is not an archive "
                         f"job of repo {self.repo}")


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
    repo = Repo.open(ctx.config, job.repo)
    ctx.stats["repo"] = job.repo
    report = drill(repo, guarded(ctx.run, repo, ctx.log), sample=job.sample,
                   max_bytes=job.max_bytes, glob=archives_glob(ctx.config, job.archives_of))
    ctx.stats.update(report.as_stats())
    ctx.log(f"drill of {report.archive}: {report.files_checked} files compared, "
            f"{len(report.mismatches)} mismatches, {report.skipped_changed} changed and "
            f"{report.skipped_missing} missing at the source (skipped), "
            f"{report.bytes_read} bytes restored")
    error = drill_failure(report)
    if error is not None:
        raise error
