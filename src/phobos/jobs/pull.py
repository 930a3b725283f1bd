"""The ``pull`` kind: server-initiated rsync over SSH of remote hosts into the holding area.

A pull job names one host (``host``) or several (``hosts``, pulled in parallel up to
``max_parallel``). Each host lands in ``[storage] holding``/NAME/, mirroring the host's
absolute paths, and is the resource ``holding:NAME`` (written), so an archive or
command job reading that holding folder never runs at the same time.

Hosts are isolated from each other: one host failing (unreachable, changed host key,
missing path, full disk) is logged with its own message and hint while the others
complete; the run then fails with a message naming the failed hosts. Per-host
statistics (files, bytes) go into the run's stats. The previous copy of a host is
updated in place and never removed before a pull succeeds (see
:mod:`phobos.tools.rsync`).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phobos import hosts
from phobos.config.checks import check_ref
from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.config.schema import Problem, Problems, setting
from phobos.core import locks, proc
from phobos.core.locks import Resource
from phobos.core.model import Outcome, format_duration
from phobos.core.runner import RunContext
from phobos.core.step import Step
from phobos.errors import HoldingError, Interrupted, PhobosError, PullFailed, StepFailed
from phobos.tools import rsync, ssh
from phobos.tools.ssh import Endpoint

DIAGNOSE_TIMEOUT_SECONDS = 60.0


def _at_least_one(value: int) -> str | None:
    return None if value >= 1 else "must be 1 or more"


@dataclass(frozen=True, slots=True, kw_only=True)
class PullJob(JobBase):
    host: str | None = setting(None, doc="The host to pull: the NAME of a [hosts.NAME] table.")
    hosts: tuple[str, ...] = setting(factory=tuple, doc="Several hosts to pull in one run "
                                     "(instead of `host`), in parallel, each on its own.")
    max_parallel: int = setting(4, check=_at_least_one,
                                doc="How many hosts of `hosts` are pulled at the same time.")

    @property
    def host_names(self) -> tuple[str, ...]:
        return (self.host,) if self.host is not None else self.hosts

    def resources(self, config: Config) -> tuple[Resource, ...]:
        return tuple(locks.holding(name, write=True) for name in self.host_names)

    def check_refs(self, config: Config, path: tuple[str, ...], problems: Problems) -> None:
        if self.host is not None and self.hosts:
            problems.add((*path, "hosts"), "set either `host` or `hosts`, not both")
        if not self.host_names:
            problems.add((*path, "host"), "required key is missing: name the host to pull "
                         "(host = \"NAME\") or several (hosts = [\"a\", \"b\"])")
        seen: set[str] = set()
        for key, name in self._host_keys(path):
            if name in seen:
                problems.add(key, f"host {name!r} is listed twice")
            seen.add(name)
            check_ref(problems, key, "host", name, config.hosts)
            if name in config.hosts:
                for sub, message in hosts.host_problems(config.hosts[name]):
                    _add_once(problems, ("hosts", name, *sub), message)

    def _host_keys(self, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
        if self.host is not None:
            return [((*path, "host"), self.host)]
        return [((*path, "hosts", f"[{i}]"), name) for i, name in enumerate(self.hosts)]


def _add_once(problems: Problems, path: tuple[str, ...], message: str) -> None:
    # Several jobs may pull the same host: report its table's problems once.
    if Problem(path, message) not in problems.items:
        problems.add(path, message)


CONFIG = PullJob


# --- planning (pure) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HostPlan:
    """How one host is pulled: ``pull`` transfers into ``dest`` (inside ``folder``, the
    host's holding folder), then ``prune`` deletes what the host no longer has (only
    after ``pull`` succeeded); ``diagnose`` names the reason when ssh fails."""

    name: str
    endpoint: Endpoint
    folder: Path
    dest: Path
    pull: Step
    prune: Step
    diagnose: Step


def plan_host(config: Config, name: str, features: rsync.Features, *,
              progress: bool = False) -> HostPlan:
    """The steps pulling host ``name``, given what the holding filesystem supports; with
    ``progress`` the transfer reports its progress."""
    host = config.hosts[name]
    ep = hosts.endpoint(config, name)
    sources, below = rsync.remote_sources(host.paths, host.rrsync_root)
    folder = config.storage.holding / name
    dest = folder / below if below else folder
    spec = rsync.Pull(
        login=ep.login, rsh=ssh.rsh(ep), sources=sources, dest=dest, exclude=host.exclude,
        bwlimit=host.bwlimit, acls=features.acls, xattrs=features.xattrs,
        extra=host.rsync_options, progress=progress)
    return HostPlan(
        name=name, endpoint=ep, folder=folder, dest=dest,
        pull=Step(name=f"pull {name}", argv=rsync.pull_argv(spec), label=name,
                  warn_codes=rsync.WARN_CODES, explain=rsync.explain,
                  progress=rsync.progress_reader if progress else None),
        prune=Step(name=f"prune {name}", argv=rsync.prune_argv(spec), label=name,
                   warn_codes=rsync.WARN_CODES, explain=rsync.explain),
        diagnose=Step(name=f"diagnose {name}", argv=ssh.ssh_argv(ep, "true"), label=name,
                      ok_codes=tuple(range(256)), timeout=DIAGNOSE_TIMEOUT_SECONDS))


# --- execution -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HostResult:
    name: str
    outcome: Outcome
    duration: float
    stats: Mapping[str, int] = field(default_factory=dict)
    error: PhobosError | Interrupted | None = None

    def as_stats(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"outcome": str(self.outcome),
                                 "duration": round(self.duration, 3), **self.stats}
        if self.error is not None:
            entry["error"] = self.error.message
        return entry


def execute(ctx: RunContext) -> None:
    job = ctx.job
    assert isinstance(job, PullJob)
    results = _pull_all(ctx, job.host_names, job.max_parallel)
    ctx.stats.update(_stats(results))
    failed = [r for r in results if r.error is not None]
    if failed:
        raise _failure(failed, len(results))


def _pull_all(ctx: RunContext, names: Sequence[str], max_parallel: int) -> list[HostResult]:
    """Pull every host, at most ``max_parallel`` at once. On interruption (raised in
    this, the main, thread) every worker's child is stopped and the workers are
    waited for, so no rsync keeps writing after the run is recorded as stopped."""
    workers = min(max_parallel, len(names))
    if len(names) > 1:
        ctx.log(f"pulling {len(names)} hosts, {workers} at a time")
    stop = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                 thread_name_prefix="pull")
    futures: list[concurrent.futures.Future[HostResult]] = []
    try:
        futures += [pool.submit(_pull_host, ctx, name, stop) for name in names]
        results = [future.result() for future in futures]
    except BaseException:
        stop.set()
        _stop_workers(pool, futures)
        raise
    pool.shutdown()
    return results


def _stop_workers(pool: concurrent.futures.ThreadPoolExecutor,
                  futures: Sequence[concurrent.futures.Future[HostResult]]) -> None:
    pool.shutdown(wait=False, cancel_futures=True)
    while not all(future.done() for future in futures):
        # A worker may start its next step between two rounds: keep stopping children.
        proc.terminate_all()
        concurrent.futures.wait(futures, timeout=0.2)


def _pull_host(ctx: RunContext, name: str, stop: threading.Event) -> HostResult:
    """Pull one host; its failure is returned, not raised (the others go on)."""
    started = time.monotonic()
    try:
        if stop.is_set():
            raise Interrupted(f"host {name}: not started, the run was stopped")
        plan = _prepare(ctx, name)
        result = _transfer(ctx, plan.pull, plan, stop)
        if stop.is_set():
            raise Interrupted(f"host {name}: stopped before deleting anything")
        pruned = _transfer(ctx, plan.prune, plan, stop)
    except (PhobosError, Interrupted) as exc:
        outcome = Outcome.INTERRUPTED if stop.is_set() else Outcome.FAILED
        ctx.log(f"host {name} {outcome}: {exc.message}"
                + (f" (hint: {exc.hint})" if exc.hint else ""))
        return HostResult(name=name, outcome=outcome, duration=time.monotonic() - started,
                          error=exc)
    duration = time.monotonic() - started
    stats = rsync.parse_stats(result.tail)
    stats["files_deleted"] = rsync.parse_stats(pruned.tail).get("files_deleted", 0)
    outcome = max(result.outcome, pruned.outcome, key=_OUTCOME_RANK.index)
    ctx.log(f"host {name}: {outcome} in {format_duration(duration)}: {_summary(stats)}")
    return HostResult(name=name, outcome=outcome, duration=duration, stats=stats)


_OUTCOME_RANK = (Outcome.SUCCESS, Outcome.WARNING)


def _prepare(ctx: RunContext, name: str) -> HostPlan:
    """Check keys and the holding folder, then plan (all before connecting)."""
    ep = hosts.endpoint(ctx.config, name)
    if not ep.identity.is_file():
        raise PhobosError(f"the SSH key {ep.identity} for host {name} does not exist",
                          f"run `phobos host add {name} {ep.address}` to create phobos's "
                          f"pull key, or fix `identity` in [hosts.{name}]")
    if not ssh.pinned(ep.known_hosts, name):
        raise ssh.key_unknown(ep)
    features = _holding_features(ctx.config, name)
    plan = plan_host(ctx.config, name, features, progress=ctx.tool_progress)
    try:
        plan.dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _holding_error(plan.dest, name, exc) from None
    return plan


def _holding_features(config: Config, name: str) -> rsync.Features:
    root = config.storage.holding
    if not root.is_dir():
        # Never create the holding area itself: if the backup filesystem is not
        # mounted, pulling into the bare mount point would fill the system disk.
        raise HoldingError(f"the holding area {root} does not exist (is the backup "
                           "filesystem mounted?)",
                           f"mount the backup storage, or create the folder; "
                           f"[storage] holding in {config.source}")
    folder = root / name
    try:
        folder.mkdir(exist_ok=True)
        return rsync.target_features(folder)
    except OSError as exc:
        raise _holding_error(folder, name, exc) from None


def _holding_error(folder: Path, name: str, exc: OSError) -> HoldingError:
    return HoldingError(f"cannot write to the holding folder {folder} for host {name}: "
                        f"{exc.strerror or exc}",
                        "check that the backup filesystem is mounted read-write and has "
                        "free space; the previous copy there was not touched")


_HINTS = (
    ("No space left on device", "the holding filesystem is full: free space or grow it, "
     "then pull again. Files already replaced are complete new versions; nothing was "
     "deleted"),
    ("Read-only file system", "the holding filesystem is mounted read-only: remount it "
     "read-write; nothing was changed"),
    ("No such file or directory", "a remote path does not exist on the host (or is not "
     "under its rrsync root): fix `paths` in the host's table; `phobos host test HOST` "
     "checks every path. The previous copy was kept"),
    ("Permission denied", "the remote user may not read some files: pull as root, or "
     "exclude them"),
)


def _transfer(ctx: RunContext, step: Step, plan: HostPlan,
              stop: threading.Event) -> proc.Result:
    try:
        return ctx.run(step)
    except StepFailed as exc:
        if stop.is_set():
            raise
        raise _diagnosed(ctx, plan, exc) from None


def _diagnosed(ctx: RunContext, plan: HostPlan, exc: StepFailed) -> PhobosError:
    """A clearer error for a failed pull: ssh's own reason (one more ssh attempt, only
    after a failure) or a hint for a known rsync message."""
    probe = ctx.run(plan.diagnose)
    if probe.returncode == 255:
        found = ssh.diagnose(probe.tail, plan.endpoint)
        if found is not None:
            return found
    for needle, hint in _HINTS:
        if needle in exc.message:
            return PullFailed(exc.message, hint.replace("HOST", plan.name))
    return exc


def _summary(stats: Mapping[str, int]) -> str:
    if not stats:
        return "no statistics"
    return (f"{stats.get('files', 0)} files, {stats.get('files_transferred', 0)} "
            f"transferred, {stats.get('files_deleted', 0)} deleted, "
            f"{_size(stats.get('bytes_transferred', 0))} of "
            f"{_size(stats.get('bytes_total', 0))} changed")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _stats(results: Sequence[HostResult]) -> dict[str, Any]:
    """Per-host entries plus totals over the hosts that finished."""
    totals = {key: sum(r.stats.get(key, 0) for r in results)
              for key in ("files", "files_transferred", "files_deleted", "bytes_total",
                          "bytes_transferred", "bytes_received")}
    return {"hosts": {r.name: r.as_stats() for r in results},
            "failed_hosts": [r.name for r in results if r.error is not None], **totals}


def _failure(failed: Sequence[HostResult], total: int) -> PhobosError:
    """The run's error. Each host's hint is folded into the message: the run's record
    (and the mail about it) keeps only the message, and it must say what to do."""
    if total == 1:
        error = failed[0].error
        assert error is not None
        return PullFailed(_told(error), error.hint)
    parts = "; ".join(f"{r.name}: {_told(r.error)}" for r in failed if r.error)
    names = ", ".join(r.name for r in failed)
    first = failed[0].error
    hint = first.hint if len(failed) == 1 and first is not None else (
        "each host's message and hint are in the run's log (`phobos log RUN_ID`)")
    return PullFailed(f"{len(failed)} of {total} hosts failed ({names}); the others were "
                      f"pulled. {parts}", hint)


def _told(error: PhobosError | Interrupted) -> str:
    return f"{error.message} (hint: {error.hint})" if error.hint else error.message
