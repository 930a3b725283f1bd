"""Errors of ``phobos unlock``: what the initramfs answered when it did not unlock."""

from __future__ import annotations

from phobos.errors import StepFailed


class WrongPassphrase(StepFailed):
    """The initramfs refused the passphrase."""


class NotWaiting(StepFailed):
    """The initramfs is not (or no longer) waiting for a passphrase."""


class UnlockCommandMissing(StepFailed):
    """There is no cryptroot-unlock where we logged in."""
