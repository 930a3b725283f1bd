"""Borg's view of what archives hold, and of reading a repository's copy: the items of
``borg list --json-lines`` (see :func:`phobos.tools.borg.list_files_argv`), the
repository id of ``borg list --json``, the pattern that selects one path and everything
below it, and the environment for a copy of a repository somewhere else (a drive).

Pure: no process is started here (:mod:`phobos.tools.borg` has the argv builders).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: Borg's one-letter item types, in words (``borg list`` prints the letter).
TYPE_WORDS = {"-": "file", "d": "directory", "l": "symlink", "h": "hardlink",
              "b": "block device", "c": "char device", "p": "fifo", "s": "socket"}


@dataclass(frozen=True, slots=True)
class Item:
    """One entry of an archive: ``path`` as Borg stores it (no leading slash), Borg's
    one-letter ``type`` (``-`` file, ``d`` directory, ``l`` symlink...), size in
    bytes, and ``mtime`` as Borg prints it (ISO local time with microseconds)."""

    path: str
    type: str
    size: int
    mtime: str
    healthy: bool = True


def parse_items(jsonl: str) -> list[Item]:
    """The items of ``borg list --json-lines --format '{size}{mtime}{healthy}'``."""
    items = []
    for line in jsonl.splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        items.append(Item(str(entry["path"]), str(entry.get("type") or "-"),
                          int(entry.get("size") or 0), str(entry.get("mtime") or ""),
                          bool(entry.get("healthy", True))))
    return items


def parse_repository_id(text: str) -> str:
    """The repository id in ``borg list --json`` (or ``borg info --json``) output."""
    return str(json.loads(text)["repository"]["id"])


def prefix_pattern(path: str) -> str:
    """The Borg pattern for the archive path ``path`` and everything below it, whatever
    characters the path holds (``pp:``: a path prefix, no wildcards; ``etc/fstab``
    matches ``etc/fstab`` and ``etc/fstab/...``, never ``etc/fstab.d``)."""
    return f"pp:{path}"


def copy_env(private_dir: Path) -> dict[str, str]:
    """What Borg needs, besides the repository's own environment, to read a copy of
    the repository in another place (a drive, mounted read-only):

    - ``BORG_RELOCATED_REPO_ACCESS_IS_OK=yes``: the copy has the repository's id but
      not the location Borg remembers for it; Borg would ask, and abort unattended;
    - its own ``BORG_SECURITY_DIR``: Borg remembers the newest manifest it has seen per
      repository id, and an older copy would look like a replay attack (exit 64);
    - its own ``BORG_CACHE_DIR``: the NAS's cache describes the NAS's repository.

    Keys (``keyfile`` mode) stay where ``BORG_BASE_DIR`` keeps them."""
    return {"BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_SECURITY_DIR": str(private_dir / "security"),
            "BORG_CACHE_DIR": str(private_dir / "cache")}
