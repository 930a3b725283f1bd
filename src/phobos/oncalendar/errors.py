"""The error of the oncalendar package: an expression systemd rejects."""

from __future__ import annotations

from phobos.errors import ExitCode, PhobosError


class CalendarError(PhobosError):
    """An expression systemd rejects, or an elapse systemd fails to compute.

    Like a bad configuration it stops phobos before anything runs (exit code 2). Code that
    reports many expressions at once (config checks, ``phobos calendar``) catches it per
    expression and reads ``message``.
    """

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message, hint or "see systemd.time(7), section CALENDAR EVENTS")

    @classmethod
    def invalid(cls, text: str, reason: str) -> CalendarError:
        """The error for an expression ``text`` that systemd rejects for ``reason``."""
        return cls(f"invalid calendar specification {text!r}: {reason}")
