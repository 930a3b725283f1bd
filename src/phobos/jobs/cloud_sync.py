"""The ``cloud-sync`` kind: a copy of a local Borg repository on any rclone remote
(S3, B2, a Hetzner storage box over SFTP, WebDAV, ... or a mounted share).

One step: ``borg with-lock REPO sh -c 'rclone sync "$@" && rclone check "$@"'`` (see
:mod:`phobos.tools.rclone` for why sync and check share Borg's lock). The sync mirrors
the repository (Borg's lock files left out); the check compares every file by size and,
where both sides have a hash in common, by hash, and fails the run on any difference.
rclone's progress lines ("12 MiB / 40 MiB, 30%, 2 MiB/s, ETA 14s") become the run's live
progress (``phobos status``, bars on a terminal, a line a minute in the log); the stats
record bytes sent, files copied, deleted and verified, and how.

Credentials stay in rclone's own config file (``rclone_config``); their values are
redacted from the log. Resources: ``repo:<name>`` shared (writers, such as archive
jobs, wait; Borg's own lock keeps outside writers out), ``storage`` shared when the
repository is on it, and ``net:<link>`` exclusive: two bulk copies over one link take
turns. With ``max_age`` the copy counts as overdue when the job has not succeeded for
that long, schedule or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phobos.config.checks import check_ref, positive
from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.config.schema import Duration, Problems, setting
from phobos.core import locks
from phobos.core.locks import Resource
from phobos.core.runner import RunContext
from phobos.core.step import Step
from phobos.errors import PhobosError
from phobos.repos.resources import repo_resources
from phobos.schedule.summaries import size
from phobos.tools import borg as borgtool
from phobos.tools import rclone


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudSyncJob(JobBase):
    repo: str = setting(doc="The repository to copy: a [repos.NAME] on this machine "
                        "(with `path`).")
    remote: str = setting(check=rclone.remote_problem,
                          doc="Where the copy goes: `REMOTE:path` of a remote defined in "
                          "rclone's config file (`\"b2:my-bucket/phobos\"`), or an "
                          "absolute path (rclone's local backend, e.g. a mounted share).")
    rclone_config: Path | None = setting(None, doc="rclone's config file, with the "
                                         "remote and its credentials (mode 0600; default "
                                         "`KEYS/rclone.conf`; `rclone config --config "
                                         "FILE` writes it).")
    bwlimit: str | None = setting(None, doc="rclone `--bwlimit`: `\"5M\"` (bytes/s) or a "
                                  "timetable, `\"08:00,512k 23:00,off\"`.")
    transfers: int = setting(4, check=positive, doc="Files sent in parallel "
                             "(`--transfers`).")
    rclone_options: tuple[str, ...] = setting((), doc="More rclone options, used for both "
                                              "sync and check, e.g. `[\"--fast-list\"]`.")
    max_age: Duration | None = setting(Duration(8 * 86400.0), check=positive,
                                       doc="The copy is overdue when the job has not "
                                       "succeeded for this long (`phobos overdue`); "
                                       "unset: only a missed slot counts.")
    link: str | None = setting(None, doc="The network link the copy goes over "
                               "(resource `net:LINK`: copies over one link take turns); "
                               "default: the rclone remote's name.")

    def resources(self, config: Config) -> tuple[Resource, ...]:
        link = self.link or rclone.remote_name(self.remote)
        return (*repo_resources(config, self.repo, write=False),
                locks.net(link, write=True))

    def check_refs(self, config: Config, path: tuple[str, ...], problems: Problems) -> None:
        check_ref(problems, (*path, "repo"), "repo", self.repo, config.repos)
        if self.repo in config.repos and config.repos[self.repo].path is None:
            problems.add((*path, "repo"), f"repository {self.repo} is on a server (`url`): "
                         "a cloud sync copies a repository on this machine")

    def freshness(self) -> float | None:
        return None if self.max_age is None else float(self.max_age)


CONFIG = CloudSyncJob


def config_file(config: Config, job: CloudSyncJob) -> Path:
    return rclone.config_path(config.paths.keys, job.rclone_config)


def plan(config: Config, job: CloudSyncJob, *, progress: bool = True) -> Step:
    """The one step: sync, then check, under Borg's lock of the repository; with
    ``progress``, rclone's progress lines feed the run's live progress instead of its
    log (:func:`phobos.tools.rclone.progress_reader`)."""
    repo = config.repos[job.repo]
    assert repo.path is not None  # check_refs: a repository on this machine
    rclone_config = config_file(config, job)
    copy = rclone.CopyPlan(source=repo.path, remote=job.remote, config=rclone_config,
                           bwlimit=job.bwlimit, transfers=job.transfers,
                           options=job.rclone_options)
    names = [rclone.remote_name(job.remote)]
    return Step(name="copy",
                argv=borgtool.with_lock_argv(repo.path, repo.lock_wait,
                                             rclone.sync_then_check_argv(copy)),
                env=borgtool.base_env(repo.base_dir),
                secrets=tuple(rclone.config_secrets(rclone_config, names)),
                explain=rclone.explain,
                progress=rclone.progress_reader if progress else None)


def _preflight(ctx: RunContext, job: CloudSyncJob) -> None:
    """The repository and rclone's config are there; an SFTP remote pins its host key."""
    repo = ctx.config.repos[job.repo]
    if repo.path is None or not (repo.path / "config").is_file():
        raise PhobosError(f"repo {job.repo}: {repo.path} is not a Borg repository",
                          "check [repos] path, and that the storage is mounted "
                          "(`phobos ns status`)")
    rclone_config = config_file(ctx.config, job)
    name = rclone.remote_name(job.remote)
    if name == "local":
        return
    if not rclone_config.is_file():
        raise PhobosError(f"rclone's config file {rclone_config} does not exist, so the "
                          f"remote {name!r} is unknown",
                          f"create the remote with `rclone config --config {rclone_config}` "
                          "(or set rclone_config in the job)")
    if rclone.remote_type(rclone_config, name) == "sftp" \
            and "known_hosts_file" not in rclone_config.read_text(encoding="utf-8"):
        ctx.warn(f"rclone remote {name!r} (sftp) has no known_hosts_file: rclone accepts "
                 "any host key for it; set known_hosts_file in its section")


def execute(ctx: RunContext) -> None:
    job = ctx.job
    assert isinstance(job, CloudSyncJob)
    _preflight(ctx, job)
    ctx.stats.update(repo=job.repo, remote=job.remote)
    result = ctx.run(plan(ctx.config, job, progress=ctx.tool_progress))
    found = rclone.parse_output(result.tail)
    ctx.stats.update(found)
    if not found["verified"]:  # the script echoes the marker before it checks
        raise PhobosError("rclone sync ended but the check did not run",
                          "see the run's log (`phobos log RUN_ID`)")
    ctx.log(f"cloud copy of repo {job.repo} at {job.remote}: {size(found['bytes_sent'])} "
            f"sent, {found.get('files_verified', '?')} files verified by "
            f"{found['verified_by']}")
