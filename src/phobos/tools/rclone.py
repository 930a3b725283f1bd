"""rclone: remote specs, argv of the copy-and-verify under Borg's lock, its output.

A cloud copy is ``rclone sync`` (a mirror: segments Borg compacted away must go from the
copy too, or the copy would not be the repository) followed by ``rclone check`` (sizes,
and hashes where both sides have one in common), both while ``borg with-lock`` holds
the repository still: with-lock commits a segment of its own after its command ends,
so a check after the lock would compare against a repository that moved on. Borg runs
one command under its lock, so that command is ``sh -c`` with a fixed script; every
value reaches rclone as a positional argument (``"$@"``), never as script text.

Credentials live in rclone's own config file (``--config``), never in argv: a remote
written as a connection string (``:s3,access_key_id=...:bucket``) is refused, and the
secret-looking values of the config file are redacted from the run's log.

Everything here is pure except :func:`config_secrets`, which reads the config file.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phobos.core.progress import LineReader, Progress, Reading
from phobos.tools.borg_repository import LOCK_FILES

RCLONE = "rclone"
DEFAULT_CONFIG = "rclone.conf"  # in [paths] keys
STATS_INTERVAL = "10s"
VERIFYING = "phobos: verifying the copy with rclone check"
CHECK_FAILED_BASE = 100  # the script's exit code when the check (not the sync) failed

# `rclone sync "$@"`, a marker line, then `rclone check "$@"`, its code moved above 100.
SYNC_THEN_CHECK = (f'rclone sync "$@" || exit $?; echo "{VERIFYING}"; '
                   f'rclone check "$@" || exit $(({CHECK_FAILED_BASE} + $?))')

_REMOTE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_. +@-]*$")


def remote_problem(remote: str) -> str | None:
    """Why ``remote`` is not a destination phobos hands rclone, or None: ``NAME:path``
    of a remote in rclone's config file, or an absolute local path."""
    if remote.startswith("/"):
        return None
    name, colon, _ = remote.partition(":")
    if not colon:
        return (f"{remote!r} is neither REMOTE:path (a remote of rclone's config file, "
                "e.g. \"b2:bucket/phobos\") nor an absolute path")
    if name.startswith(":") or "," in name or not name:
        return (f"{remote!r} is an on-the-fly remote or connection string: its settings "
                "(credentials) would be in argv; define the remote in rclone's config file")
    if not _REMOTE_NAME.match(name):
        return f"{name!r} is not an rclone remote name"
    return None


def config_path(keys: Path, own: Path | None = None) -> Path:
    """rclone's config file of a cloud copy: its own ``rclone_config``, or
    ``rclone.conf`` in the keys directory ``keys``."""
    return own or keys / DEFAULT_CONFIG


def remote_name(remote: str) -> str:
    """``b2`` of ``b2:bucket/phobos``; ``local`` for a path."""
    return "local" if remote.startswith("/") else remote.partition(":")[0]


# --- argv ----------------------------------------------------------------------------


def excludes() -> list[str]:
    """Borg's lock files: meaningless in a copy, where they would need a break-lock."""
    found = []
    for name in LOCK_FILES:
        found += ["--exclude", f"/{name}", "--exclude", f"/{name}/**"]
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyPlan:
    """What to copy where, and how."""

    source: Path
    remote: str
    config: Path
    bwlimit: str | None = None
    transfers: int = 4
    options: tuple[str, ...] = ()


def common_args(plan: CopyPlan) -> list[str]:
    """The arguments ``rclone sync`` and ``rclone check`` share (all rclone flags are
    global): source, destination, config file, filters, limits, progress lines."""
    args = [f"{plan.source}/", plan.remote, "--config", str(plan.config), *excludes(),
            "--transfers", str(plan.transfers), "-v", "--stats", STATS_INTERVAL,
            "--stats-one-line"]
    if plan.bwlimit:
        args += ["--bwlimit", plan.bwlimit]
    return [*args, *plan.options]


def sync_then_check_argv(plan: CopyPlan) -> list[str]:
    """The command run under Borg's lock: ``sh -c SCRIPT rclone ARGS...`` (the fixed
    script runs sync, then check, with the same arguments)."""
    return ["sh", "-c", SYNC_THEN_CHECK, RCLONE, *common_args(plan)]


# --- exit codes and output ----------------------------------------------------------

_MEANINGS = {
    1: "syntax or usage error, or a failed operation (see the log)",
    2: "error not otherwise categorised", 3: "directory not found", 4: "file not found",
    5: "temporary error (the next run retries)", 6: "less serious errors (see the log)",
    7: "fatal error: the remote refuses (account suspended, quota, credentials?)",
    8: "transfer limit reached (--max-transfer)", 9: "no files transferred",
}


def explain(code: int) -> str:
    """What the exit code of the sync-then-check script means."""
    if code >= CHECK_FAILED_BASE + 1 and code < CHECK_FAILED_BASE + 20:
        return ("verification failed: the copy differs from the repository (rclone check "
                f"{code - CHECK_FAILED_BASE}; the differing files are in the log)")
    if code == 2:
        return "rclone: " + _MEANINGS[2] + ", or a Borg error such as a lock timeout"
    if code in _MEANINGS:
        return "rclone sync: " + _MEANINGS[code]
    return f"killed by signal {code - 128}" if code > 128 else ""


_STATS = re.compile(r"(?P<done>[\d.]+ ?[KMGTP]?i?B) / (?P<total>[\d.]+ ?[KMGTP]?i?B), "
                    r"(?:(?P<pct>\d+)%|-)(?:, (?P<rate>[\d.]+ ?[KMGTP]?i?B)/s"
                    r"(?:, ETA (?P<eta>[\dhms]+|-))?)?")
_ETA_PART = re.compile(r"(\d+)([hms])")
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50}
_MATCHING = re.compile(r": (\d+) matching files")
_HASH = re.compile(r"Using (\w+) for hash comparisons")
_COPIED = re.compile(r": Copied \(")
_DELETED = re.compile(r": Deleted$")


def _bytes(text: str) -> int:
    number, unit = re.match(r"([\d.]+) ?(\S+)", text).groups()  # type: ignore[union-attr]
    return round(float(number) * _UNITS.get(unit, 1))


def parse_output(lines: Iterable[str]) -> dict[str, Any]:
    """Stats of one sync-then-check from its output lines (a tail that reaches back to
    the sync's last progress line): bytes sent (rclone's figure, 4 significant digits),
    files copied and deleted as far as the lines reach, files verified and how."""
    sync: list[str] = []
    check: list[str] = []
    seen_marker = False
    for line in lines:
        if VERIFYING in line:
            seen_marker = True
        (check if seen_marker else sync).append(line)
    stats: dict[str, Any] = {"bytes_sent": 0, "verified": seen_marker}
    for line in reversed(sync):
        if match := _STATS.search(line):
            stats["bytes_sent"] = _bytes(match.group("done"))
            stats["bytes_total"] = _bytes(match.group("total"))
            break
    stats["files_copied"] = sum(1 for line in sync if _COPIED.search(line))
    stats["files_deleted"] = sum(1 for line in sync if _DELETED.search(line))
    for line in check:
        if match := _MATCHING.search(line):
            stats["files_verified"] = int(match.group(1))
        if match := _HASH.search(line):
            stats["verified_by"] = match.group(1)
    if seen_marker and "verified_by" not in stats:
        stats["verified_by"] = "size"  # rclone found no hash both sides have
    return stats


def _eta(text: str | None) -> float | None:
    if not text or text == "-":
        return None
    factors = {"h": 3600, "m": 60, "s": 1}
    return float(sum(int(n) * factors[unit] for n, unit in _ETA_PART.findall(text)))


def progress_reader() -> LineReader:
    """A reader of rclone's ``--stats-one-line`` lines (see :mod:`phobos.core.progress`):
    bytes done of the total, percent, rate, rclone's time left. Progress lines leave the
    log; so that the run still records what the sync sent, its last one is kept, as
    ``rclone sync: DONE / TOTAL, PCT%``, in front of the line that starts the check."""
    state: dict[str, str] = {}

    def read(_stream: str, line: str) -> Reading:
        if VERIFYING in line:
            state["checking"] = "yes"
            sent = state.pop("sent", None)
            return Reading(line if sent is None else f"rclone sync: {sent}\n{line}")
        match = _STATS.search(line)
        if match is None:
            return Reading(line)
        if "checking" not in state:
            state["sent"] = (f"{match.group('done')} / {match.group('total')}, "
                             f"{match.group('pct') or 0}%")
        rate = match.group("rate")
        return Reading(None, Progress(
            bytes_done=_bytes(match.group("done")), bytes_total=_bytes(match.group("total")),
            fraction=None if match.group("pct") is None else int(match.group("pct")) / 100,
            rate=None if rate is None else float(_bytes(rate)), eta=_eta(match.group("eta")),
            detail="rclone check" if "checking" in state else None))

    return read


# --- the config file's secrets --------------------------------------------------------

_SECRET_KEYS = re.compile(r"pass|secret|token|key|sas_url|credentials|auth",
                          re.IGNORECASE)
_NOT_SECRET = re.compile(r"^(true|false|yes|no|on|off|\d+)$", re.IGNORECASE)


def config_secrets(config: Path, names: Sequence[str] = ()) -> list[str]:
    """Values of secret-looking keys (passwords, tokens, access keys) in rclone's config
    file, of the remotes ``names`` (all if empty), for redaction. Unreadable: none."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, configparser.Error):
        return []
    found = []
    for section in parser.sections():
        if names and section not in names:
            continue
        for key, value in parser.items(section):
            value = value.strip()
            if _SECRET_KEYS.search(key) and not key.endswith("_file") and len(value) >= 8 \
                    and not _NOT_SECRET.match(value):
                found.append(value)
    return found


def remote_type(config: Path, name: str) -> str | None:
    """The ``type`` of remote ``name`` in rclone's config file (None: unknown)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(config.read_text(encoding="utf-8"))
        return parser.get(name, "type", fallback=None)
    except (OSError, UnicodeDecodeError, configparser.Error):
        return None
