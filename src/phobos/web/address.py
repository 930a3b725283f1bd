"""Where the dashboard listens, and whether that needs a token. No web imports here:
the config check uses it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEFAULT_LISTEN = "127.0.0.1:8470"
# Host names that always mean this machine (for loopback binds without a token).
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Listen:
    host: str  # as uvicorn wants it: no brackets around IPv6
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name, IPv6 without brackets) is this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(text: str) -> Listen:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (all addresses). ValueError if malformed."""
    value = text.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{text!r}: write an IPv6 address as [ADDRESS]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            raise ValueError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:8470")
        if ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address as [ADDRESS]:PORT")
    host = host or "0.0.0.0"
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return Listen(host=host, port=int(port_text))


def listen_problem(text: str) -> str | None:
    """The config check for ``[web] listen``."""
    try:
        parse_listen(text)
    except ValueError as exc:
        return str(exc)
    return None
