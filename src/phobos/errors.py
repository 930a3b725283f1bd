"""Typed errors. Library code raises these; only ``__main__`` turns them into exit codes.

Every error carries a message (what is wrong) and a hint (what to do about it).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The documented exit codes of every phobos command (README, phobos(1))."""

    OK = 0  # success, or a job that finished with warnings
    FAILED = 1  # a job (or an operation) failed
    USAGE = 2  # bad command line or bad configuration: nothing was run
    SKIPPED = 3  # skipped: a resource was busy, or a drive/host was absent
    INTERRUPTED = 4  # stopped by a signal; cleanup ran
    UNRECORDED = 5  # the job ran, but its history could not be recorded (damage signalled)
    INTERNAL = 70  # a bug in phobos (EX_SOFTWARE): please report it


class PhobosError(Exception):
    """Base of all expected failures: a message and a hint, never a traceback."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(PhobosError):
    """The command line asks for something that cannot be done as asked."""

    exit_code = ExitCode.USAGE


class ConfigError(PhobosError):
    """The configuration is invalid. ``problems`` lists every problem of the file."""

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, problems: list[str] | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.problems = problems or []

    def __str__(self) -> str:
        return "\n".join([self.message, *("  " + p for p in self.problems)])


class ToolMissing(PhobosError):
    """An external program phobos needs is not installed."""

    exit_code = ExitCode.FAILED


class StepFailed(PhobosError):
    """A step of a job exited with a code that means failure."""


class PullFailed(StepFailed):
    """One or more hosts of a pull job failed."""


class HoldingError(PhobosError):
    """The holding area cannot take the pull (missing, read-only, full)."""


class SecretLeak(PhobosError):
    """A secret was about to be put where it must never be (argv)."""

    exit_code = ExitCode.INTERNAL


class Busy(PhobosError):
    """A resource is held by another run and the job's policy is not to wait (longer)."""

    exit_code = ExitCode.SKIPPED


class Absent(PhobosError):
    """Something the job needs is not there right now (a drive, a host): try later."""

    exit_code = ExitCode.SKIPPED


class Interrupted(BaseException):
    """The run was stopped by a signal (SIGTERM, SIGINT, SIGHUP).

    Deliberately neither a PhobosError nor an Exception, like KeyboardInterrupt: a stop
    signal arrives at any line, and an ``except PhobosError`` meant for an ordinary
    failure there (naming a lock's holder while waiting for it, building a notifier)
    must not swallow it. ``by_user``: a person pressed Ctrl-C at the terminal running
    the job (recorded, but no alarm is raised for it).
    """

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, message: str, hint: str | None = None, *,
                 by_user: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.by_user = by_user

    def __str__(self) -> str:
        return self.message


class HistoryUnavailable(PhobosError):
    """The history database cannot be read or written (damaged, read-only, full)."""

    def __init__(self, message: str, hint: str | None = None, *,
                 damaged: bool = False) -> None:
        super().__init__(message, hint)
        self.damaged = damaged  # corrupt (to be moved aside), not merely unwritable
