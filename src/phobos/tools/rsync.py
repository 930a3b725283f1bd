"""rsync: the pull argv (pure), ``--stats`` and ``--info=progress2`` parsing, exit codes,
what the target filesystem supports, and the local mirror of a tree with its file listing
(a drive-sync copy, see :func:`mirror_argv`).

A pull is ``rsync --archive --relative`` of the host's paths into its holding folder:
the holding tree mirrors the host's absolute paths (``holding/luv/etc/...``) whether or
not the host's key is restricted with rrsync. It updates the previous copy in place,
in two passes:

1. :func:`pull_argv` transfers, deleting nothing. Each file is replaced only once its
   new version is complete (rsync's temporary file and rename); an interrupted file
   resumes from ``--partial-dir`` next time.
2. :func:`prune_argv`, run only after the transfer succeeded, deletes what the host
   no longer has (``--delete --existing --ignore-existing``: nothing is transferred).

Two passes because rsync deletes even when part of the transfer failed (a missing
source path gives exit 23 *and* deletions elsewhere): the previous copy must never lose
a file in a failed pull.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from phobos.core.progress import LineReader, Progress, Reading

PARTIAL_DIR = ".phobos-partial"
WARN_CODES = (24,)

EXIT_CODES: dict[int, str] = {
    1: "syntax or usage error: check rsync_options and excludes",
    2: "protocol incompatibility between the two rsync versions",
    3: "errors selecting input/output files or directories",
    4: "an action is not supported by one side (an option the remote rsync lacks, "
       "or ACLs/xattrs it cannot handle)",
    5: "error starting the client-server protocol",
    6: "the daemon cannot append to its log file",
    10: "error in socket I/O: the connection broke",
    11: "error in file I/O: a file could not be written (holding area full or read-only?)",
    12: "the connection closed early: the remote side refused (rrsync: a missing path or "
        "one outside its root, or a write with a read-only key), rsync is missing on the "
        "host, or the link broke",
    13: "errors with program diagnostics",
    14: "error in IPC code",
    20: "rsync received SIGUSR1 or SIGINT",
    21: "some error returned by waitpid()",
    22: "error allocating core memory buffers",
    23: "partial transfer: some files or paths could not be read or written (a missing "
        "remote path? permission denied?); nothing was deleted",
    24: "some files vanished during the transfer: normal on a live system",
    25: "the --max-delete limit stopped deletions",
    30: "timeout in data send/receive",
    35: "timeout waiting for daemon connection",
    127: "rsync was not found",
    255: "ssh failed: the host is unreachable, its host key is not the pinned one, or "
         "it refused the login",
}


#: Where a local mirror (:func:`mirror_argv`, the copy to a drive) reads differently: no
#: ssh or rrsync is involved, and the one target is the drive.
MIRROR_EXIT_CODES: dict[int, str] = {
    11: "file I/O error (drive full?)",
    12: "error in the data stream",
    23: "partial transfer due to errors",
}


def explain(code: int) -> str:
    """What rsync's (or ssh's) exit ``code`` means, for error messages."""
    if code < 0:
        return "stopped by a signal"
    return EXIT_CODES.get(code, "an exit code rsync does not document")


def explain_mirror(code: int) -> str:
    """What rsync's exit ``code`` means for a local mirror (:func:`mirror_argv`)."""
    return MIRROR_EXIT_CODES.get(code) or explain(code)


@dataclass(frozen=True, slots=True, kw_only=True)
class Pull:
    """One rsync invocation pulling ``sources`` (paths as the remote rsync sees
    them) from ``login`` into ``dest``."""

    login: str
    rsh: str
    sources: tuple[str, ...]
    dest: Path
    exclude: tuple[str, ...] = ()
    bwlimit: str | None = None
    acls: bool = True
    xattrs: bool = True
    extra: tuple[str, ...] = ()
    progress: bool = False  # --info=progress2, read by progress_reader


def pull_argv(pull: Pull) -> tuple[str, ...]:
    """The transfer pass for ``pull`` (pure): everything but deletions."""
    argv = ["rsync", "--archive", "--relative", "--numeric-ids", "--hard-links"]
    if pull.acls:
        argv.append("--acls")
    if pull.xattrs:
        argv.append("--xattrs")
    argv += ["--partial", f"--partial-dir={PARTIAL_DIR}", "--stats", "--no-human-readable"]
    if pull.progress:
        argv += PROGRESS_OPTIONS
    argv += [f"--exclude={pattern}" for pattern in pull.exclude]
    if pull.bwlimit:
        argv.append(f"--bwlimit={pull.bwlimit}")
    return (*argv, *_ends(pull))


def prune_argv(pull: Pull) -> tuple[str, ...]:
    """The deletion pass for ``pull`` (pure): removes files the host no longer has,
    transfers nothing. Excluded files are kept, as rsync does without
    --delete-excluded."""
    argv = ["rsync", "--archive", "--relative", "--delete", "--existing",
            "--ignore-existing", "--stats", "--no-human-readable"]
    argv += [f"--exclude={pattern}" for pattern in pull.exclude]
    return (*argv, *_ends(pull))


def _ends(pull: Pull) -> tuple[str, ...]:
    """Extra options, the ssh command, then ``--`` (nothing from the config after it can be
    read as an option: a user "--log-file=..." would be one), sources and destination:
    the same in both passes. rsync does not pass the ``--`` on to the remote side, so
    rrsync sees the usual server command line."""
    sources = (f"{pull.login}:{source}" for source in pull.sources)
    return (*pull.extra, "-e", pull.rsh, "--", *sources, f"{pull.dest}/")


def list_argv(login: str, rsh: str, source: str) -> tuple[str, ...]:
    """List one remote path without transferring it (does it exist, can we read it?)."""
    return ("rsync", "--list-only", "--dirs", "-e", rsh, "--", f"{login}:{source}")


def write_probe_argv(login: str, rsh: str, empty_dir: Path, target: str) -> tuple[str, ...]:
    """A dry-run push: a read-only (rrsync -ro) key must refuse it. Writes nothing."""
    return ("rsync", "--dry-run", "--recursive", "-e", rsh, "--", f"{empty_dir}/",
            f"{login}:{target}")


def remote_sources(paths: Sequence[str], rrsync_root: str | None) -> tuple[tuple[str, ...],
                                                                           str]:
    """The remote arguments for ``paths`` and the folder (relative to the host's holding
    folder) they land in, so that holding always mirrors the host's absolute paths.

    Without rrsync the paths go as they are. rrsync makes paths relative to its root, so
    ``/srv/data`` under root ``/srv`` is sent as ``data`` and lands below ``srv/``.
    Raises ValueError for a path outside the root (the config check reports it first).
    """
    clean = tuple(_strip(p) for p in paths)
    if rrsync_root is None:
        return clean, ""
    root = PurePosixPath(_strip(rrsync_root))
    relative = []
    for path in clean:
        pure = PurePosixPath(path)
        if pure != root and root not in pure.parents:
            raise ValueError(f"{path!r} is outside rrsync_root {str(root)!r}")
        relative.append(str(pure.relative_to(root)))
    return tuple(relative), str(root).lstrip("/")


def _strip(path: str) -> str:
    return path.rstrip("/") or "/"


# --- --stats ---------------------------------------------------------------------------

_STATS = {
    "files": "Number of files",
    "files_created": "Number of created files",
    "files_deleted": "Number of deleted files",
    "files_transferred": "Number of regular files transferred",
    "bytes_total": "Total file size",
    "bytes_transferred": "Total transferred file size",
    "bytes_sent": "Total bytes sent",
    "bytes_received": "Total bytes received",
}
_STAT_LINE = re.compile(r"^(?P<label>[A-Za-z ]+): (?P<number>[\d,.']+)")


def parse_stats(lines: Iterable[str]) -> dict[str, int]:
    """Numbers from rsync's ``--stats`` block; keys of :data:`_STATS` that were found.

    ``bytes_total`` is the size of everything pulled, ``bytes_transferred`` the size of
    the files that changed, ``bytes_received`` what crossed the wire.
    """
    by_label = {label: key for key, label in _STATS.items()}
    stats: dict[str, int] = {}
    for line in lines:
        match = _STAT_LINE.match(line.strip())
        if match and match.group("label") in by_label:
            digits = re.sub(r"[,.']", "", match.group("number"))
            stats[by_label[match.group("label")]] = int(digits)
    return stats


# --- --info=progress2 ------------------------------------------------------------------

PROGRESS_OPTION = "--info=progress2"
# Into a pipe rsync buffers its output fully, and progress lines (ended by a carriage
# return) would arrive all at once at the end: unbuffered, each redraw comes when drawn.
PROGRESS_OPTIONS = (PROGRESS_OPTION, "--outbuf=N")
# "  52,428,800  44%  609.38MB/s    0:00:05 (xfr#1, to-chk=251/253)": bytes so far (with
# or without separators), percent of the total known so far, rate (1024-based units),
# time; the "(xfr#" part ends a file, and then the time is the time taken, not the time
# left. "ir-chk" instead of "to-chk": the file list is still growing.
_PROGRESS2 = re.compile(
    r"^\s*(?P<bytes>\d[\d,.']*)\s+(?P<pct>\d+)%\s+(?P<rate>[\d.,]+)(?P<unit>[kMGT]?B)/s"
    r"\s+(?:(?P<h>\d+):(?P<m>\d\d):(?P<s>\d\d)|\?\?:\?\?:\?\?)"
    r"(?:\s+\(xfr#(?P<xfr>\d+),\s*(?P<list>ir|to)-chk=(?P<left>\d+)/(?P<files>\d+)\))?\s*$")
_RATE_UNITS = {"B": 1, "kB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def progress_reader(clock: Callable[[], float] = time.monotonic) -> LineReader:
    """A reader of ``--info=progress2`` lines (see :mod:`phobos.core.progress`): bytes
    done, rsync's percent, rate and its estimate of the time left; any other line is
    kept as it is. rsync's percent and time left count only the files listed so far
    while the list still grows (incremental recursion)."""
    state: dict[str, float | None] = {"eta": None, "at": None}

    def read(_stream: str, line: str) -> Reading:
        match = _PROGRESS2.match(line)
        if match is None:
            return Reading(line)
        now = clock()
        seconds = None if match.group("h") is None else (
            int(match.group("h")) * 3600 + int(match.group("m")) * 60 + int(match.group("s")))
        if match.group("xfr") is None:  # a redraw: the time is rsync's time left
            state["eta"], state["at"] = seconds, now
        eta, at = state["eta"], state["at"]
        files = match.group("files")
        return Reading(None, Progress(
            bytes_done=int(re.sub(r"[,.']", "", match.group("bytes"))),
            fraction=int(match.group("pct")) / 100,
            rate=float(match.group("rate").replace(",", ".")) * _RATE_UNITS[match.group("unit")],
            files_done=None if files is None else int(files) - int(match.group("left")),
            files_total=int(files) if files is not None and match.group("list") == "to"
            else None,
            eta=None if eta is None or at is None else max(0.0, eta - (now - at))))

    return read


# --- what the holding filesystem supports ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Features:
    """Whether a filesystem stores POSIX ACLs and extended attributes."""

    acls: bool
    xattrs: bool


_features: dict[int, Features] = {}
_features_lock = threading.Lock()
_UNSUPPORTED = {errno.ENOTSUP, errno.EOPNOTSUPP}


def probe_writable(directory: Path) -> Path:
    """Create (and leave for the caller to remove) an empty file in ``directory``:
    proves it writable. Raises OSError otherwise."""
    fd, name = tempfile.mkstemp(prefix=".phobos-probe-", dir=directory)
    os.close(fd)
    return Path(name)


def target_features(directory: Path) -> Features:
    """ACL and xattr support where ``directory`` lives.

    Proves ``directory`` writable on every call (with a temporary file; OSError if
    not); the features themselves are probed once per filesystem.
    """
    probe = probe_writable(directory)
    try:
        device = probe.stat().st_dev
        with _features_lock:
            found = _features.get(device)
        if found is None:
            found = Features(acls=_has_acls(probe), xattrs=_has_xattrs(probe))
            with _features_lock:
                _features[device] = found
        return found
    finally:
        with contextlib.suppress(FileNotFoundError):
            probe.unlink()


def _has_xattrs(probe: Path) -> bool:
    try:
        os.setxattr(probe, "user.phobos-probe", b"1")
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return False
        raise
    return True


def _has_acls(probe: Path) -> bool:
    # Reading the access ACL of a file without one gives ENODATA where ACLs exist and
    # EOPNOTSUPP where the filesystem has none; nothing is changed.
    try:
        os.getxattr(probe, "system.posix_acl_access")
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return False
        if exc.errno == errno.ENODATA:
            return True
        raise
    return True


# --- mirroring a tree, listing every file (pure) ---------------------------------------------

LIST_FORMAT = "%i|%l|%n"


def mirror_argv(source: Path, dest: Path | str, options: Sequence[str] = (), *,
                progress: bool = False) -> tuple[str, ...]:
    """Mirror ``source`` into ``dest``, listing every file considered (changed or not) with
    its size: ``-ii`` with :data:`LIST_FORMAT`, read by :func:`parse_listing`. With
    ``progress``, rsync also reports ``--info=progress2`` (read by
    :func:`progress_reader`, which must then see the output before the listing does)."""
    shown = PROGRESS_OPTIONS if progress else ()
    return ("rsync", "-a", "--delete", "--delete-excluded", "-ii",
            f"--out-format={LIST_FORMAT}", *shown, *options, "--", f"{source}/", f"{dest}/")


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str  # rsync's type letter: f file, d directory, L symlink, D device, S special
    size: int


_ESCAPE = re.compile(r"\\#([0-7]{3})")


def parse_listing(text: str) -> dict[str, Entry]:
    """``%i|%l|%n`` lines of rsync ``-ii`` into relative path -> entry (``.`` is the top).
    Deletions (``*deleting``) and anything else are skipped."""
    entries: dict[str, Entry] = {}
    for line in text.splitlines():
        item, sep, rest = line.partition("|")
        size, sep2, name = rest.partition("|")
        if not (sep and sep2) or len(item) != 11 or item.startswith("*"):
            continue
        try:
            length = int(size)
        except ValueError:
            continue
        name = _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), name).rstrip("/")
        entries[os.path.normpath(name or ".")] = Entry(item[1], length)
    return entries


def copied_bytes(text: str) -> int:
    """Bytes of files rsync transferred (itemized with '>' in the first column) in a
    :data:`LIST_FORMAT` listing."""
    total = 0
    for line in text.splitlines():
        item, _, rest = line.partition("|")
        if item.startswith(">f"):
            size = rest.partition("|")[0]
            total += int(size) if size.isdigit() else 0
    return total
