"""One Borg repository as phobos reaches it: its ``[repos.NAME]`` table, the Borg
environment and passphrase pipe, :class:`Repo` (ready for Borg commands), Borg steps with
the repository's exit-code explanations, and running steps outside a job.

The operations on a repository (:mod:`phobos.repos.operations`, :mod:`phobos.repos.drill`)
take a ``run`` callable that executes one :class:`~phobos.core.step.Step`: a job passes
``ctx.run`` (recorded in history), the CLI passes :func:`direct_runner` (echoed to the
terminal). Either way every process goes through :func:`phobos.core.proc.run`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from phobos.config.checks import check_ref
from phobos.config.model import Config
from phobos.config.schema import Problems, suggest
from phobos.config.tables import RepoConfig
from phobos.core.step import Step
from phobos.errors import PhobosError, UsageError
from phobos.repos.remote import borg_env, endpoint, require_key
from phobos.tools import borg as borgtool
from phobos.tools import borg_repository, borg_space
from phobos.tools.borg_contents import copy_env
from phobos.tools.ssh import Endpoint

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
        check_ref(problems, path, "repo", name, config.repos)
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
    return borgtool.access(borg, repo.location, lock_wait=repo.lock_wait,
                           base_dir=repo.base_dir, passcommand=repo.passcommand,
                           passphrase=passphrase_of(repo),
                           remote_env=borg_env(config, name) if repo.url else None)


# --- Borg steps ---------------------------------------------------------------------------


def borg_step(name: str, argv: Sequence[str], acc: borgtool.Access, borg: borgtool.Borg,
              repo_path: Path | None, *, capture: bool = False, problems_fail: bool = False,
              cwd: str | None = None) -> Step:
    """A Borg step with the repository's environment, passphrase pipe and exit codes
    (``repo_path`` None: a remote repository, whose lock files are out of reach); a
    command that commits to a repository here says a full filesystem in one line."""
    diagnose = (borg_space.diagnoser(repo_path)
                if repo_path is not None and borg_space.commits(argv) else None)
    return Step(name=name, argv=tuple(argv), env=acc.env, secrets=acc.secrets,
                stdin=acc.stdin, capture=capture, cwd=cwd,
                warn_codes=borgtool.warn_codes(borg, problems_fail=problems_fail),
                explain=explainer(repo_path, problems_fail=problems_fail),
                diagnose=diagnose)


def explainer(repo_path: Path | None, *,
              problems_fail: bool = False) -> Callable[[int], str]:
    """Explains a Borg exit code; for lock failures it names who holds Borg's lock
    (when the repository is on this machine: ``repo_path``)."""

    def explain(code: int) -> str:
        if problems_fail and code == 1:
            return "the check found problems in the repository (see the log)"
        meaning = borgtool.meaning(code)
        if repo_path is not None and (code in borgtool.LOCK_CODES or code == 2):
            holders = [h for h in borg_repository.lock_holders(repo_path)
                       if h.pid != os.getpid()]
            if holders:
                meaning += "; " + "; ".join(h.describe() for h in holders)
        return meaning

    return explain


@dataclass(frozen=True, slots=True, kw_only=True)
class Repo:
    """One repository ready for Borg commands."""

    name: str
    config: RepoConfig
    borg: borgtool.Borg
    access: borgtool.Access
    lock_dir: Path | None = None  # phobos's resource locks: who runs which job
    endpoint: Endpoint | None = None  # where Borg logs in, for a repository over SSH

    @classmethod
    def open(cls, config: Config, name: str) -> Repo:
        borg = borgtool.find(cache=config.paths.state / "borg-version.json")
        repo = repo_config(config, name)
        server = endpoint(config, name) if repo.url else None
        if server is not None:
            require_key(server)
        return cls(name=name, config=repo, borg=borg,
                   access=access(config, name, borg), lock_dir=config.paths.run / "locks",
                   endpoint=server)

    @property
    def local_path(self) -> Path | None:
        """The repository's directory on this machine (None: on a server, over SSH)."""
        return self.config.path if self.config.url is None else None

    @classmethod
    def copy_at(cls, config: Config, name: str, location: Path, private_dir: Path) -> Repo:
        """Repository ``name`` as copied to ``location`` (a drive, mounted read-only):
        Borg reads it without its lock, as a relocated repository, with a security and
        cache directory of its own below ``private_dir`` (see
        :func:`phobos.tools.borg_contents.copy_env`)."""
        main = cls.open(config, name)
        env = {**main.access.env, **copy_env(private_dir)}
        if main.config.encryption == "none":
            # The copy's own security directory has never seen it: Borg would ask about
            # an unknown unencrypted repository, which the config says this one is.
            env["BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK"] = "yes"
        copy = dataclasses.replace(main.access, location=str(location),
                                   env=MappingProxyType(env), bypass_lock=True)
        return cls(name=name, config=dataclasses.replace(main.config, path=location),
                   borg=main.borg, access=copy, lock_dir=None)

    def step(self, name: str, argv: Sequence[str], **kwargs: Any) -> Step:
        return borg_step(name, argv, self.access, self.borg, self.local_path, **kwargs)


# --- running steps outside a job --------------------------------------------------------
