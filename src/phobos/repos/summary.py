"""What phobos knows about a repository without running Borg: from its files
(initialized, segments, the sliced check's position, Borg lock holders) and from phobos's
history (the last archive and check), for ``phobos repo status`` and the dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from phobos.config.model import Config
from phobos.config.tables import RepoConfig
from phobos.repos.repo import repo_config
from phobos.tools import borg_repository


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

    if config.storage.device is None or repo.path is None \
            or not repo.path.is_relative_to(config.storage.root):
        return False
    return not namespace.is_inside(namespace.of(config))


def _files_summary(path: Path) -> dict[str, Any]:
    segments = borg_repository.segment_ids(path)
    position = borg_repository.check_position(path)
    return {
        "initialized": (path / "config").is_file(),
        "segments": len(segments),
        "check_position": position,
        "pass_coverage": (round(sum(1 for s in segments if s <= position) / len(segments), 4)
                          if position is not None and segments else None),
        "borg_locks": [h.describe() for h in borg_repository.lock_holders(path)],
    }


def summary(config: Config, name: str, history: Any) -> dict[str, Any]:
    """Repository state from its files and phobos's history: initialized, segments,
    the sliced check's live position, Borg lock holders, the last archive and check."""
    repo = repo_config(config, name)
    hidden = _hidden_from_here(config, repo)
    files: dict[str, Any] = {"initialized": None, "segments": None, "check_position": None,
                             "pass_coverage": None, "borg_locks": []}
    if repo.path is not None and not hidden:  # files out of sight are unknown, not
        files = _files_summary(repo.path)     # "not initialized"
    out: dict[str, Any] = {"name": name, "path": repo.location, "remote": repo.url is not None,
                           "hidden": hidden, **files, "last_archive": None, "last_check": None}
    archive = _latest_stats(config, history, name, "archive", "archive")
    if archive is not None:
        out["last_archive"] = {"job": archive[0], "run_id": archive[1].id,
                               "started": archive[1].started, **archive[1].stats}
    check = _latest_stats(config, history, name, "check", "pass_complete")
    if check is not None:
        out["last_check"] = {"job": check[0], "run_id": check[1].id,
                             "started": check[1].started, **check[1].stats}
        if repo.url is not None:  # the server keeps the position; its last report
            out["check_position"] = check[1].stats.get("position")
    return out
