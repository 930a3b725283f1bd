"""Typed failures of the external programs phobos runs, told apart from their output
(the parsers in the ``tools`` modules build them)."""

from __future__ import annotations

from phobos.errors import StepFailed


class SshFailure(StepFailed):
    """ssh could not connect, verify the host or log in (ssh exit code 255)."""


class HostKeyChanged(SshFailure):
    """The host offered a key other than the pinned one."""


class HostKeyUnknown(SshFailure):
    """No key is pinned for the host."""


class LoginRefused(SshFailure):
    """The host refused phobos's key."""


class HostUnreachable(SshFailure):
    """No ssh server answered at the address."""
