"""The ``archive`` kind: ``borg create`` of the sources, then ``prune`` and ``compact``.

Several archive jobs may share one repository: each job's archives are told apart by
its archive name template, and prune only ever sees the archives matching the job's
own glob (derived from the template: ``{now:%Y-%m-%d}`` becomes digit classes, so
job ``nightly`` never prunes ``nightly-2``'s archives). ``phobos config check``
refuses two jobs of one repository whose names the other's glob would match.

Resources: ``repo:<name>`` exclusive (create, prune and compact take Borg's exclusive
lock), ``holding:<host>`` shared for each pulled host whose holding folder is archived
(a pull of that host cannot run meanwhile), and ``storage`` shared when the repository
or a source lies on the backup storage (see :func:`phobos.repos.resources.source_resources`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from phobos.config.checks import positive
from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.config.schema import Duration, Problems, setting
from phobos.core.locks import Resource
from phobos.core.runner import RunContext
from phobos.core.step import Step
from phobos.errors import Absent, PhobosError
from phobos.repos.borg_locks import guarded
from phobos.repos.repo import Repo, borg_step, repo_problems
from phobos.repos.resources import repo_resources, source_resources
from phobos.tools import borg as borgtool
from phobos.tools.borg_progress import progress_step

DEFAULT_NAME = "{job}-{now:%Y-%m-%dT%H:%M:%S}"


def _non_negative(value: int | None) -> str | None:
    return None if value is None or value >= 0 else "must be 0 or more"


_WITHIN = re.compile(r"^[1-9][0-9]*[Hdwmy]$")


def _within_problem(value: str | None) -> str | None:
    if value is None or _WITHIN.match(value):
        return None
    return (f"{value!r} is not a Borg interval: a number and one of H (hours), d (days), "
            "w (weeks), m (months), y (years), e.g. \"2d\"")


@dataclass(frozen=True, slots=True, kw_only=True)
class Retention:
    """How many archives prune keeps, per period (Borg's ``--keep-*`` rules)."""

    within: str | None = setting(None, check=_within_problem,
                                 doc="Keep everything this recent: Borg's interval syntax, "
                                 "`\"2d\"` (H, d, w, m = months, y).")
    last: int | None = setting(None, check=_non_negative, doc="Keep the last N archives.")
    hourly: int | None = setting(None, check=_non_negative, doc="Hourly archives to keep.")
    daily: int | None = setting(None, check=_non_negative, doc="Daily archives to keep.")
    weekly: int | None = setting(None, check=_non_negative, doc="Weekly archives to keep.")
    monthly: int | None = setting(None, check=_non_negative,
                                  doc="Monthly archives to keep.")
    yearly: int | None = setting(None, check=_non_negative, doc="Yearly archives to keep.")

    def borg_args(self) -> list[str]:
        """The ``--keep-*`` options, in Borg's order; empty if nothing is set."""
        args = ["--keep-within", self.within] if self.within else []
        for rule in ("last", "hourly", "daily", "weekly", "monthly", "yearly"):
            count = getattr(self, rule)
            if count is not None:
                args += [f"--keep-{rule}", str(count)]
        return args


def _sources_problem(sources: tuple[Path, ...]) -> str | None:
    return None if sources else "name at least one path to archive"


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveJob(JobBase):
    repo: str = setting(doc="The repository (a [repos.NAME] table).")
    sources: tuple[Path, ...] = setting(check=_sources_problem,
                                        doc="Paths to archive: holding folders, local paths.")
    exclude: tuple[str, ...] = setting((), doc="Borg exclude patterns (`--exclude`).")
    archive_name: str = setting(DEFAULT_NAME, doc="Archive name template: `{job}` is the "
                                "job's name; Borg placeholders (`{now:%Y-%m-%d}`, "
                                "`{hostname}`...) are filled in by Borg.")
    keep: Retention | None = setting(None, doc="Retention: `{ daily = 7, weekly = 4, "
                                     "monthly = 12 }`. Without it nothing is pruned.")
    compact: bool = setting(True, doc="Run `borg compact` after prune to free the space.")
    compression: str | None = setting(None, doc="Overrides the repository's compression.")
    one_file_system: bool = setting(False, doc="Stay on the sources' filesystems.")
    exclude_caches: bool = setting(False, doc="Skip directories tagged with CACHEDIR.TAG.")
    checkpoint_interval: Duration | None = setting(
        None, check=positive, doc="Borg saves a checkpoint archive this often during "
        "a create (`--checkpoint-interval`; Borg's default 30m): a create cut off (a "
        "network drop to a server) keeps what was saved and the next one resumes there.")
    create_options: tuple[str, ...] = setting((), doc="More `borg create` options, "
                                              "e.g. `[\"--exclude-if-present\", \".nobackup\"]`.")
    missing_ok: bool = setting(False, doc="A source that does not exist is left out with a "
                               "line in the log; without this it fails the run (a whole "
                               "missing source is data not backed up).")

    def resources(self, config: Config) -> tuple[Resource, ...]:
        return (*repo_resources(config, self.repo, write=True),
                *source_resources(config, self.sources))

    def archived_paths(self) -> tuple[tuple[Path, ...], tuple[str, ...]]:
        return self.sources, self.exclude

    def check_refs(self, config: Config, path: tuple[str, ...], problems: Problems) -> None:
        repo_problems(config, self.repo, (*path, "repo"), problems)
        name = path[-1]
        if message := template_problem(name, self.archive_name):
            problems.add((*path, "archive_name"), message)
            return
        repo = config.repos.get(self.repo)
        local = repo.path if repo is not None else None
        for index, source in enumerate(self.sources):
            if local is not None and (source == local or source in local.parents):
                problems.add((*path, "sources", f"[{index}]"),
                             f"{source} contains the repository {local} itself; "
                             "exclude it or archive a narrower path")
        if self.keep is not None:
            _overlap_problems(config, name, self, path, problems)


def _overlap_problems(config: Config, name: str, job: ArchiveJob, path: tuple[str, ...],
                      problems: Problems) -> None:
    """Prune of ``job`` must never match another archive job's archives in its repo."""
    glob = archive_glob(name, job.archive_name)
    for other_name, other in config.jobs.items():
        if other_name == name or not isinstance(other, ArchiveJob) or other.repo != job.repo:
            continue
        if template_problem(other_name, other.archive_name):
            continue
        example = example_name(other_name, other.archive_name)
        if glob_matches(glob, example):
            problems.add((*path, "archive_name"),
                         f"prune of this job would also delete job {other_name}'s archives "
                         f"(its {example!r} matches {glob!r}); give each job of repo "
                         f"{job.repo} its own name prefix")


CONFIG = ArchiveJob


# --- archive names and their glob --------------------------------------------------------

_FIELD = re.compile(r"\{\{|\}\}|\{([^{}:!]*)(?::([^{}]*))?\}")
_TIME_FIELDS = {"now", "utcnow"}
_UNIQUE_FIELDS = {"now", "utcnow", "unixtime", "uuid4"}
_DIGITS = {"Y": 4, "m": 2, "d": 2, "H": 2, "M": 2, "S": 2, "y": 2, "j": 3, "f": 6,
           "I": 2, "U": 2, "W": 2, "G": 4, "V": 2, "u": 1, "w": 1}
_ISO = "%Y-%m-%dT%H:%M:%S"
_EXAMPLE_VALUES: dict[str, Any] = {
    "hostname": "host", "fqdn": "host.example.org", "reverse-fqdn": "org.example.host",
    "user": "root", "pid": 4242, "unixtime": 1767582000,
    "uuid4": "0b4c6e4a-8f0e-4c4e-9a53-6d0f7d1f2e3a", "borgversion": "1.4.5",
    "borgmajor": "1", "borgminor": "1.4", "borgpatch": "1.4.5",
}


def archive_name(job: str, template: str) -> str:
    """The name handed to Borg: ``{job}`` filled in, Borg's placeholders left."""
    return template.replace("{job}", job)


def _glob_literal(text: str) -> str:
    # Borg expands placeholders in the glob too, so braces must be doubled.
    out = []
    for char in text:
        if char in "*?[":
            out.append(f"[{char}]")
        elif char in "{}":
            out.append(char * 2)
        else:
            out.append(char)
    return "".join(out)


def _strftime_glob(fmt: str) -> str:
    out, index = [], 0
    while index < len(fmt):
        char = fmt[index]
        if char == "%" and index + 1 < len(fmt):
            code = fmt[index + 1]
            out.append("%" if code == "%" else "[0-9]" * _DIGITS[code] if code in _DIGITS
                       else "*")
            index += 2
        else:
            out.append(_glob_literal(char))
            index += 1
    return "".join(out)


def _field_glob(field: str, spec: str | None) -> str:
    if field in _TIME_FIELDS:
        return _strftime_glob(spec or _ISO)
    if field in ("unixtime", "pid"):
        return "[0-9]*"
    return "*"


def archive_glob(job: str, template: str) -> str:
    """A Borg glob matching exactly this job's archive names (and their
    ``.checkpoint`` leftovers, hence the final ``*``)."""
    text, out, pos = archive_name(job, template), [], 0
    for match in _FIELD.finditer(text):
        out.append(_glob_literal(text[pos:match.start()]))
        token = match.group(0)
        out.append(_glob_literal(token[0]) if token in ("{{", "}}")
                   else _field_glob(match.group(1), match.group(2)))
        pos = match.end()
    out.append(_glob_literal(text[pos:]))
    glob = "".join(out)
    return glob if glob.endswith("*") else glob + "*"


class _BorgTime:
    """Formats like Borg's DatetimeWrapper: an empty spec means ISO without microseconds."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __format__(self, spec: str) -> str:
        return self.moment.__format__(spec or _ISO)


def example_name(job: str, template: str, when: datetime | None = None) -> str:
    """The name Borg would give an archive of this job at ``when`` (for checks)."""
    moment = _BorgTime(when or datetime(2026, 1, 5, 3, 0, 0))
    values = {**_EXAMPLE_VALUES, "now": moment, "utcnow": moment}
    return archive_name(job, template).format_map(values)


def glob_matches(glob: str, name: str) -> bool:
    """Whether Borg's glob matches an archive name (``*`` never crosses ``/``)."""
    return fnmatch.fnmatchcase(name, glob.replace("{{", "{").replace("}}", "}"))


def template_problem(job: str, template: str) -> str | None:
    """Why ``template`` is not a usable archive name template, or None."""
    fields = {m.group(1) for m in _FIELD.finditer(archive_name(job, template)) if m.group(1)}
    unknown = fields - set(_EXAMPLE_VALUES) - _TIME_FIELDS
    if unknown:
        return f"unknown placeholder {{{sorted(unknown)[0]}}} in the archive name"
    if not fields & _UNIQUE_FIELDS:
        return ("the archive name needs a time placeholder such as {now:%Y-%m-%dT%H:%M:%S} "
                "so that every run makes a new archive")
    try:
        example = example_name(job, template)
    except (ValueError, KeyError, IndexError) as exc:
        return f"the archive name template does not format: {exc}"
    if "/" in example or not glob_matches(archive_glob(job, template), example):
        return "the archive name template cannot be matched by a glob (no '/' allowed)"
    return None


# --- planning (pure) and execution ----------------------------------------------------------


# Steps that may take long enough to be worth their progress output.
PROGRESS_STEPS = ("create", "compact")


def plan(job: ArchiveJob, name: str, repo: Repo, *, progress: bool = False) -> list[Step]:
    """create (stats as JSON on stdout), then prune and compact if ``keep`` is set; with
    ``progress``, create and compact report their progress."""
    borg, acc = repo.borg, repo.access
    options = [*(["--one-file-system"] if job.one_file_system else []),
               *(["--exclude-caches"] if job.exclude_caches else []),
               *(["--checkpoint-interval", str(max(1, round(job.checkpoint_interval)))]
                 if job.checkpoint_interval is not None else []),
               *job.create_options]
    create = borgtool.create_argv(borg, acc, archive=archive_name(name, job.archive_name),
                                  sources=job.sources, exclude=job.exclude,
                                  compression=job.compression or repo.config.compression,
                                  options=options)
    steps = [borg_step("create", create, acc, borg, repo.local_path, capture=True)]
    keep = job.keep.borg_args() if job.keep is not None else []
    if keep:
        prune = borgtool.prune_argv(borg, acc, keep=keep,
                                    glob=archive_glob(name, job.archive_name))
        steps.append(borg_step("prune", prune, acc, borg, repo.local_path))
        compact = borgtool.compact_argv(borg, acc) if compacts(job, repo) else None
        if compact is not None:
            steps.append(borg_step("compact", compact, acc, borg, repo.local_path))
    if progress:
        steps = [progress_step(s) if s.name in PROGRESS_STEPS else s for s in steps]
    return steps


def compacts(job: ArchiveJob, repo: Repo) -> bool:
    """Whether the job runs ``borg compact`` after prune: not through an append-only
    key to a server, where it frees nothing (the server compacts; docs/offsite.md)."""
    return job.compact and not (repo.config.url is not None and repo.config.append_only)


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{size:.2f} TB"  # pragma: no cover - loop always returns


def present_sources(job: ArchiveJob, log: Callable[[str], None]) -> tuple[Path, ...]:
    """The sources that exist. A missing one fails the run unless ``missing_ok`` (then it
    is left out with a log line, and Absent when none is left): Borg would only warn,
    and a run ending in "warning" mails nobody by default."""
    missing = [s for s in job.sources if not (s.exists() or s.is_symlink())]
    if not missing:
        return job.sources
    names = ", ".join(map(str, missing))
    if not job.missing_ok:
        raise PhobosError(f"source {names} does not exist: it would not be backed up",
                          "check the path (a mount missing? a pull that never ran?); set "
                          "missing_ok = true in the job if it may be absent")
    log(f"missing_ok: leaving out {names} (does not exist)")
    present = tuple(s for s in job.sources if s not in missing)
    if not present:
        raise Absent(f"none of the sources exists ({names}): nothing to archive")
    return present


def execute(ctx: RunContext) -> None:
    job = ctx.job
    assert isinstance(job, ArchiveJob)
    repo = Repo.open(ctx.config, job.repo)
    ctx.stats["repo"] = job.repo
    run = guarded(ctx.run, repo, ctx.log)
    job = dataclasses.replace(job, sources=present_sources(job, ctx.log))
    if job.keep is not None and job.compact and not compacts(job, repo):
        ctx.log(f"no compact: repository {job.repo} is reached through an append-only key, "
                "so prune only hides archives; the server frees the space when it compacts "
                "(docs/offsite.md)")
    for step in plan(job, ctx.name, repo, progress=ctx.tool_progress):
        result = run(step)
        if step.name == "create":
            _record_create(ctx, result.stdout)
        elif step.name == "prune":
            ctx.stats["pruned"] = borgtool.pruned_count(result.tail)
        elif step.name == "compact":
            ctx.stats["compact_freed"] = borgtool.freed_bytes(result.tail)


def _record_create(ctx: RunContext, stdout: str) -> None:
    try:
        stats = borgtool.parse_create_json(stdout)
    except (ValueError, KeyError, TypeError):
        ctx.warn("borg create printed no readable --json statistics")
        return
    ctx.stats.update(stats.as_stats())
    ctx.log(f"archive {stats.archive}: {stats.nfiles} files, "
            f"{human_size(stats.original_size)} original, "
            f"{human_size(stats.compressed_size)} compressed, "
            f"{human_size(stats.deduplicated_size)} new after deduplication, "
            f"in {stats.duration:.1f}s")
