"""Borg: the binary and its version, argv builders, output parsers, exit codes, locks.

Everything here is pure except :func:`find` (runs ``borg --version`` once per process
and binary, through :func:`phobos.core.proc.run`) and the readers of a repository's own
files (:func:`lock_holders`, :func:`check_position`, :func:`segment_ids`), which only
read. Supported: Borg 1.2 and later (1.4 gets ``BORG_EXIT_CODES=modern``).

How the passphrase reaches Borg: a ``passcommand`` becomes ``BORG_PASSCOMMAND`` (Borg
runs it; phobos never sees the passphrase). A passphrase *file* is read by phobos and
written into the child's stdin with ``BORG_PASSPHRASE_FD=0``: a pipe, so the passphrase
is in neither argv nor the environment (``/proc/PID/environ`` is readable by the same
user and ends up in core dumps). fd 0 rather than an extra inherited descriptor because
the core's Step already carries stdin and no Borg command phobos runs reads stdin
otherwise; Borg reads the pipe to EOF once, at start-up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from phobos.core import proc
from phobos.core.files import write_atomic
from phobos.errors import ToolMissing
from phobos.tools.borg_repository import host_id

MIN_VERSION = (1, 2, 0)
WARNING_CODES_MODERN = tuple(range(100, 128))

# --- the binary --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Borg:
    """One Borg binary and what it can do, by version."""

    path: str
    version: tuple[int, int, int]

    @property
    def modern_exit_codes(self) -> bool:
        """Borg >= 1.4 gives specific exit codes with BORG_EXIT_CODES=modern."""
        return self.version >= (1, 4, 0)

    @property
    def has_compact(self) -> bool:
        """``borg compact`` exists from 1.2 on (before, prune freed space itself)."""
        return self.version >= (1, 2, 0)

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_found: dict[str, Borg] = {}


def parse_version(text: str) -> tuple[int, int, int]:
    """``(1, 4, 5)`` from ``borg 1.4.5`` (also ``borg 1.4.0b1``, ``borg.exe 1.2.4``)."""
    match = _VERSION.search(text)
    if not match:
        raise ToolMissing(f"cannot read Borg's version from {text.strip()!r}",
                          "check that `borg --version` works")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def find(program: str = "borg", cache: Path | None = None) -> Borg:
    """The Borg on PATH (the PATH children get) and its version; cached per process and,
    with ``cache``, in that JSON file keyed by the binary's inode, size and mtime (an
    upgrade rewrites the file): ``borg --version`` costs ~0.2 s per job otherwise."""
    search_path = proc.child_env().get("PATH")
    path = shutil.which(program, path=search_path)
    if path is None:
        raise ToolMissing(f"{program}: not found on PATH",
                          "install Borg >= 1.2 (Debian: apt install borgbackup; "
                          "or pip install 'borgbackup>=1.4') or fix PATH")
    if path not in _found:
        version = _cached_version(path, cache)
        if version is None:
            result = proc.run([path, "--version"], capture=True, timeout=120)
            version = parse_version(result.stdout)
            _store_version(path, cache, version)
        borg = Borg(path=path, version=version)
        if borg.version < MIN_VERSION:
            raise ToolMissing(f"{path} is Borg {borg.version_text}; phobos needs 1.2 or later",
                              "install a newer borgbackup")
        _found[path] = borg
    return _found[path]


def _identity(path: str) -> list[int]:
    st = os.stat(path)
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _cached_version(path: str, cache: Path | None) -> tuple[int, int, int] | None:
    if cache is None:
        return None
    try:
        entry = json.loads(cache.read_text()).get(path, {})
        if entry.get("identity") == _identity(path):
            major, minor, patch = (int(v) for v in entry["version"])
            return major, minor, patch
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass
    return None


def _store_version(path: str, cache: Path | None, version: tuple[int, int, int]) -> None:
    if cache is None:
        return
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(cache.read_text()) if cache.exists() else {}
        known[path] = {"identity": _identity(path), "version": list(version)}
        # atomic: parallel jobs never read half a file
        write_atomic(cache, json.dumps(known), parents=True)


# --- reaching one repository ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Access:
    """How to reach one repository: location, environment, passphrase pipe, lock wait.

    ``stdin`` is the passphrase for ``BORG_PASSPHRASE_FD=0`` (or None); ``secrets`` are
    the values to redact from every log line and to refuse in argv.
    """

    location: str
    env: Mapping[str, str]
    stdin: bytes | None
    secrets: tuple[str, ...]
    lock_wait: int
    bypass_lock: bool = False  # a copy on a read-only mount: Borg cannot write its lock


def base_env(base_dir: Path | None = None) -> dict[str, str]:
    """The environment every Borg phobos runs gets, even one that needs no passphrase
    (``borg with-lock``, ``key export``, borgmatic's): the stable host id (see
    :func:`host_id`: stale locks must be recognised) and ``BORG_BASE_DIR`` if set."""
    env = {"BORG_HOST_ID": host_id()}
    if base_dir is not None:
        env["BORG_BASE_DIR"] = str(base_dir)
    return env


def access(borg: Borg, location: Path | str, *, lock_wait: float,
           base_dir: Path | None = None, passcommand: str | None = None,
           passphrase: str | None = None,
           remote_env: Mapping[str, str] | None = None) -> Access:
    """The Access for a repository; at most one of passcommand and passphrase.
    ``remote_env`` (``BORG_RSH``, ``BORG_REMOTE_PATH``) for one reached over SSH."""
    if passcommand is not None and passphrase is not None:
        raise ValueError("give Borg either a passcommand or a passphrase, not both")
    env: dict[str, str] = {
        # Never answer Borg's yes/no questions with yes behind the user's back.
        "BORG_RELOCATED_REPO_ACCESS_IS_OK": "no",
        "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
        "BORG_DISPLAY_PASSPHRASE": "no",
        **base_env(base_dir),
        **(remote_env or {}),
    }
    if borg.modern_exit_codes:
        env["BORG_EXIT_CODES"] = "modern"
    stdin = None
    secrets: tuple[str, ...] = ()
    if passcommand is not None:
        env["BORG_PASSCOMMAND"] = passcommand
    elif passphrase is not None:
        env["BORG_PASSPHRASE_FD"] = "0"
        stdin = passphrase.encode()
        secrets = (passphrase,)
    return Access(location=str(location), env=MappingProxyType(env), stdin=stdin,
                  secrets=secrets, lock_wait=max(1, round(lock_wait)))


def _base(borg: Borg, command: str, acc: Access, *options: str) -> list[str]:
    bypass = ["--bypass-lock"] if acc.bypass_lock else []
    return [borg.path, command, "--lock-wait", str(acc.lock_wait), *bypass, *options]


# --- argv builders (pure) ----------------------------------------------------------------


def init_argv(borg: Borg, acc: Access, encryption: str) -> list[str]:
    return [*_base(borg, "init", acc, "--encryption", encryption, "--make-parent-dirs"),
            "--", acc.location]


def info_argv(borg: Borg, acc: Access) -> list[str]:
    return [*_base(borg, "info", acc, "--json"), "--", acc.location]


def list_argv(borg: Borg, acc: Access, *, glob: str | None = None,
              last: int | None = None) -> list[str]:
    """Archives as JSON (checkpoints excluded), optionally filtered and the last N."""
    options = ["--json"]
    if glob is not None:
        options += ["--glob-archives", glob]
    if last is not None:
        options += ["--last", str(last)]
    return [*_base(borg, "list", acc, *options), "--", acc.location]


def list_files_argv(borg: Borg, acc: Access, archive: str) -> list[str]:
    """The archive's items as JSON lines with size and mtime (format keys are added)."""
    return [*_base(borg, "list", acc, "--json-lines", "--format", "{size}{mtime}{healthy}"),
            "--", f"{acc.location}::{archive}"]


def key_export_argv(borg: Borg, acc: Access, target: Path, *, paper: bool = False) -> list[str]:
    options = ["--paper"] if paper else []
    return [borg.path, "key", "export", "--lock-wait", str(acc.lock_wait), *options, "--",
            acc.location, str(target)]


def create_argv(borg: Borg, acc: Access, *, archive: str, sources: Sequence[Path | str],
                exclude: Sequence[str] = (), compression: str | None = None,
                options: Sequence[str] = ()) -> list[str]:
    """``borg create --json`` (stats on stdout); options before ``--``, paths after."""
    argv = _base(borg, "create", acc, "--json")
    if compression:
        argv += ["--compression", compression]
    for pattern in exclude:
        argv += ["--exclude", pattern]
    return [*argv, *options, "--", f"{acc.location}::{archive}", *map(str, sources)]


def prune_argv(borg: Borg, acc: Access, *, keep: Sequence[str], glob: str) -> list[str]:
    """``borg prune --list`` of the archives matching ``glob`` only."""
    if not keep:
        raise ValueError("prune needs at least one --keep-* rule")
    return [*_base(borg, "prune", acc, "--list", "--glob-archives", glob, *keep),
            "--", acc.location]


def compact_argv(borg: Borg, acc: Access) -> list[str] | None:
    """``borg compact`` (None before 1.2: there prune frees space itself)."""
    if not borg.has_compact:
        return None
    return [*_base(borg, "compact", acc, "--info"), "--", acc.location]


def check_argv(borg: Borg, acc: Access, *, max_duration: int | None = None,
               last: int | None = None, verify_data: bool = False,
               glob: str | None = None) -> list[str]:
    """The check to run, by its settings.

    ``max_duration``: a repository-only slice (resumes where the last stopped).
    ``last``/``verify_data``/``glob`` without ``max_duration``: an archives-only check
    (the repository part would reset the slice position). Nothing: a full check.
    """
    options = ["--info"]
    if max_duration is not None:
        if last is not None or verify_data or glob is not None:
            raise ValueError("max_duration checks the repository only: no last, "
                             "verify_data or glob with it")
        options += ["--repository-only", "--max-duration", str(max(1, max_duration))]
    elif last is not None or verify_data or glob is not None:
        options.append("--archives-only")
        if verify_data:
            options.append("--verify-data")
        if glob is not None:
            options += ["--glob-archives", glob]
        if last is not None:
            options += ["--last", str(last)]
    return [*_base(borg, "check", acc, *options), "--", acc.location]


def extract_argv(borg: Borg, acc: Access, archive: str, paths: Sequence[str], *,
                 strip_components: int = 0, list_items: bool = False) -> list[str]:
    """Extract ``paths`` (archive paths, no leading slash) into the working directory,
    without the first ``strip_components`` path components; ``list_items`` makes Borg
    print each extracted path on stderr (progress)."""
    options = ["--list"] if list_items else []
    if strip_components:
        options += ["--strip-components", str(strip_components)]
    return [*_base(borg, "extract", acc, *options), "--", f"{acc.location}::{archive}",
            *paths]


# --- output parsers -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateStats:
    archive: str
    original_size: int
    compressed_size: int
    deduplicated_size: int
    nfiles: int
    duration: float

    def as_stats(self) -> dict[str, Any]:
        return {"archive": self.archive, "original_size": self.original_size,
                "compressed_size": self.compressed_size,
                "deduplicated_size": self.deduplicated_size, "nfiles": self.nfiles,
                "duration": self.duration}


def parse_create_json(text: str) -> CreateStats:
    """Stats from ``borg create --json`` output. Raises ValueError if it is not that."""
    data = json.loads(text)
    archive = data["archive"]
    stats = archive["stats"]
    return CreateStats(archive=str(archive["name"]),
                       original_size=int(stats["original_size"]),
                       compressed_size=int(stats["compressed_size"]),
                       deduplicated_size=int(stats["deduplicated_size"]),
                       nfiles=int(stats["nfiles"]), duration=float(archive["duration"]))


_PRUNING = re.compile(r"Pruning archive \((\d+)/(\d+)\)")
_FREED = re.compile(r"compaction freed about ([\d.]+) ?([kKMGTPE]?i?B)")
_UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "PB": 10**15, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50}


def pruned_count(lines: Iterable[str]) -> int:
    """Archives pruned, from ``prune --list`` lines ("Pruning archive (3/5)": 5)."""
    counts = [int(m.group(2)) for line in lines if (m := _PRUNING.search(line))]
    return max(counts, default=0)


def freed_bytes(lines: Iterable[str]) -> int | None:
    """Bytes freed, from ``compact --info`` ("compaction freed about 1.2 MB ...")."""
    for line in lines:
        match = _FREED.search(line)
        if match:
            return round(float(match.group(1)) * _UNITS.get(match.group(2), 1))
    return None


def parse_archives(text: str) -> list[dict[str, Any]]:
    """The archives of ``borg list --json``: name, start time, id."""
    archives = json.loads(text).get("archives", [])
    return [{"name": a["name"], "time": a.get("time") or a.get("start"), "id": a["id"]}
            for a in archives]


# --- exit codes -----------------------------------------------------------------------------

_MEANINGS: Mapping[int, str] = MappingProxyType({
    1: "warning: Borg reached the end but reported problems (see the log)",
    2: "error: Borg stopped before the end (see the log)",
    3: "cancelled by the user", 4: "command error: Borg refused the arguments",
    5: "bad placeholder in a name", 6: "invalid placeholder in a name",
    10: "a repository already exists there", 12: "inconsistency: run `borg check`",
    13: "the repository does not exist (run `phobos repo init`)",
    15: "not a valid Borg repository", 17: "an object is missing from the repository",
    18: "the parent directory of the repository does not exist",
    19: "there is already something at that path",
    20: "storage quota exceeded", 21: "permission denied on the repository",
    30: "an archive of that name already exists", 31: "no such archive",
    40: "invalid key data", 41: "key file does not match the repository",
    42: "key file not found", 44: "no key in the repository config",
    50: "no passphrase available (set passcommand or passphrase_file)",
    51: "the passcommand failed", 52: "wrong passphrase",
    60: "cache initialization aborted", 61: "the repository's encryption changed",
    62: "repository access aborted (relocated or unknown unencrypted repository)",
    63: "cache is newer than the repository", 64: "repository replay detected",
    70: "cannot acquire the repository lock", 71: "cannot acquire the repository lock",
    72: "cannot create the repository lock", 73: "timed out waiting for the repository lock",
    74: "lock was not held", 75: "lock held by someone else",
    80: "the connection to the repository's server closed (network, SSH, or Borg not "
        "working on the server)", 81: "the connection to the repository's server closed "
    "(network, SSH, or Borg not working on the server)",
    82: "the server's Borg does not know this request (too old?)",
    83: "the server does not allow this repository path (--restrict-to-repository)",
    84: "the server's Borg is too old", 85: "the server could not read the request",
    86: "unexpected data from the server", 87: "the connection to the repository's server "
    "broke",
    90: "data integrity error", 91: "file integrity error", 92: "decompression error",
    100: "a file changed while it was backed up",
    101: "an include pattern never matched", 102: "backup error on some files",
    103: "a file changed type while it was backed up",
    104: "OS error on some files", 105: "permission denied on some files",
    106: "I/O error on some files", 107: "some files vanished during the backup",
})

LOCK_CODES = frozenset({70, 71, 72, 73})


def warn_codes(borg: Borg, *, problems_fail: bool = False) -> tuple[int, ...]:
    """Exit codes meaning "done, with warnings".

    ``problems_fail`` for ``borg check``: it reports the problems it finds with exit
    code 1, which for a check is a failure, not a warning.
    """
    generic = () if problems_fail else (1,)
    return (*generic, *(WARNING_CODES_MODERN if borg.modern_exit_codes else ()))


def meaning(code: int) -> str:
    """What a Borg exit code means (modern codes, the legacy 1/2, signals)."""
    if code >= 128:
        return f"killed by signal {code - 128}"
    if code in _MEANINGS:
        return _MEANINGS[code]
    if 100 <= code < 128:
        return "warning"
    return "error" if code >= 2 else ""


# --- Borg's own repository lock: waiting and taking it -----------------------------------


# Commands that take Borg's exclusive repository lock (the others take a shared one).
EXCLUSIVE_COMMANDS = frozenset({"init", "create", "prune", "compact", "check", "delete",
                                "recreate", "rename", "with-lock", "upgrade"})

# Borg sleeps a tenth of --lock-wait (at most 60 s) between tries, also right after it
# removed a stale lock; with this, a stale lock costs a second, not a minute.
STALE_LOCK_WAIT = 10


def needs_exclusive(argv: Sequence[str]) -> bool:
    return len(argv) > 1 and argv[1] in EXCLUSIVE_COMMANDS


def break_lock_argv(borg: Borg, acc: Access) -> list[str]:
    """Remove Borg's repository and cache locks, whoever holds them: only for locks whose
    every holder is known to be dead (see :func:`~phobos.tools.borg_repository.lock_holders`)."""
    return [borg.path, "break-lock", "--", acc.location]


def with_lock_argv(repo: Path, lock_wait: float, command: Sequence[str]) -> tuple[str, ...]:
    """``command`` run by ``borg with-lock`` under the exclusive lock of ``repo``, waiting
    up to ``lock_wait`` seconds for it."""
    return ("borg", "with-lock", "--lock-wait", str(int(lock_wait)), str(repo), *command)


def with_lock_wait(argv: Sequence[str], seconds: int) -> list[str]:
    """``argv`` with the value of its ``--lock-wait`` replaced."""
    out = list(argv)
    if "--lock-wait" in out:
        out[out.index("--lock-wait") + 1] = str(max(1, seconds))
    return out


# --- what borg check reports -----------------------------------------------------------------


_SLICE_END = re.compile(r"finished partial segment check, last segment checked is (\d+)")
_PASS_END = re.compile(r"finished segment check at segment (-?\d+)")


def reported_check_position(lines: Iterable[str]) -> tuple[bool, int | None]:
    """Where ``borg check --info`` says the repository part stopped, from its log
    lines (a server's are prefixed ``Remote:``): (said so, position), the position
    None when the pass completed."""
    for line in reversed(list(lines)):
        if match := _SLICE_END.search(line):
            return True, int(match.group(1))
        if _PASS_END.search(line):
            return True, None
    return False, None
