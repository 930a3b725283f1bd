"""A step: one program a job runs. Produced by pure planning, executed by the runner."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from phobos.core.progress import ReaderFactory


def _no_env() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """What to run and how to judge it.

    ``env`` adds to the allow-listed environment; ``secrets`` are values to redact
    (and refuse in argv); ``stdin`` is fed to the child (e.g. a passphrase for a
    ``*_FD`` variable is passed by the planner as a pipe, never as an argument).
    ``progress`` makes the reader of the program's progress output (see
    :mod:`phobos.core.progress`); with it, output is also split at carriage returns.
    ``diagnose`` reads the last output lines of a failed run (stderr lines prefixed
    ``stderr: ``) and may return a clear (message, hint) that replaces the quoted output,
    for failures people meet (a full filesystem rather than Borg's traceback).
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=_no_env)
    secrets: tuple[str, ...] = ()
    ok_codes: tuple[int, ...] = (0,)
    warn_codes: tuple[int, ...] = ()
    timeout: float | None = None
    capture: bool = False
    stdin: bytes | None = None
    cwd: str | None = None
    explain: Callable[[int], str] | None = None
    diagnose: Callable[[Sequence[str]], tuple[str, str] | None] | None = None
    label: str = ""  # prefixed to each output line in the log, e.g. the host of a pull
    progress: ReaderFactory | None = None
