"""The ``check`` kind: ``borg check``, full, in time-boxed slices, or of archives.

- Nothing set: a full check (repository and archives). It also resets a sliced pass.
- ``max_duration``: ``borg check --repository-only --max-duration N``. Borg stops after
  N seconds and stores where it stopped in the repository's config
  (``last_segment_checked``); the next slice resumes there. phobos reads that position
  and the segment files after each slice, so the run's stats say how far the current
  pass is (``coverage``), when it started and when a pass last completed.
- ``last``, ``verify_data``, ``archives_of``: an archives-only check (``--last N``,
  ``--verify-data``), for a separate schedule; it leaves a sliced pass where it is.

Borg holds its exclusive lock for its whole run, so phobos passes a ``--max-duration``
shortened by the overshoot measured on earlier slices (start-up and the last segment
past the deadline): the exclusive lock is held for about ``max_duration`` in total.

``borg check`` reports the problems it finds with exit code 1: a failure here, never a
warning. Resources: ``repo:<name>`` exclusive (Borg's check takes the exclusive lock).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phobos.config.checks import positive
from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.config.schema import Duration, Problems, setting
from phobos.core import proc
from phobos.core.locks import Resource
from phobos.core.model import format_duration
from phobos.core.runner import RunContext
from phobos.core.step import Step
from phobos.repos.borg_locks import guarded
from phobos.repos.repo import Repo, repo_problems
from phobos.repos.resources import repo_resources
from phobos.tools import borg as borgtool
from phobos.tools import borg_repository
from phobos.tools.borg_progress import progress_step


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckJob(JobBase):
    repo: str = setting(doc="The repository (a [repos.NAME] table).")
    max_duration: Duration | None = setting(None, check=positive, doc="Check the repository "
                                            "in slices of this long (`\"2h\"`), each "
                                            "resuming where the last stopped.")
    last: int | None = setting(None, check=positive,
                               doc="Check only the archives, the last N of them.")
    verify_data: bool = setting(False, doc="Verify all data cryptographically "
                                "(`--verify-data`; slow: reads every chunk).")
    archives_of: str | None = setting(None, doc="Check only the archives of this archive "
                                      "job (its name glob).")

    def resources(self, config: Config) -> tuple[Resource, ...]:
        return tuple(repo_resources(config, self.repo, write=True))

    def check_refs(self, config: Config, path: tuple[str, ...], problems: Problems) -> None:
        from phobos.jobs.archive import ArchiveJob

        repo_problems(config, self.repo, (*path, "repo"), problems)
        if self.max_duration is not None and (self.last is not None or self.verify_data
                                              or self.archives_of is not None):
            problems.add((*path, "max_duration"), "a sliced check covers the repository "
                         "only: use a separate check job for last/verify_data/archives_of")
        if self.archives_of is not None:
            other = config.jobs.get(self.archives_of)
            if not isinstance(other, ArchiveJob):
                problems.add((*path, "archives_of"),
                             f"{self.archives_of!r} is not an archive job")

    @property
    def mode(self) -> str:
        if self.max_duration is not None:
            return "slice"
        if self.verify_data:
            return "verify-data"
        if self.last is not None or self.archives_of is not None:
            return "archives"
        return "full"


CONFIG = CheckJob


# --- coverage (pure) -----------------------------------------------------------------------


# Before any slice has measured it: Borg's start-up (~0.3 s here) and the segment it
# finishes past the deadline. Measured from the first slice on.
INITIAL_OVERSHOOT = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Previous:
    """What earlier checks of the repository left in history."""

    pass_started: float | None = None
    last_full_pass: float | None = None
    overshoot: float = INITIAL_OVERSHOOT
    position: int | None = None  # where the last slice stopped (None: pass complete)


def previous_from_stats(stats: dict[str, Any] | None) -> Previous:
    if not stats:
        return Previous()
    return Previous(pass_started=stats.get("pass_started"),
                    last_full_pass=stats.get("last_full_pass"),
                    overshoot=float(stats.get("overshoot", INITIAL_OVERSHOOT)),
                    position=stats.get("position"))


def coverage(*, mode: str, ok: bool, segments: list[int], before: int | None,
             after: int | None, now: float, previous: Previous) -> dict[str, Any]:
    """Coverage stats after one check of the repository part.

    ``before``/``after`` are Borg's stored slice position around the run (None: no
    pass in progress). A slice that started with no position started a new pass; a
    slice that leaves no position completed it. A full check always covers all.
    """
    total = len(segments)
    started_new = mode == "full" or before is None
    pass_started = now if started_new else (previous.pass_started or now)
    complete = mode == "full" or after is None
    checked = total if complete else sum(1 for s in segments if s <= (after or 0))
    last_full = now if complete and ok else previous.last_full_pass
    return {"segments": total, "checked_segments": checked, "position": after,
            "coverage": round(checked / total, 4) if total else 1.0,
            "pass_complete": complete, "pass_started": pass_started,
            "last_full_pass": last_full}


def slice_seconds(max_duration: float, overshoot: float) -> int:
    """The ``--max-duration`` to pass so that the whole run takes about max_duration."""
    return max(1, math.floor(max_duration - overshoot))


def measured_overshoot(*, lock_seconds: float, asked: int, stopped_for_time: bool,
                       previous: float) -> float:
    """How far past ``--max-duration`` Borg ran (start-up, index, the last segment).

    Only a slice that stopped for time measures it; the estimate keeps the larger of
    the new measurement and a decayed old one, so one fast night does not undo it.
    """
    if not stopped_for_time:
        return previous
    return round(max(lock_seconds - asked, 0.0, previous * 0.5), 3)


# --- planning and execution ---------------------------------------------------------------


def plan(job: CheckJob, repo: Repo, *, max_duration_arg: int | None,
         glob: str | None, progress: bool = False) -> Step:
    """The check; with ``progress`` it reports segments done and, for a slice, the time
    left of its ``--max-duration``."""
    argv = borgtool.check_argv(repo.borg, repo.access, max_duration=max_duration_arg,
                               last=job.last, verify_data=job.verify_data, glob=glob)
    step = repo.step("check", argv, problems_fail=True)
    return progress_step(step, time_box=max_duration_arg) if progress else step


def _archives_glob(ctx: RunContext, job: CheckJob) -> str | None:
    from phobos.jobs.archive import ArchiveJob, archive_glob

    if job.archives_of is None:
        return None
    other = ctx.config.jobs[job.archives_of]
    assert isinstance(other, ArchiveJob)
    return archive_glob(job.archives_of, other.archive_name)


def latest_check_stats(ctx: RunContext, repo: str) -> dict[str, Any] | None:
    """Stats of the newest repository-part check of ``repo`` by any check job."""
    best: tuple[float, dict[str, Any]] | None = None
    for name, job in ctx.config.jobs.items():
        if not isinstance(job, CheckJob) or job.repo != repo:
            continue
        for run in ctx.history.runs(name, limit=20):
            if run.id != ctx.run_id and "pass_complete" in run.stats:
                if best is None or run.started > best[0]:
                    best = (run.started, run.stats)
                break
    return None if best is None else best[1]


def execute(ctx: RunContext) -> None:
    job = ctx.job
    assert isinstance(job, CheckJob)
    repo = Repo.open(ctx.config, job.repo)
    ctx.stats.update(repo=job.repo, mode=job.mode)
    if job.mode in ("archives", "verify-data"):
        step = plan(job, repo, max_duration_arg=None, glob=_archives_glob(ctx, job),
                    progress=ctx.tool_progress)
        guarded(ctx.run, repo, ctx.log)(step)
        return
    previous = previous_from_stats(latest_check_stats(ctx, job.repo))
    asked = None
    if job.max_duration is not None:
        asked = slice_seconds(job.max_duration, previous.overshoot)
        ctx.stats["max_duration_arg"] = asked
    _run_repository_check(ctx, job, repo, asked, previous)


def _position_after(path: Path | None, result: proc.Result | None,
                    before: int | None) -> int | None:
    """Where a slice stopped: in the repository's config on this machine; for one on
    a server, as Borg reported it (unchanged when it reported nothing)."""
    if path is not None:
        return borg_repository.check_position(path)
    if result is None:
        return before
    said, position = borgtool.reported_check_position(result.tail)
    return position if said else before


def _run_repository_check(ctx: RunContext, job: CheckJob, repo: Repo, asked: int | None,
                          previous: Previous) -> None:
    path = repo.local_path
    before = borg_repository.check_position(path) if path is not None else previous.position
    started, result = time.monotonic(), None
    try:
        result = guarded(ctx.run, repo, ctx.log)(plan(job, repo, max_duration_arg=asked,
                                                      glob=None, progress=ctx.tool_progress))
    finally:  # coverage is recorded even when the check finds problems
        ok = result is not None
        # Borg's own run time (it holds the exclusive lock within it); without a result
        # (failure) the time since the step began, waiting for an outside lock included.
        lock_seconds = result.duration if result is not None else time.monotonic() - started
        after = _position_after(path, result, before) if job.mode == "slice" else None
        stats = coverage(mode="full" if job.mode == "full" else "slice", ok=ok,
                         segments=borg_repository.segment_ids(path) if path is not None else [],
                         before=before, after=after, now=time.time(), previous=previous)
        if path is None:  # the server's segments are out of sight: no coverage ratio
            for key in ("segments", "checked_segments", "coverage"):
                stats.pop(key)
        overshoot = previous.overshoot if asked is None else measured_overshoot(
            lock_seconds=lock_seconds, asked=asked, stopped_for_time=after is not None,
            previous=previous.overshoot)
        ctx.stats.update(stats, lock_seconds=round(lock_seconds, 3), overshoot=overshoot)
        _log_coverage(ctx, stats)


def _log_coverage(ctx: RunContext, stats: dict[str, Any]) -> None:
    state = ("pass complete" if stats["pass_complete"]
             else f"position segment {stats['position']}")
    last = stats["last_full_pass"]
    ago = "never" if last is None else f"{format_duration(time.time() - last)} ago"
    if "coverage" in stats:
        ctx.log(f"repository check coverage: {100 * stats['coverage']:.1f}% of "
                f"{stats['segments']} segments ({state}); last full pass completed: {ago}")
    else:
        ctx.log(f"repository check on the server: {state}; last full pass completed: {ago}")
