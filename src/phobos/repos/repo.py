"""Borg repositories as phobos knows them: access, resources, and the repo operations.

The operations (init, info, list, key export, restore drill) take a ``run`` callable
that executes one :class:`~phobos.core.step.Step`: a job passes ``ctx.run`` (recorded in
history), the CLI passes :func:`direct_runner` (echoed to the terminal). Either way
every process goes through :func:`phobos.core.proc.run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from phobos.config.model import Config, RepoConfig
from phobos.config.schema import Problems, suggest
from phobos.core import proc
from phobos.core.locks import Resource, locked
from phobos.core.locks import holders as phobos_holders
from phobos.core.model import BusyPolicy, format_duration
from phobos.core.step import Step
from phobos.errors import PhobosError, StepFailed, UsageError
from phobos.tools import borg as borgtool

StepRunner = Callable[[Step], proc.Result]
Log = Callable[[str], None]


# --- configuration ---------------------------------------------------------------------


def repo_config(config: Config, name: str) -> RepoConfig:
    """The ``[repos.NAME]`` table, or a UsageError listing the known names."""
    if name not in config.repos:
        known = ", ".join(sorted(config.repos)) or "none"
        raise UsageError(f"no repository named {name!r}{suggest(name, config.repos)}",
                         f"repositories in {config.source}: {known}")
    return config.repos[name]


def repo_problems(config: Config, name: str, path: tuple[str, ...], problems: Problems) -> None:
    """Record problems with a job's ``repo`` reference (for ``check_refs``)."""
    if name not in config.repos:
        problems.add(path, f"no repo named {name!r}"
                     + (suggest(name, config.repos) or f" (define [repos.{name}])"))
        return
    repo = config.repos[name]
    if repo.passcommand is not None and repo.passphrase_file is not None:
        problems.add(("repos", name), "set passcommand or passphrase_file, not both")


def passphrase_of(repo: RepoConfig) -> str | None:
    """The passphrase from ``passphrase_file`` (None without one). Never logged."""
    if repo.passphrase_file is None:
        return None
    try:
        return repo.passphrase_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PhobosError(f"cannot read the passphrase file {repo.passphrase_file}: "
                          f"{exc.__class__.__name__}",
                          "check the file and its permissions (mode 0400, owned by root)"
                          ) from None


def access(config: Config, name: str, borg: borgtool.Borg) -> borgtool.Access:
    """How Borg reaches repository ``name`` (reads the passphrase file, if any)."""
    repo = repo_config(config, name)
    return borgtool.access(borg, repo.path, lock_wait=repo.lock_wait, base_dir=repo.base_dir,
                           passcommand=repo.passcommand, passphrase=passphrase_of(repo))


def borg_step(name: str, argv: Sequence[str], acc: borgtool.Access, borg: borgtool.Borg,
              repo_path: Path, *, capture: bool = False, problems_fail: bool = False,
              cwd: str | None = None) -> Step:
    """A Borg step with the repository's environment, passphrase pipe and exit codes."""
    return Step(name=name, argv=tuple(argv), env=acc.env, secrets=acc.secrets,
                stdin=acc.stdin, capture=capture, cwd=cwd,
                warn_codes=borgtool.warn_codes(borg, problems_fail=problems_fail),
                explain=explainer(repo_path, problems_fail=problems_fail))


def explainer(repo_path: Path, *, problems_fail: bool = False) -> Callable[[int], str]:
    """Explains a Borg exit code; for lock failures it names who holds Borg's lock."""

    def explain(code: int) -> str:
        if problems_fail and code == 1:
            return "the check found problems in the repository (see the log)"
        meaning = borgtool.meaning(code)
        if code in borgtool.LOCK_CODES or code == 2:
            holders = [h for h in borgtool.lock_holders(repo_path) if h.pid != os.getpid()]
            if holders:
                meaning += "; " + "; ".join(h.describe() for h in holders)
        return meaning

    return explain


def _blocking(holders: Iterable[borgtool.LockHolder],
              exclusive: bool) -> list[borgtool.LockHolder]:
    # A holder on another host may be alive: only Borg on that host could tell.
    return [h for h in holders if h.alive is not False and h.pid != os.getpid()
            and (exclusive or h.exclusive)]


def wait_for_borg_locks(repo: Repo, *, exclusive: bool, log: Log,
                        poll: float = 0.2) -> int:
    """Wait while a live process outside phobos holds Borg's lock on the repository or
    its cache (phobos's own lock keeps other phobos runs out), naming the holder.

    Returns the ``--lock-wait`` for the next Borg command: what is left of
    ``lock_wait``, or :data:`~phobos.tools.borg.STALE_LOCK_WAIT` when only stale locks
    remain, because Borg sleeps a tenth of --lock-wait (up to a minute) after
    removing one. Gives up waiting when ``lock_wait`` has passed and lets Borg fail,
    which explains its lock error with the holder.
    """
    places = [repo.config.path, borgtool.cache_dir(repo.config.path, repo.config.base_dir)]
    deadline = time.monotonic() + repo.config.lock_wait
    next_report = 0.0
    while True:
        holders = [h for place in places if place for h in borgtool.lock_holders(place)]
        live = _blocking(holders, exclusive)
        if not live or time.monotonic() >= deadline:
            break
        if time.monotonic() >= next_report:
            for holder in live:
                log(f"{repo.config.path} is locked {_whose(holder, repo.lock_dir)}: "
                    f"{holder.describe()}; waiting up to "
                    f"{format_duration(deadline - time.monotonic())}")
            next_report = time.monotonic() + 60.0
        time.sleep(poll)
    stale = [h for h in holders if h.alive is False]
    for holder in stale:
        log(f"{repo.config.path}: {holder.describe()}")
    if stale and not live:
        return borgtool.STALE_LOCK_WAIT
    return max(1, round(deadline - time.monotonic()))


def _ancestors(pid: int) -> Iterator[int]:
    while pid > 1:
        yield pid
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4: the parent's PID


def _whose(holder: borgtool.LockHolder, lock_dir: Path | None) -> str:
    """"by job NAME (...)" when a phobos run started the holder (a drive sync's
    ``borg with-lock``), else "outside phobos"."""
    if holder.local and lock_dir is not None:
        runs = {h.pid: h for h in phobos_holders(lock_dir)}
        for pid in _ancestors(holder.pid):
            if pid in runs:
                return f"by {runs[pid].describe()}"
    return "outside phobos"


def guarded(run: StepRunner, repo: Repo, log: Log) -> StepRunner:
    """``run``, but each Borg step first waits out outside Borg locks (see
    :func:`wait_for_borg_locks`) and gets the fitting ``--lock-wait``."""

    def guarded_run(step: Step) -> proc.Result:
        if "--lock-wait" in step.argv:
            wait = wait_for_borg_locks(repo, exclusive=borgtool.needs_exclusive(step.argv),
                                       log=log)
            step = dataclasses.replace(step, argv=tuple(borgtool.with_lock_wait(step.argv,
                                                                                wait)))
        return run(step)

    return guarded_run


# --- resources --------------------------------------------------------------------------


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
                found.append(Resource(f"holding:{host}", write=False))
        if _within(source, config.storage.root) or _within(config.storage.root, source):
            found.append(Resource("storage", write=False))
    return found


def repo_resources(config: Config, name: str, *, write: bool) -> list[Resource]:
    """``repo:<name>`` (exclusive for anything that takes Borg's exclusive lock) and
    ``storage`` (shared) if the repository lives on the backup storage."""
    found = [Resource(f"repo:{name}", write=write)]
    repo = config.repos.get(name)
    if repo is not None and _within(repo.path, config.storage.root):
        found.append(Resource("storage", write=False))
    return found


@contextlib.contextmanager
def cli_lock(config: Config, name: str, *, write: bool, what: str) -> Iterator[None]:
    """Take the repository's phobos lock for a CLI operation; fail at once (naming the
    holder) if a job has it, rather than leaving Borg waiting for up to lock_wait."""
    with locked(config.paths.run / "locks", f"cli: repo {what}", 0,
                repo_resources(config, name, write=write), BusyPolicy.FAIL, 0.0):
        yield


# --- running steps outside a job --------------------------------------------------------


def direct_runner(echo: Log | None) -> StepRunner:
    """A runner for CLI operations: proc.run, output echoed (redacted) to ``echo``."""

    def sink(stream: str, line: str) -> None:
        if echo is not None:
            echo(line)

    def run(step: Step) -> proc.Result:
        return proc.run(step.argv, env=step.env, secrets=step.secrets, ok_codes=step.ok_codes,
                        warn_codes=step.warn_codes, timeout=step.timeout, sink=sink,
                        capture=step.capture, cwd=step.cwd, stdin_data=step.stdin,
                        explain=step.explain)

    return run


# --- operations ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Repo:
    """One repository ready for Borg commands."""

    name: str
    config: RepoConfig
    borg: borgtool.Borg
    access: borgtool.Access
    lock_dir: Path | None = None  # phobos's resource locks: who runs which job

    @classmethod
    def open(cls, config: Config, name: str) -> Repo:
        borg = borgtool.find(cache=config.paths.state / "borg-version.json")
        return cls(name=name, config=repo_config(config, name), borg=borg,
                   access=access(config, name, borg), lock_dir=config.paths.run / "locks")

    def step(self, name: str, argv: Sequence[str], **kwargs: Any) -> Step:
        return borg_step(name, argv, self.access, self.borg, self.config.path, **kwargs)


def init(repo: Repo, run: StepRunner) -> None:
    """``borg init`` with the configured encryption (parent directories are created)."""
    cfg = repo.config
    if cfg.encryption != "none" and cfg.passcommand is None and cfg.passphrase_file is None:
        raise UsageError(f"repository {repo.name} uses encryption {cfg.encryption} but has "
                         "no passphrase", f"set passcommand or passphrase_file in "
                         f"[repos.{repo.name}]")
    run(repo.step("init", borgtool.init_argv(repo.borg, repo.access, cfg.encryption)))


def info(repo: Repo, run: StepRunner) -> dict[str, Any]:
    """``borg info --json`` of the repository, as parsed JSON."""
    result = run(repo.step("info", borgtool.info_argv(repo.borg, repo.access), capture=True))
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def archives(repo: Repo, run: StepRunner, *, glob: str | None = None,
             last: int | None = None) -> list[dict[str, Any]]:
    """Archives (oldest first): name, time, id."""
    argv = borgtool.list_argv(repo.borg, repo.access, glob=glob, last=last)
    return borgtool.parse_archives(run(repo.step("list", argv, capture=True)).stdout)


def key_export(repo: Repo, run: StepRunner, target: Path, *, paper: bool = False) -> None:
    run(repo.step("key-export", borgtool.key_export_argv(repo.borg, repo.access, target,
                                                         paper=paper)))


# --- restore drill ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillReport:
    """What a restore drill found. ``mismatches`` are files whose restored content
    differs from an unchanged source: the backup does not restore what was saved."""

    archive: str
    files_in_archive: int
    files_checked: int
    mismatches: tuple[str, ...]
    skipped_changed: int
    skipped_missing: int
    bytes_read: int

    def as_stats(self) -> dict[str, Any]:
        return {"archive": self.archive, "files_in_archive": self.files_in_archive,
                "files_checked": self.files_checked, "mismatches": len(self.mismatches),
                "mismatched_files": list(self.mismatches[:20]),
                "skipped_changed": self.skipped_changed,
                "skipped_missing": self.skipped_missing, "bytes_read": self.bytes_read}


@dataclass(frozen=True, slots=True)
class _Item:
    path: str  # as in the archive: no leading slash
    size: int
    mtime: str  # ISO local time with microseconds, as Borg lists it


@dataclass(slots=True)
class _Pick:
    chosen: list[_Item] = field(default_factory=list)
    changed: int = 0
    missing: int = 0
    size: int = 0


def _mtime(st: os.stat_result) -> datetime:
    seconds, nanos = divmod(st.st_mtime_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds).replace(microsecond=nanos // 1000)


def _unchanged(item: _Item) -> bool | None:
    """True if the source still has the archived size and mtime; None if it is gone.

    Borg lists mtimes as local time in microseconds computed through a float, so the
    last microsecond may differ from the file's nanoseconds: allow 2 microseconds.
    """
    try:
        st = os.lstat("/" + item.path)
    except OSError:
        return None
    try:
        archived = datetime.fromisoformat(item.mtime)
    except ValueError:
        return False
    drift = abs((_mtime(st) - archived).total_seconds())
    return st.st_size == item.size and drift <= 2e-6


def _regular_files(jsonl: str) -> list[_Item]:
    items = []
    for line in jsonl.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if entry.get("type") == "-" and entry.get("healthy", True):
            items.append(_Item(str(entry["path"]), int(entry["size"]), str(entry["mtime"])))
    return items


def _pick(items: Sequence[_Item], sample: int, max_bytes: int, rng: random.Random) -> _Pick:
    """A random sample of files whose source is unchanged since the archive."""
    pick = _Pick()
    order = list(items)
    rng.shuffle(order)
    for item in order:
        if len(pick.chosen) >= sample:
            break
        if pick.size + item.size > max_bytes:
            continue
        state = _unchanged(item)
        if state is None:
            pick.missing += 1
        elif not state:
            pick.changed += 1
        else:
            pick.chosen.append(item)
            pick.size += item.size
    return pick


def _same_content(a: Path, b: Path) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            block_a, block_b = fa.read(1 << 20), fb.read(1 << 20)
            if block_a != block_b:
                return False
            if not block_a:
                return True


def latest_archive(repo: Repo, run: StepRunner, glob: str | None) -> str:
    found = archives(repo, run, glob=glob, last=1)
    if not found:
        raise PhobosError(f"repository {repo.name} has no archives"
                          + (f" matching {glob}" if glob else ""),
                          "run an archive job first")
    return str(found[-1]["name"])


def drill(repo: Repo, run: StepRunner, *, sample: int, max_bytes: int,
          glob: str | None = None, rng: random.Random | None = None) -> DrillReport:
    """Restore a random sample of files from the latest archive into a temporary
    directory and compare each with its source, where the source's size and mtime are
    unchanged since the archive (others are counted as skipped, not compared)."""
    archive = latest_archive(repo, run, glob)
    listing = run(repo.step("list-files", borgtool.list_files_argv(
        repo.borg, repo.access, archive), capture=True))
    items = _regular_files(listing.stdout)
    pick = _pick(items, sample, max_bytes, rng or random.Random())
    mismatches: list[str] = []
    checked, changed = 0, pick.changed
    with tempfile.TemporaryDirectory(prefix="phobos-drill-") as tmp:
        if pick.chosen:
            paths = ["pf:" + item.path for item in pick.chosen]
            run(repo.step("extract", borgtool.extract_argv(repo.borg, repo.access, archive,
                                                           paths), cwd=tmp))
        for item in pick.chosen:
            restored = Path(tmp) / item.path
            same = restored.is_file() and _same_content(restored, Path("/" + item.path))
            if not same and not _unchanged(item):
                changed += 1  # the source changed while we compared: not a finding
                continue
            checked += 1
            if not same:
                mismatches.append("/" + item.path)
    return DrillReport(archive=archive, files_in_archive=len(items), files_checked=checked,
                       mismatches=tuple(mismatches), skipped_changed=changed,
                       skipped_missing=pick.missing, bytes_read=pick.size)


def drill_failure(report: DrillReport) -> StepFailed | None:
    """The error for a drill that found mismatches (None if it found none)."""
    if not report.mismatches:
        return None
    shown = ", ".join(report.mismatches[:5])
    more = f" and {len(report.mismatches) - 5} more" if len(report.mismatches) > 5 else ""
    return StepFailed(f"restore drill: {len(report.mismatches)} of {report.files_checked} "
                      f"restored files differ from their unchanged source: {shown}{more}",
                      "run `borg check --verify-data` on the repository and compare the "
                      "files by hand; a source changed without changing size and mtime "
                      "also shows up here")


# --- what phobos knows about a repository (no Borg call) -----------------------------------


def _latest_stats(config: Config, history: Any, repo: str, kind: str,
                  key: str) -> tuple[str, Any] | None:
    """(job, run) of the newest run of a ``kind`` job of ``repo`` whose stats have ``key``."""
    best = None
    for name, job in config.jobs.items():
        if str(job.kind) != kind or getattr(job, "repo", None) != repo:
            continue
        for run in history.runs(name, limit=20):
            if key in run.stats:
                if best is None or run.started > best[1].started:
                    best = (name, run)
                break
    return best


def _hidden_from_here(config: Config, repo: RepoConfig) -> bool:
    """The repository is on storage mounted only inside the backup namespace, and this
    process (the web dashboard, say) is outside it."""
    from phobos import namespace

    if config.storage.device is None or not repo.path.is_relative_to(config.storage.root):
        return False
    return not namespace.is_inside(namespace.of(config))


def _files_summary(path: Path) -> dict[str, Any]:
    segments = borgtool.segment_ids(path)
    position = borgtool.check_position(path)
    return {
        "initialized": (path / "config").is_file(),
        "segments": len(segments),
        "check_position": position,
        "pass_coverage": (round(sum(1 for s in segments if s <= position) / len(segments), 4)
                          if position is not None and segments else None),
        "borg_locks": [h.describe() for h in borgtool.lock_holders(path)],
    }


def summary(config: Config, name: str, history: Any) -> dict[str, Any]:
    """Repository state from its files and phobos's history: initialized, segments,
    the sliced check's live position, Borg lock holders, the last archive and check."""
    repo = repo_config(config, name)
    hidden = _hidden_from_here(config, repo)
    if hidden:  # files out of sight are unknown, not "not initialized"
        files: dict[str, Any] = {"initialized": None, "segments": None, "check_position": None,
                 "pass_coverage": None, "borg_locks": []}
    else:
        files = _files_summary(repo.path)
    out: dict[str, Any] = {"name": name, "path": str(repo.path), "hidden": hidden, **files,
                           "last_archive": None, "last_check": None}
    archive = _latest_stats(config, history, name, "archive", "archive")
    if archive is not None:
        out["last_archive"] = {"job": archive[0], "run_id": archive[1].id,
                               "started": archive[1].started, **archive[1].stats}
    check = _latest_stats(config, history, name, "check", "segments")
    if check is not None:
        out["last_check"] = {"job": check[0], "run_id": check[1].id,
                             "started": check[1].started, **check[1].stats}
    return out
