"""ssh, ssh-keygen and ssh-keyscan: argv builders, host-key pinning and failure diagnosis.

phobos keeps its own known_hosts file (under ``[paths] keys``). Its entries are keyed by
the phobos host *name*, which ssh is told with ``HostKeyAlias``: changing a host's
address in the config keeps its pinned key, and no other known_hosts file counts
(``GlobalKnownHostsFile=/dev/null``). Connections always use
``StrictHostKeyChecking=yes`` and ``BatchMode=yes``: a key that is not pinned, or that
changed, fails the connection; nothing is ever accepted behind the admin's back.

Everything here is pure except :func:`pinned` and :func:`pin`, which read and
rewrite the known_hosts file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from phobos.core.files import write_atomic
from phobos.tools.errors import (
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    LoginRefused,
    SshFailure,
)

PULL_KEY = "pull_ed25519"
KNOWN_HOSTS = "known_hosts"
CONNECT_TIMEOUT_SECONDS = 20
KEYSCAN_TIMEOUT_SECONDS = 10


def repo_key(keys: Path, name: str, identity: Path | None = None) -> Path:
    """phobos's own SSH key for repository ``name`` on a server: the repository's
    ``identity``, or ``repo-NAME_ed25519`` in the keys directory ``keys``."""
    return identity or keys / f"repo-{name}_ed25519"


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """Where and as whom phobos logs in. ``name`` is the phobos host name, or with
    ``repo`` the name of a remote Borg repository whose server this is; the key is
    pinned under :attr:`alias`."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    identity: Path
    known_hosts: Path
    repo: bool = False

    @property
    def alias(self) -> str:
        """The name its key is pinned under: the host's name, ``repo:NAME`` for the
        server of a repository (a ``:`` never appears in a host name, so the two kinds
        never share an entry)."""
        return f"repo:{self.name}" if self.repo else self.name

    @property
    def noun(self) -> str:
        """``host luv`` or ``the server of repository offsite``, for messages."""
        return f"the server of repository {self.name}" if self.repo else f"host {self.name}"

    def command(self, action: str) -> str:
        """The phobos command that does ``action`` (pin, rekey, test, authorize) here."""
        if self.repo:
            return {"pin": f"phobos repo trust {self.name}",
                    "rekey": f"phobos repo trust {self.name} --rekey",
                    "test": f"phobos repo info {self.name}",
                    "authorize": f"phobos repo trust {self.name}"}[action]
        return {"pin": f"phobos host add {self.name} {self.address}",
                "rekey": f"phobos host rekey {self.name}",
                "test": f"phobos host test {self.name}",
                "authorize": f"phobos host add {self.name} {self.address}"}[action]

    @property
    def owner(self) -> str:
        """Whose key it is: ``luv``, or ``the server of repository offsite``."""
        return self.noun if self.repo else self.name

    @property
    def table(self) -> str:
        return f"`url` in [repos.{self.name}]" if self.repo else \
            f"`address` and `port` in [hosts.{self.name}]"

    @property
    def where(self) -> str:
        """``address:port`` as people write it (IPv6 in brackets)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def login(self) -> str:
        """``user@address`` as rsync's remote spec wants it (IPv6 in brackets)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{host}"


_SSH_URL = re.compile(r"^ssh://(?:(?P<user>[^@/:\s]+)@)?"
                      r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^@/:\s\[\]]+)"
                      r"(?::(?P<port>[0-9]+))?(?P<path>/\S*)$")


@dataclass(frozen=True, slots=True, kw_only=True)
class SshUrl:
    """``ssh://[user@]host[:port]/path`` as Borg reads it. ``path`` keeps its leading
    ``/``: Borg's ``/~/x`` and ``/./x`` mean x below the login's home directory."""

    user: str | None
    host: str  # IPv6 without brackets
    port: int
    path: str

    @property
    def server_path(self) -> str:
        """The path as the server's ``borg serve`` sees it from the login's home
        directory (its working directory under a forced command): absolute paths as
        they are, ``/~/x`` and ``/./x`` as ``x``."""
        for prefix in ("/~/", "/./"):
            if self.path.startswith(prefix):
                return self.path[len(prefix):]
        return self.path


def parse_ssh_url(text: str) -> SshUrl:
    """The parts of an ``ssh://`` URL; ValueError saying what is wrong."""
    match = _SSH_URL.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an ssh://[user@]host[:port]/path URL")
    if match.group("host").startswith("-") or (match.group("user") or "").startswith("-"):
        raise ValueError(f"{text!r}: a host or user name cannot start with '-'")
    port = int(match.group("port") or 22)
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a TCP port (1-65535)")
    path = match.group("path")
    if path.rstrip("/") in ("", "/~", "/.") or ".." in path.split("/"):
        raise ValueError(f"{path!r} does not name a repository directory (no '..')")
    if any(c in path for c in "\"'\\,"):
        raise ValueError(f"{path!r} contains a quote, backslash or comma (it goes into "
                         "authorized_keys)")
    return SshUrl(user=match.group("user"), host=match.group("host").strip("[]"),
                  port=port, path=path)


def option_path(path: Path) -> str:
    # ssh splits some option values (UserKnownHostsFile takes a list) on spaces.
    text = str(path)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def pinned_options(*, port: int, known_hosts: Path, alias: str,
                   identity: Path | None) -> tuple[str, ...]:
    """The key pinned under ``alias`` in phobos's own file and nowhere else, never
    updated by ssh; no prompts (a changed key fails instead of asking)."""
    key = ("-i", str(identity), "-o", "IdentitiesOnly=yes") if identity is not None else ()
    return (
        "-p", str(port), *key,
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={option_path(known_hosts)}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"HostKeyAlias={alias}",
        "-o", "UpdateHostKeys=no",
        "-o", f"ConnectTimeout={CONNECT_TIMEOUT_SECONDS}",
    )


def ssh_options(ep: Endpoint) -> tuple[str, ...]:
    """Options for every phobos pull connection: pinned key, our key only, no prompts."""
    return (
        *pinned_options(port=ep.port, known_hosts=ep.known_hosts, alias=ep.alias,
                        identity=ep.identity),
        # A dead link must end the transfer, not hang it until the job's timeout.
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4",
    )


def rsh(ep: Endpoint) -> str:
    """The ``rsync -e`` value: rsync splits it on spaces, honouring quotes."""
    return shlex.join(("ssh", *ssh_options(ep)))


def ssh_argv(ep: Endpoint, *command: str) -> tuple[str, ...]:
    """ssh to ``ep`` running ``command`` (a forced command in authorized_keys wins)."""
    return ("ssh", *ssh_options(ep), "-T", "-l", ep.user, "--", ep.address, *command)


def keyscan_argv(address: str, port: int) -> tuple[str, ...]:
    return ("ssh-keyscan", "-T", str(KEYSCAN_TIMEOUT_SECONDS), "-p", str(port), "--", address)


def keygen_argv(path: Path, comment: str) -> tuple[str, ...]:
    """Create an unencrypted ed25519 key (the pull key must work unattended)."""
    return ("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))


# --- host keys --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class HostKey:
    """One public host key: its type (``ssh-ed25519``) and base64 blob."""

    type: str
    blob: str

    @property
    def fingerprint(self) -> str:
        """``SHA256:...`` exactly as ``ssh-keygen -l`` prints it."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")

    @property
    def label(self) -> str:
        """``ED25519``, ``ECDSA``, ``RSA``: the name ssh uses in its messages."""
        kind = self.type.removeprefix("ssh-").split("-")[0]
        return {"ecdsa": "ECDSA", "ed25519": "ED25519", "rsa": "RSA"}.get(kind, kind.upper())

    def describe(self) -> str:
        return f"{self.fingerprint} ({self.label})"


def _key(type_: str, blob: str) -> HostKey | None:
    try:
        base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return None
    return HostKey(type_, blob)


def parse_keys(text: str) -> list[HostKey]:
    """Host keys from ``ssh-keyscan`` output (``host type blob`` lines; comments skipped)."""
    found = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or line.lstrip().startswith("#"):
            continue
        key = _key(parts[1], parts[2])
        if key is not None and key not in found:
            found.append(key)
    return sorted(found)


def pinned(known_hosts: Path, alias: str) -> list[HostKey]:
    """Keys pinned for ``alias`` (empty if none, or if the file does not exist)."""
    try:
        text = known_hosts.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    keys = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not parts[0].startswith(("#", "@")) \
                and alias in parts[0].split(","):
            key = _key(parts[1], parts[2])
            if key is not None:
                keys.append(key)
    return sorted(keys)


def pin(known_hosts: Path, alias: str, keys: Sequence[HostKey]) -> None:
    """Replace every key pinned for ``alias`` with ``keys``, atomically."""
    known_hosts.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        old = known_hosts.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        old = []
    kept = [line for line in old if not _names(line, alias)]
    lines = [*kept, *(f"{alias} {key.type} {key.blob}" for key in keys)]
    write_atomic(known_hosts, "".join(f"{line}\n" for line in lines))


def _names(line: str, alias: str) -> bool:
    parts = line.split()
    return bool(parts) and not parts[0].startswith("#") and alias in parts[0].split(",")


# --- why a connection failed -------------------------------------------------------------


_CONNECT = re.compile(r"ssh: connect to host \S+ port \d+: (?P<reason>.+)$")
_RESOLVE = re.compile(r"ssh: Could not resolve hostname [^:]+: (?P<reason>.+)$")
_OFFERED = re.compile(r"^(SHA256:[A-Za-z0-9+/]+)\.?$")


def _plain(lines: Iterable[str]) -> list[str]:
    return [line.removeprefix("stderr: ").strip() for line in lines]


def offered_fingerprint(lines: Iterable[str]) -> str | None:
    """The fingerprint ssh reports in its "REMOTE HOST IDENTIFICATION HAS CHANGED" banner."""
    for line in _plain(lines):
        match = _OFFERED.match(line)
        if match:
            return match.group(1)
    return None


def diagnose(lines: Sequence[str], ep: Endpoint) -> SshFailure | None:
    """The typed error for ssh's stderr ``lines`` (a proc tail), or None if unrecognised."""
    text = _plain(lines)
    joined = "\n".join(text)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in joined:
        return key_changed(ep, pinned(ep.known_hosts, ep.alias), offered_fingerprint(text))
    if "Host key verification failed" in joined:
        return key_unknown(ep)
    if "Permission denied" in joined:
        return LoginRefused(
            f"{ep.noun} ({ep.where}) refused phobos's key {ep.identity} for user "
            f"{ep.user}",
            f"add the line printed by `{ep.command('authorize')}` to "
            f"~{ep.user}/.ssh/authorized_keys on {ep.owner}, then run "
            f"`{ep.command('test')}`")
    for line in text:
        match = _CONNECT.search(line) or _RESOLVE.search(line)
        if match:
            return unreachable(ep, match.group("reason"))
    if "kex_exchange_identification" in joined or "Connection closed by" in joined:
        return unreachable(ep, "the connection was closed before login (sshd refused "
                           "it: MaxStartups, tcp wrappers, or not an ssh server)")
    return None


def unreachable(ep: Endpoint, reason: str) -> HostUnreachable:
    return HostUnreachable(
        f"{ep.noun} ({ep.where}) is unreachable: {reason}",
        f"check that {ep.owner} is up, that {ep.table} {'is' if ep.repo else 'are'} right and "
        f"that sshd listens there; `{ep.command('test')}` checks again")


def key_unknown(ep: Endpoint) -> HostKeyUnknown:
    return HostKeyUnknown(
        f"no host key is pinned for {ep.owner} in {ep.known_hosts}, so phobos will not "
        "connect to it",
        f"run `{ep.command('pin')}`: it shows the host's key "
        "fingerprint and pins it after you confirm")


def key_changed(ep: Endpoint, old: Sequence[HostKey], offered: str | None) -> HostKeyChanged:
    """The message an admin needs when a pinned key no longer matches."""
    was = ", ".join(k.describe() for k in old) or "(none readable)"
    now = offered or "a different key"
    return HostKeyChanged(
        f"the host key of {ep.owner} ({ep.where}) has CHANGED: pinned {was}, the host now "
        f"offers {now}. phobos refuses to connect: this is what a man-in-the-middle "
        "attack looks like, or the host was reinstalled",
        f"check the new fingerprint on {ep.owner} itself (on its console: `ssh-keygen -lf "
        f"/etc/ssh/ssh_host_ed25519_key.pub`); if it matches, accept it with "
        f"`{ep.command('rekey')}`")
