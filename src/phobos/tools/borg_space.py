"""Borg and a full filesystem: what it prints when the repository's filesystem runs out
of room, and how much free space a Borg commit needs (for ``phobos doctor`` to warn
before it happens).

Borg refuses to commit with less free space than its own estimate (Borg's
``Repository.check_free_space``): four times the index, the hints, the repository's
``additional_free_space`` and, once a repository has ten segments or more to compact,
one full segment (``max_segment_size``, 500 MiB by default, plus the largest object,
20 MiB). It then says "Insufficient free space to complete transaction (required: …,
available: …)". Running out in the middle of writing a segment ends in a Python
traceback with ``[Errno 28] No space left on device`` and a debug block (``sys.argv:
[…]``) that says nothing to a person; :func:`diagnoser` turns both into one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from phobos.tools.borg_repository import repository_setting

DEFAULT_SEGMENT = 500 * 1024 * 1024  # Borg's default max_segment_size
MAX_OBJECT_SIZE = 20 * 1024 * 1024  # Borg's largest object, counted with a full segment
HINTS_OVERHEAD = 4096

_INSUFFICIENT = re.compile(r"Insufficient free space to complete transaction "
                           r"\(required: (?P<required>[^,]+), available: (?P<available>[^)]+)\)")
_NO_SPACE = ("No space left on device", "[Errno 28]")
_SIZE = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[kMGTP]?)(?:i?B)?\s*$")
_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "P": 1000**5}


def parse_size(text: str | None) -> int:
    """A size as Borg's config writes it (``0``, ``2G``, ``1.5T``); 0 if unreadable."""
    match = _SIZE.match(text or "")
    if match is None:
        return 0
    return int(float(match["number"]) * _UNITS[match["unit"]])


def human(size: float) -> str:
    """``545 MB``: decimal units, as Borg prints them."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}"
        size /= 1000
    return f"{size:.0f} TB"  # pragma: no cover - the loop always returns


def _newest(repo: Path, prefix: str) -> int:
    """Size of the newest ``index.N`` / ``hints.N`` file (0 when there is none)."""
    found = [p for p in repo.glob(f"{prefix}.*") if p.suffix[1:].isdigit()]
    if not found:
        return 0
    return max(found, key=lambda p: int(p.suffix[1:])).stat().st_size


def required_free_space(repo: Path) -> int:
    """Free bytes Borg wants for a commit to ``repo``, counting one full segment (the
    worst case, which Borg applies from ten segments to compact on)."""
    segment = parse_size(repository_setting(repo, "max_segment_size")) or DEFAULT_SEGMENT
    extra = parse_size(repository_setting(repo, "additional_free_space"))
    return (4 * _newest(repo, "index") + _newest(repo, "hints") + HINTS_OVERHEAD + extra
            + segment + MAX_OBJECT_SIZE)


def free_space(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding ``path`` (``/backup`` for its repo)."""
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


#: Borg commands that commit a transaction to the repository: a full disk they meet is
#: the repository's. (Others write elsewhere: extract to its target, check and list to
#: the cache; their "No space left on device" is not the repository's to explain.)
COMMITTING_COMMANDS = frozenset({"init", "create", "prune", "compact", "delete", "recreate",
                                 "rename", "upgrade"})


def commits(argv: Sequence[str]) -> bool:
    """Whether the Borg command line ``argv`` (``borg COMMAND ...``) commits to the
    repository (see :data:`COMMITTING_COMMANDS`)."""
    return len(argv) > 1 and argv[1] in COMMITTING_COMMANDS


def diagnoser(repo: Path) -> Callable[[Sequence[str]], tuple[str, str] | None]:
    """A step's ``diagnose`` for Borg commands that commit to ``repo`` (:func:`commits`):
    a full filesystem in one line (message, hint) instead of Borg's traceback; None for
    any other failure."""

    def diagnose(lines: Sequence[str]) -> tuple[str, str] | None:
        text = "\n".join(lines)
        insufficient = _INSUFFICIENT.search(text)
        if insufficient is None and not any(marker in text for marker in _NO_SPACE):
            return None
        where = mount_point(repo)
        if insufficient is not None:
            needs = insufficient["required"].strip()
            have = f"; {insufficient['available'].strip()} are free"
        else:
            required, free = required_free_space(repo), free_space(where)
            if free >= required:  # the repository's filesystem has room: the cache had not
                return (f"Borg ran out of space, though {where} (the repository's) has "
                        f"{human(free)} free", "check the filesystems of Borg's cache "
                        "(the repository's base_dir, or ~/.cache/borg) and of TMPDIR")
            needs, have = human(required), ""
        return (f"no space left on {where} (needs ~{needs} free for a Borg commit{have})",
                f"free space on {where}: delete what else is there, or prune archives and "
                "run `borg compact` (that needs some room itself); `phobos doctor` warns "
                "before this happens")

    return diagnose
