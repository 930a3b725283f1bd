"""Pinning the NAS initramfs's own host key on the admin's machine (``phobos unlock
HOST --pin``): the keys it offers now are shown and pinned under the alias only after
the admin confirms; nothing is written while a pinned key still matches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from phobos.core import proc
from phobos.errors import UsageError
from phobos.tools import ssh
from phobos.tools.ssh import HostKey
from phobos.unlock.client import Initramfs, last_line, unreachable

Confirm = Callable[[Sequence[HostKey], Sequence[HostKey]], bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class PinResult:
    """What :func:`pin` found: the keys the initramfs offers, those pinned before, and
    whether the known_hosts file was changed."""

    target: Initramfs
    offered: tuple[HostKey, ...]
    old: tuple[HostKey, ...]
    changed: bool

    def as_json(self) -> dict[str, Any]:
        def keys(found: Iterable[HostKey]) -> list[dict[str, str]]:
            return [{"type": k.type, "fingerprint": k.fingerprint} for k in found]

        return {"host": self.target.host, "alias": self.target.alias,
                "known_hosts": str(self.target.known_hosts), "changed": self.changed,
                "old": keys(self.old), "offered": keys(self.offered)}


def scan(target: Initramfs) -> list[HostKey]:
    """The host keys the initramfs offers now (ssh-keyscan)."""
    result = proc.run(ssh.keyscan_argv(target.host, target.port), capture=True,
                      check=False, timeout=60)
    keys = ssh.parse_keys(result.stdout)
    if not keys:
        reason = last_line("\n".join(r.removeprefix("stderr: ") for r in result.tail))
        raise unreachable(target, reason or "ssh-keyscan received no host key")
    return keys


def pin(target: Initramfs, confirm: Confirm) -> PinResult:
    """Pin the keys the initramfs offers under its alias, after ``confirm``; nothing
    is written when a pinned key still matches."""
    offered = scan(target)
    old = ssh.pinned(target.known_hosts, target.alias)
    if set(old) & set(offered):
        return PinResult(target=target, offered=tuple(offered), old=tuple(old),
                         changed=False)
    if not confirm(offered, old):
        raise UsageError(f"the initramfs host key of {target.host} was not pinned",
                         "compare the fingerprint with `phobos doctor --initramfs` on the "
                         "NAS, then confirm (or pass --fingerprint)")
    ssh.pin(target.known_hosts, target.alias, offered)
    return PinResult(target=target, offered=tuple(offered), old=tuple(old), changed=True)
