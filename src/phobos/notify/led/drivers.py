"""The LED drivers that need no device protocol of their own: the :class:`LedDriver`
interface, the full-brightness colour of each state, :class:`FileDriver` (writes the
state's name to a file, for other tools and for tests) and :class:`CommandDriver` (runs
the user's program, e.g. the ``blinkstick`` CLI). The BlinkStick's own HID protocol is in
:mod:`phobos.notify.led.blinkstick`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from phobos.core import proc
from phobos.core.files import write_atomic
from phobos.core.model import LedState, Outcome
from phobos.errors import Interrupted, PhobosError
from phobos.notify.errors import LedUnavailable

COMMAND_TIMEOUT = 10.0  # seconds: a light that takes longer is broken, not busy


class LedDriver(Protocol):
    """Shows a colour. Raises `LedUnavailable` when it cannot; setting the same state again
    is harmless (and re-asserts it, e.g. after the stick was replugged)."""

    def set(self, state: LedState) -> None: ...


#: Full-brightness colour of each state as (R, G, B); `BlinkStickDriver` dims it by ``limit``.
COLOURS: Final[dict[LedState, tuple[int, int, int]]] = {
    LedState.OFF: (0, 0, 0),
    LedState.BLUE: (0, 0, 255),
    LedState.YELLOW: (255, 255, 0),
    LedState.GREEN: (0, 255, 0),
    LedState.RED: (255, 0, 0),
}


@dataclass(frozen=True, slots=True)
class FileDriver:
    """Writes the state's name and a newline to ``path`` (atomically), for other tools."""

    path: Path

    def set(self, state: LedState) -> None:
        """Replace the file's content by ``state``; LedUnavailable if it cannot be written."""
        try:
            write_atomic(self.path, f"{state}\n".encode())
        except OSError as exc:
            raise LedUnavailable(f"cannot write the LED state to {self.path}: {exc.strerror}",
                                 hint="check that the directory exists and phobos may write it"
                                 ) from exc


def expand(template: tuple[str, ...], state: LedState, limit: int = 100) -> list[str]:
    """``template`` with ``{color}`` replaced by the state's name (off, blue, yellow, green,
    red), ``{hex}`` by its full-brightness ``RRGGBB`` and ``{limit}`` by its brightness
    limit (for ``blinkstick --limit {limit}``)."""
    red, green, blue = COLOURS[state]
    values = {"{color}": str(state), "{hex}": f"{red:02x}{green:02x}{blue:02x}",
              "{limit}": str(limit)}
    out = []
    for arg in template:
        for key, value in values.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


@dataclass(frozen=True, slots=True)
class CommandDriver:
    """Runs ``argv`` (expanded by :func:`expand`) through :func:`phobos.core.proc.run` for each
    colour; LedUnavailable when the program is missing, fails or hangs."""

    argv: tuple[str, ...]
    timeout: float = COMMAND_TIMEOUT
    limits: Mapping[LedState, int] = field(default_factory=dict)  # {limit}; default 100

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("the LED command driver needs a command")

    def set(self, state: LedState) -> None:
        argv = expand(self.argv, state, self.limits.get(state, 100))
        try:
            result = proc.run(argv, timeout=self.timeout, check=False)
        except Interrupted:
            raise  # the run is being stopped: not the light's failure
        except PhobosError as exc:
            raise LedUnavailable(f"LED command: {exc.message}", hint=exc.hint) from None
        if result.outcome is Outcome.FAILED:
            raise LedUnavailable(f"LED command: {proc.failure(result).message}",
                                 hint="run it by hand to see why: " + " ".join(result.argv))
