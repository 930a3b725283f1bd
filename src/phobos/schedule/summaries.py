"""One line of what a run did, from its stats, for `phobos status` and the dashboard."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def size(count: float | None) -> str:
    """``1.5 GiB`` style (binary units, as Borg and rsync users expect)."""
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - loop always returns


def _pull(stats: Mapping[str, Any]) -> str:
    failed = stats.get("failed_hosts") or []
    text = (f"{stats.get('files', 0)} files, {stats.get('files_transferred', 0)} changed, "
            f"{size(stats.get('bytes_transferred'))} moved")
    return text + (f"; failed: {', '.join(failed)}" if failed else "")


def _archive(stats: Mapping[str, Any]) -> str:
    return (f"{stats.get('nfiles', 0)} files, {size(stats.get('original_size'))} → "
            f"{size(stats.get('deduplicated_size'))} new; pruned {stats.get('pruned', 0)}")


def _check(stats: Mapping[str, Any]) -> str:
    coverage = stats.get("coverage")
    if coverage is None:
        return f"{stats.get('mode', 'check')} of {stats.get('repo', '?')}"
    done = " (pass complete)" if stats.get("pass_complete") else ""
    return f"coverage {coverage * 100:.0f}%{done}"


def _drive_sync(stats: Mapping[str, Any]) -> str:
    drives = stats.get("drives") or {}
    return "; ".join(f"{name}: {d.get('files', 0)} files, {size(d.get('bytes'))}"
                     for name, d in sorted(drives.items()))


def _drill(stats: Mapping[str, Any]) -> str:
    keys = ("files_checked", "mismatches")
    if not all(k in stats for k in keys):
        return ""
    return f"{stats['files_checked']} files checked, {stats['mismatches']} mismatches"


def _cloud_sync(stats: Mapping[str, Any]) -> str:
    if "bytes_sent" not in stats:
        return ""
    verified = (f", {stats.get('files_verified', '?')} files verified by "
                f"{stats.get('verified_by', '?')}" if stats.get("verified") else "")
    return f"{size(stats['bytes_sent'])} sent{verified}"


_BY_KIND: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "pull": _pull, "archive": _archive, "check": _check, "drive-sync": _drive_sync,
    "drill": _drill, "cloud-sync": _cloud_sync,
}


def summary(kind: str, stats: Mapping[str, Any] | None) -> str:
    """What the run did in a few words; empty when the stats say nothing."""
    if not stats or kind not in _BY_KIND:
        return ""
    try:
        return _BY_KIND[kind](stats)
    except (TypeError, ValueError, AttributeError):
        return ""  # stats of an older phobos: better nothing than a crash in `status`
