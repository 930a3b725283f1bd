"""The LED's ``command`` driver: show a colour by running the user's program.

For setups where another tool drives the light, e.g. the seed's
``["blinkstick", "--index", "1", "--limit", "50", "--set-color", "{color}"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from phobos.core import proc
from phobos.core.model import LedState, Outcome
from phobos.errors import Interrupted, PhobosError
from phobos.notify.led import COLOURS, LedUnavailable

COMMAND_TIMEOUT = 10.0  # seconds: a light that takes longer is broken, not busy


def expand(template: tuple[str, ...], state: LedState) -> list[str]:
    """``template`` with ``{color}`` replaced by the state's name (off, blue, yellow, green,
    red) and ``{hex}`` by its full-brightness ``RRGGBB``."""
    red, green, blue = COLOURS[state]
    values = {"{color}": str(state), "{hex}": f"{red:02x}{green:02x}{blue:02x}"}
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

    def __post_init__(self) -> None:
        if not self.argv:
            raise ValueError("the LED command driver needs a command")

    def set(self, state: LedState) -> None:
        argv = expand(self.argv, state)
        try:
            result = proc.run(argv, timeout=self.timeout, check=False)
        except Interrupted:
            raise  # the run is being stopped: not the light's failure
        except PhobosError as exc:
            raise LedUnavailable(f"LED command: {exc.message}", hint=exc.hint) from None
        if result.outcome is Outcome.FAILED:
            raise LedUnavailable(f"LED command: {proc.failure(result).message}",
                                 hint="run it by hand to see why: " + " ".join(result.argv))
