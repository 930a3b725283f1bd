"""The error of the systemd package."""

from __future__ import annotations

from phobos.errors import PhobosError


class SystemdError(PhobosError):
    """The config cannot be turned into units, or installing them failed."""
