"""The admin's side of remote unlock: ``phobos unlock HOST`` logs in to the NAS
initramfs's dropbear, runs ``cryptroot-unlock`` and feeds it the passphrase on stdin.
The initramfs has its own host key (it lives unencrypted in /boot), so it is pinned
separately: its own known_hosts file, under the alias ``HOST-initramfs``, never accepted
behind the admin's back (:mod:`phobos.unlock.pinning`). The NAS side is checked by
``phobos doctor --initramfs`` (:mod:`phobos.doctor.initramfs`).

How ``cryptroot-unlock`` behaves (cryptsetup-initramfs, Debian 12), which the client
relies on: with stdin not a terminal it prints ``Please unlock disk NAME``, reads stdin
to EOF and hands those bytes, unchanged, to cryptsetup: so the passphrase goes without
a trailing newline, and stdin is closed after it. Then it reports on stderr
``cryptsetup: NAME set up successfully`` (exit 0), ``cryptsetup: cryptsetup failed, bad
password or options?`` or ``cryptsetup: maximum number of tries exceeded for NAME``
(exit 1); ``Try again later`` when cryptroot has not started yet; it exits 0 silently
when nothing is left to unlock.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phobos.core import proc
from phobos.errors import StepFailed, UsageError
from phobos.tools import ssh
from phobos.tools.errors import HostKeyChanged, HostKeyUnknown, HostUnreachable, LoginRefused
from phobos.tools.ssh import HostKey
from phobos.unlock.defaults import DEFAULT_PORT
from phobos.unlock.errors import NotWaiting, UnlockCommandMissing, WrongPassphrase
from phobos.unlock.initramfs_files import NEW_DIR, UNLOCK_COMMAND

_SUCCESS = re.compile(r"cryptsetup: (?P<name>\S+) set up successfully")
_CONNECT = re.compile(r"ssh: connect to host \S+ port \d+: (?P<reason>.+)$")
_RESOLVE = re.compile(r"ssh: Could not resolve hostname [^:]+: (?P<reason>.+)$")


def default_known_hosts() -> Path:
    """``$XDG_CONFIG_HOME/phobos/initramfs_known_hosts`` (``~/.config`` by default):
    apart from ``~/.ssh/known_hosts``, where the NAS's normal key lives."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "phobos" / "initramfs_known_hosts"


@dataclass(frozen=True, slots=True, kw_only=True)
class Initramfs:
    """The NAS's initramfs as the admin reaches it. Its key is pinned as ``alias``."""

    host: str
    port: int = DEFAULT_PORT
    user: str = "root"
    known_hosts: Path
    identity: Path | None = None
    alias: str = ""

    def __post_init__(self) -> None:
        if not self.alias:
            object.__setattr__(self, "alias", f"{self.host}-initramfs")

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def ssh_options(target: Initramfs) -> tuple[str, ...]:
    """Pinned key in our own file under the alias, no prompts, and nothing forwarded
    into an environment that booted from an unencrypted /boot."""
    return (
        *ssh.pinned_options(port=target.port, known_hosts=target.known_hosts,
                            alias=target.alias, identity=target.identity),
        "-o", "ForwardAgent=no",
        "-o", "ForwardX11=no",
        "-o", "ClearAllForwardings=yes",
        "-o", "PermitLocalCommand=no",
    )


def unlock_argv(target: Initramfs) -> tuple[str, ...]:
    """ssh running cryptroot-unlock (a forced ``-c cryptroot-unlock`` runs it anyway)."""
    return ("ssh", *ssh_options(target), "-T", "-l", target.user, "--", target.host,
            UNLOCK_COMMAND)


def _ssh_env() -> dict[str, str]:
    """The agent socket, so a key with a passphrase works (BatchMode cannot ask)."""
    sock = os.environ.get("SSH_AUTH_SOCK")
    return {"SSH_AUTH_SOCK": sock} if sock else {}


def passphrase_from_command(command: str) -> str:
    """The first line a command prints, run without a shell (``shlex.split``)."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--passphrase-command: {exc}") from None
    if not argv:
        raise UsageError("--passphrase-command is empty")
    result = proc.run(argv, capture=True, timeout=120)
    lines = result.stdout.splitlines()
    if not lines or not lines[0]:
        raise UsageError(f"{argv[0]} printed no passphrase",
                         "the passphrase must be the first line of its output")
    return lines[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class UnlockResult:
    """``unlocked``: the volumes cryptroot-unlock reported set up; empty with
    ``nothing_left`` when no volume was waiting any more."""

    target: Initramfs
    unlocked: tuple[str, ...]
    nothing_left: bool
    lines: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"host": self.target.host, "port": self.target.port, "ok": True,
                "unlocked": list(self.unlocked), "nothing_left": self.nothing_left}


def require_pinned(target: Initramfs) -> None:
    """Fail before asking for the passphrase when no key is pinned for the initramfs."""
    if not ssh.pinned(target.known_hosts, target.alias):
        raise key_unknown(target)


def unlock(target: Initramfs, passphrase: str, *,
           echo: Callable[[str], None] | None = None, timeout: float = 120.0
           ) -> UnlockResult:
    """Log in, run cryptroot-unlock, write the passphrase (no newline) and close stdin.
    Returns what was unlocked; raises a typed error saying exactly what went wrong."""
    if not passphrase:
        raise UsageError("the passphrase is empty")
    if target.identity is not None and not target.identity.is_file():
        raise UsageError(f"--identity {target.identity}: no such key file")
    lines: list[str] = []
    try:
        result = proc.run(unlock_argv(target), env=_ssh_env(), secrets=(passphrase,),
                          stdin_data=passphrase.encode("utf-8"),
                          sink=lambda _stream, line: lines.append(line), check=False,
                          ok_codes=range(256), timeout=timeout)
    except StepFailed:  # with check=False only the timeout raises
        raise NotWaiting(f"{target.host}: no answer from the initramfs within "
                         f"{timeout:g} seconds; stopped waiting",
                         "look at the NAS's console; a slow key derivation needs a longer "
                         "--timeout") from None
    # What the initramfs said is shown; ssh's own failure banner is not: the error
    # raised for it says the same in fewer words.
    if echo is not None and (result.returncode != 255 or _SUCCESS.search("\n".join(lines))):
        for line in lines:
            echo(line)
    return outcome(target, result.returncode, lines)


def outcome(target: Initramfs, returncode: int, lines: Sequence[str]) -> UnlockResult:
    """What an ssh + cryptroot-unlock run did, from its exit code and output lines."""
    text = "\n".join(lines)
    unlocked = tuple(m.group("name") for line in lines if (m := _SUCCESS.search(line)))
    if unlocked:  # even if ssh then lost the connection: the boot went on
        return UnlockResult(target=target, unlocked=unlocked, nothing_left=False,
                            lines=tuple(lines))
    if returncode == 255:
        raise ssh_failure(target, lines)
    if returncode == 0:
        return UnlockResult(target=target, unlocked=(), nothing_left=True, lines=tuple(lines))
    raise _unlock_failure(target, returncode, text)


def _unlock_failure(target: Initramfs, returncode: int, text: str) -> StepFailed:
    said = last_line(text)
    if "maximum number of tries exceeded" in text:
        return WrongPassphrase(
            f"{target.host}: wrong passphrase, and no tries are left ({said})",
            "the initramfs gives up on that volume: reboot the NAS (or use its console) "
            "and try again")
    if "bad password" in text:
        return WrongPassphrase(
            f"{target.host}: the passphrase was refused ({said})",
            "check it and run phobos unlock again; after `tries` wrong ones (crypttab, "
            "default 3) the initramfs stops asking until a reboot")
    if returncode == 127 or "not found" in text:
        return UnlockCommandMissing(
            f"{target.host} ({target.where}) has no {UNLOCK_COMMAND} ({said})",
            "install cryptsetup-initramfs on the NAS and run update-initramfs -u; if the "
            "NAS has already booted you reached its normal system, not the initramfs")
    if "Try again later" in text:
        return NotWaiting(f"{target.host}: the initramfs is not ready to unlock yet",
                          "wait a few seconds and run phobos unlock again")
    if "Timeout reached" in text:
        return NotWaiting(f"{target.host}: nothing asked for a passphrase ({said})",
                          "the volume may be unlocked already, or unlocked by a keyscript; "
                          "look at the NAS's console")
    return StepFailed(f"{target.host}: {UNLOCK_COMMAND} failed with exit code "
                      f"{returncode}" + (f": {said}" if said else ""),
                      "log in by hand to see more: ssh -p PORT root@HOST")


def last_line(text: str) -> str:
    """The last non-blank line of ``text`` (stripped), or empty."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def ssh_failure(target: Initramfs, lines: Sequence[str]) -> StepFailed:
    """The typed error for ssh's own failure (exit 255)."""
    text = "\n".join(lines)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return key_changed(target, ssh.pinned(target.known_hosts, target.alias),
                           ssh.offered_fingerprint(lines))
    if "Host key verification failed" in text:
        return key_unknown(target)
    if "Permission denied" in text:
        return LoginRefused(
            f"the initramfs of {target.host} ({target.where}) refused the login as "
            f"{target.user}" + (f" with {target.identity}" if target.identity else ""),
            f"add your public key to /{NEW_DIR}/authorized_keys on the NAS, "
            "then update-initramfs -u; a key with a passphrase must be in ssh-agent")
    for line in lines:
        match = _CONNECT.search(line) or _RESOLVE.search(line)
        if match:
            return unreachable(target, match.group("reason"))
    if "kex_exchange_identification" in text or "Connection closed" in text:
        return unreachable(target, "the connection was closed before login")
    return StepFailed(f"ssh to {target.where} failed: {last_line(text) or 'exit code 255'}",
                      "run the same with ssh -v to see more")


def unreachable(target: Initramfs, reason: str) -> HostUnreachable:
    """The typed error for an initramfs that cannot be reached (``reason`` says why)."""
    return HostUnreachable(
        f"the initramfs of {target.host} ({target.where}) is unreachable: {reason}",
        "is the NAS booting and waiting for its passphrase? does the initramfs get a "
        "network (`phobos doctor --initramfs` on the NAS checks ip=)? does dropbear "
        "listen on this port (-p in DROPBEAR_OPTIONS; --port here)?")


def _pin_hint(target: Initramfs) -> str:
    port = f" --port {target.port}" if target.port != DEFAULT_PORT else ""
    return (f"on the NAS, `phobos doctor --initramfs` prints the initramfs's host key; "
            f"while the NAS waits for its passphrase pin that key (apart from the "
            f"system's): phobos unlock {target.host}{port} --pin --fingerprint SHA256:...")


def key_unknown(target: Initramfs) -> HostKeyUnknown:
    """The typed error for an initramfs whose host key was never pinned."""
    return HostKeyUnknown(
        f"no host key is pinned for the initramfs of {target.host} (alias "
        f"{target.alias} in {target.known_hosts}), so phobos will not send it a passphrase",
        _pin_hint(target))


def key_changed(target: Initramfs, old: Sequence[HostKey],
                offered: str | None) -> HostKeyChanged:
    """The typed error for an initramfs offering a key other than the pinned ``old``."""
    was = ", ".join(k.describe() for k in old) or "(none readable)"
    return HostKeyChanged(
        f"the initramfs of {target.host} ({target.where}) offers host key "
        f"{offered or 'a different key'}, not the pinned {was}: phobos refuses to send "
        "the passphrase. Either the NAS is already up and this is its normal sshd, the "
        "initramfs was rebuilt with new keys, or someone is in between",
        "if the NAS really waits for its passphrase and its initramfs key was changed: "
        + _pin_hint(target))
