"""Small value types shared across phobos: enums spelled as in the config, durations."""

from __future__ import annotations

import re
from enum import StrEnum


class JobKind(StrEnum):
    PULL = "pull"
    ARCHIVE = "archive"
    CHECK = "check"
    DRILL = "drill"
    DRIVE_SYNC = "drive-sync"
    CLOUD_SYNC = "cloud-sync"
    BORGMATIC = "borgmatic"
    COMMAND = "command"


class Outcome(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    WARNING = "warning"
    FAILED = "failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"


class Trigger(StrEnum):
    MANUAL = "manual"
    TIMER = "timer"
    DEVICE = "device"
    DAEMON = "daemon"


class BusyPolicy(StrEnum):
    """What a job does when a resource it needs is held by another run."""

    WAIT = "wait"
    SKIP = "skip"
    FAIL = "fail"


class LedState(StrEnum):
    OFF = "off"
    BLUE = "blue"
    YELLOW = "yellow"
    GREEN = "green"
    RED = "red"


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d|w)?")
_UNIT_SECONDS = {None: 1.0, "ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0,
                 "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str | int | float) -> float:
    """Seconds from ``"2h"``, ``"1h30m"``, ``"90s"``, ``"45"`` or a number.

    Raises ValueError with a readable reason on anything else.
    """
    if isinstance(text, bool):
        raise ValueError("expected a duration such as \"90s\", \"30m\" or \"2h\"")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    compact = text.replace(" ", "")
    pos, total = 0, 0.0
    while pos < len(compact):
        match = _DURATION_PART.match(compact, pos)
        if not match or match.end() == pos:
            raise ValueError(f"{text!r} is not a duration; use e.g. "
                             "\"90s\", \"30m\", \"2h\", \"1d\"")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not compact:
        raise ValueError("empty duration")
    return total


def format_duration(seconds: float | None) -> str:
    """Short human form: ``4.2s``, ``12m05s``, ``5h30m``, ``2d03h``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_size(count: float | None) -> str:
    """``1.5 GiB`` style (binary units, as Borg and rsync users read them); ``?`` for None."""
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop always returns
