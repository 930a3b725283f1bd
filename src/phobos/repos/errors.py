"""Errors of the repository package."""

from __future__ import annotations

from phobos.errors import PhobosError


class RemoteAccessFailed(PhobosError):
    """Borg could not reach a repository's server over SSH: unreachable, its host key
    unknown or changed, or phobos's key refused. Message and hint come from the SSH
    failure found; not a StepFailed, so a job's record keeps the hint."""
