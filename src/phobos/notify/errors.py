"""Errors of the notifiers. A notifier failure never hides a job's own result: the runner
reports these as warnings."""

from __future__ import annotations

from phobos.errors import PhobosError


class NotifyFailed(PhobosError):
    """A notification could not be delivered. The runner turns it into a warning."""


class LedUnavailable(PhobosError):
    """The LED cannot be driven or its state cannot be recorded (absent, no permission...).

    A notifier failure: the runner reports it and never lets it change the job's own result.
    """


class LedStateUnwritable(LedUnavailable):
    """The LED's state file cannot be written (a read-only or full state directory): the
    colour is still shown, but not remembered."""
