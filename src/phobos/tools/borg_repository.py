"""What Borg keeps inside a repository directory, read without running Borg: its lock
(``lock.roster``, ``lock.exclusive``) and who holds it, the repository's ``config``
(id, the sliced check's position), its segment files, and where Borg caches it. Also the
host id phobos gives every Borg, which decides whose lock is stale."""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class LockHolder:
    """A holder of Borg's lock in a repository, as recorded in ``lock.roster``."""

    host: str
    pid: int
    exclusive: bool
    local: bool
    alive: bool | None  # None: on another host, cannot tell
    command: str | None
    since: float | None

    def describe(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        where = "this host" if self.local else f"host {self.host}"
        text = f"{kind} Borg lock of pid {self.pid} on {where}"
        if self.command:
            text += f" ({self.command})"
        if self.since is not None:
            text += time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(self.since))
        if self.alive is False:
            text += "; that process is gone: a stale lock Borg removes by itself"
        return text


def host_id() -> str:
    """The host id phobos gives every Borg it runs (``BORG_HOST_ID``), and the one its
    own lock reading assumes.

    Borg's default, "FQDN@MAC", is a random number per process where no network
    interface has a MAC address, as in units with ``PrivateNetwork=yes``: the lock of a
    Borg killed there would look like another host's, which Borg never removes as stale,
    and every later run would wait ``lock_wait`` (a day by default) for it. The machine
    id is the same in every namespace. An explicit ``$BORG_HOST_ID`` wins."""
    import socket
    import uuid

    explicit = os.environ.get("BORG_HOST_ID")
    if explicit:
        return explicit
    try:
        machine = Path("/etc/machine-id").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        machine = ""
    if machine:
        return f"{socket.gethostname().split('.')[0]}@{machine}"
    return f"{socket.getfqdn()}@{uuid.getnode()}"


def _is_local(host: str) -> bool:
    """Whether a lock's host is this machine: the id phobos gives Borg, or Borg's own
    default (a Borg run by hand; random, so matching nothing, where there is no MAC)."""
    import socket
    import uuid

    node = host.rpartition("@")[2]
    return any(host == ours or node == ours.rpartition("@")[2]
               for ours in (host_id(), f"{socket.getfqdn()}@{uuid.getnode()}"))


def _command_of(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    if words and os.path.basename(words[0]).startswith("python") and len(words) > 1:
        words = words[1:]  # "python3 /usr/bin/borg create ...": show borg's own argv
    return " ".join([os.path.basename(words[0]), *words[1:]])[:200] if words else None


def lock_holders(repo: Path) -> list[LockHolder]:
    """Holders of Borg's lock in ``repo`` (empty when unlocked or unreadable). A roster
    left empty (Borg died writing it: a full disk) names no one; the exclusive lock's
    ``HOST.PID-THREAD`` file then still does."""
    try:
        roster = json.loads((repo / "lock.roster").read_text())
    except (OSError, ValueError):
        roster = {"exclusive": [name.rsplit("-", 1)[0].rsplit(".", 1) for name in
                                _listdir(repo / "lock.exclusive")]}
    since = None
    with contextlib.suppress(OSError):
        since = (repo / "lock.exclusive").stat().st_mtime
    holders = []
    for kind in ("exclusive", "shared"):
        for entry in roster.get(kind) or []:
            try:
                host, pid = str(entry[0]), int(entry[1])
            except (IndexError, TypeError, ValueError):
                continue
            local = _is_local(host)
            alive = _running(pid) if local else None
            holders.append(LockHolder(
                host=host, pid=pid, exclusive=kind == "exclusive", local=local, alive=alive,
                command=_command_of(pid) if local and alive else None,
                since=since if kind == "exclusive" else None))
    return holders


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, killed but not yet reaped, is not)."""
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    return False


def _listdir(path: Path) -> list[str]:
    with contextlib.suppress(OSError):
        return os.listdir(path)
    return []


#: Borg's lock in a repository: meaningless in a copy on another machine, where it would
#: need a ``borg break-lock`` before the copy could be used.
LOCK_FILES = ("lock.exclusive", "lock.roster")


def cache_dir(repo: Path, base_dir: Path | None) -> Path | None:
    """Borg's cache directory for ``repo`` (it has a lock of its own), or None."""
    repo_id = _repo_config_value(repo, "id")
    if repo_id is None:
        return None
    if base_dir is not None:
        return base_dir / ".cache" / "borg" / repo_id
    home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(home) / "borg" / repo_id


def _repo_config_value(repo: Path, key: str) -> str | None:
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string((repo / "config").read_text())
    except (OSError, configparser.Error):
        return None
    return parser.get("repository", key, fallback=None)


def repository_setting(repo: Path, key: str) -> str | None:
    """A value of the repository's own ``config`` file (``[repository]``), or None."""
    return _repo_config_value(repo, key)


def check_position(repo: Path) -> int | None:
    """The last segment a sliced check reached (``last_segment_checked`` in the
    repository's config), or None when no sliced pass is in progress."""
    value = _repo_config_value(repo, "last_segment_checked")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def segment_ids(repo: Path) -> list[int]:
    """The numbers of the segment files in ``repo/data``, ascending."""
    ids: list[int] = []
    try:
        directories = list((repo / "data").iterdir())
    except OSError:
        return ids
    for directory in directories:
        if directory.name.isdigit() and directory.is_dir():
            ids.extend(int(f.name) for f in directory.iterdir() if f.name.isdigit())
    return sorted(ids)
