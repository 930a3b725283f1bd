"""The ``command`` kind: run any argv as a job, with declared resources.

The original setup's ``backup-luv``, ``sync-nuhc`` and ``backup-chew`` are jobs of this
kind: phobos adds locking, history, notifications and the schedule view to a script.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.config.schema import Problems, setting, suggest
from phobos.core.locks import Resource
from phobos.core.runner import RunContext
from phobos.core.step import Step

_RESOURCE = re.compile(r"^(?:storage|(?:holding|repo|drive|[a-z][a-z0-9_-]*):"
                       r"[A-Za-z0-9][A-Za-z0-9._-]*)$")
_TABLE_OF = {"holding": "hosts", "repo": "repos", "drive": "drives"}


def _nonempty(argv: tuple[str, ...]) -> str | None:
    return None if argv else "must name a program to run, e.g. [\"/usr/local/bin/sync-nuhc\"]"


def _empty_env() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandJob(JobBase):
    argv: tuple[str, ...] = setting(doc="Program and arguments (no shell).", check=_nonempty)
    env: Mapping[str, str] = setting(factory=_empty_env, doc="Extra environment variables.")
    secret_env: Mapping[str, str] = setting(factory=_empty_env, secret=True,
                                            doc="Environment variables holding secrets: "
                                            "masked in output and redacted from logs.")
    cwd: Path | None = setting(None, doc="Working directory.")
    ok_codes: tuple[int, ...] = setting((0,), doc="Exit codes meaning success.")
    warn_codes: tuple[int, ...] = setting((), doc="Exit codes meaning success with warnings.")
    reads: tuple[str, ...] = setting((), doc="Resources read (shared lock), e.g. "
                                     "`\"holding:luv\"`, `\"repo:main\"`, `\"storage\"`.")
    writes: tuple[str, ...] = setting((), doc="Resources written (exclusive lock).")

    def resources(self, config: Config) -> tuple[Resource, ...]:
        return (*(Resource(name, write=False) for name in self.reads),
                *(Resource(name, write=True) for name in self.writes))

    def secret_values(self) -> list[str]:
        return list(self.secret_env.values())

    def check_refs(self, config: Config, path: tuple[str, ...], problems: Problems) -> None:
        for key in ("reads", "writes"):
            for index, name in enumerate(getattr(self, key)):
                message = resource_problem(name, config)
                if message:
                    problems.add((*path, key, f"[{index}]"), message)


def resource_problem(name: str, config: Config) -> str | None:
    """Why ``name`` is not a usable resource name, or None."""
    if not _RESOURCE.match(name):
        return (f"{name!r} is not a resource: use storage, holding:HOST, repo:REPO, "
                "drive:DRIVE, or your own KIND:NAME")
    prefix, _, target = name.partition(":")
    table = _TABLE_OF.get(prefix)
    if table is not None and target not in getattr(config, table):
        return (f"{name!r} names no entry of [{table}]"
                + suggest(target, getattr(config, table)))
    return None


CONFIG = CommandJob


def plan(job: CommandJob) -> list[Step]:
    """One step: the command itself."""
    return [Step(name="command", argv=job.argv, env={**job.env, **job.secret_env},
                 secrets=tuple(job.secret_env.values()), ok_codes=job.ok_codes,
                 warn_codes=job.warn_codes, cwd=str(job.cwd) if job.cwd else None)]


def execute(ctx: RunContext) -> None:
    assert isinstance(ctx.job, CommandJob)
    for step in plan(ctx.job):
        ctx.run(step)
