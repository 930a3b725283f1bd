"""Operations on a repository, each one or two Borg commands run through ``run`` (see
:mod:`phobos.repos.repo`): init, info, list archives, export the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from phobos.core.proc import StepRunner
from phobos.errors import PhobosError, UsageError
from phobos.repos.repo import Repo
from phobos.tools import borg as borgtool


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


def latest_archive(repo: Repo, run: StepRunner, glob: str | None) -> str:
    """The name of the newest archive (matching ``glob``); PhobosError if there is none."""
    found = archives(repo, run, glob=glob, last=1)
    if not found:
        raise PhobosError(f"repository {repo.name} has no archives"
                          + (f" matching {glob}" if glob else ""),
                          "run an archive job first")
    return str(found[-1]["name"])


def key_export(repo: Repo, run: StepRunner, target: Path, *, paper: bool = False) -> None:
    """``borg key export`` of the repository's key to ``target``."""
    run(repo.step("key-export", borgtool.key_export_argv(repo.borg, repo.access, target,
                                                         paper=paper)))
