"""The restore drill: restore a random sample of files from the latest archive into a
temporary directory and compare each with its source, where the source is unchanged
since the archive. A mismatch means the backup does not restore what was saved."""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from phobos.core.proc import StepRunner
from phobos.errors import StepFailed
from phobos.repos.operations import latest_archive
from phobos.repos.repo import Repo
from phobos.tools import borg as borgtool
from phobos.tools.borg_contents import prefix_pattern


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
            # pp: (the path and below it; a regular file has nothing below), not pf:
            # Borg before 1.2.5 (Debian 12 ships 1.2.4) extracts pf: paths but warns
            # that each "never matched" and exits 1 (borgbackup/borg#4110).
            paths = [prefix_pattern(item.path) for item in pick.chosen]
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
