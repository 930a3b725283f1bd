"""What ``systemd-analyze calendar`` prints: its timestamp formats and its table of original
form, normalized form and next elapses (``phobos calendar`` and the oracle tests)."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

from phobos.oncalendar.civil_time import to_usec
from phobos.oncalendar.elapse import iter_elapses
from phobos.oncalendar.parse import parse_calendar
from phobos.oncalendar.spec import USEC_PER_SEC, WEEKDAY_ABBREVIATIONS
from phobos.oncalendar.zones import zone_is_utc


def format_timestamp(moment: datetime, zone: tzinfo) -> str:
    """Like systemd's format_timestamp(): ``Mon 2024-01-01 08:00:00 CET``."""
    local = moment.astimezone(zone)
    name = local.tzname()
    return (f"{WEEKDAY_ABBREVIATIONS[local.weekday()]} {local:%Y-%m-%d %H:%M:%S}"
            + (f" {name}" if name else ""))


_DAY, _HOUR, _MINUTE = 86400 * USEC_PER_SEC, 3600 * USEC_PER_SEC, 60 * USEC_PER_SEC
_YEAR, _MONTH = 31_557_600 * USEC_PER_SEC, 2_629_800 * USEC_PER_SEC  # 365.25 and 30.44 days
_RELATIVE = (  # (minimum, first unit, its size, second unit, its size or 0), largest first
    (_YEAR, " year", _YEAR, " month", _MONTH), (_MONTH, " month", _MONTH, " day", _DAY),
    (7 * _DAY, " week", 7 * _DAY, " day", _DAY), (2 * _DAY, " days", _DAY, "", 0),
    (6 * _HOUR, "h", _HOUR, "", 0), (_HOUR, "h", _HOUR, "min", _MINUTE),
    (5 * _MINUTE, "min", _MINUTE, "", 0), (_MINUTE, "min", _MINUTE, "s", USEC_PER_SEC),
    (USEC_PER_SEC, "s", USEC_PER_SEC, "", 0), (1000, "ms", 1000, "", 0), (1, "us", 1, "", 0),
)


def _unit(count: int, unit: str) -> str:
    plural = unit.startswith(" ") and count != 1 and not unit.endswith("s")
    return f"{count}{unit}{'s' * plural}"


def format_timestamp_relative(moment: datetime, now: datetime) -> str:
    """Like systemd's format_timestamp_relative(): ``3 weeks 2 days left``, ``5min ago``."""
    usec = to_usec(moment) - to_usec(now)
    suffix, d = ("left" if usec >= 0 else "ago"), abs(usec)
    if 25 * _HOUR <= d < 2 * _DAY:
        return f"1 day {(d - _DAY) // _HOUR}h {suffix}"
    for minimum, unit1, size1, unit2, size2 in _RELATIVE:
        if d >= minimum:
            second = f" {_unit(d % size1 // size2, unit2)}" if size2 else ""
            return f"{_unit(d // size1, unit1)}{second} {suffix}"
    return "now"


def format_like_systemd_analyze(text: str, iterations: int, base: datetime, local_tz: tzinfo,
                                *, now: datetime | None = None) -> str:
    """What ``TZ=<local_tz> systemd-analyze calendar --iterations=N --base-time=<base> TEXT``
    prints on stdout for ``text``, newline-terminated.

    systemd computes "From now" against the real clock (``now(CLOCK_REALTIME)``), not the
    base time; pass ``now`` to pin it (default: the current time). Raises
    :class:`CalendarError` where systemd prints an error instead of the table.
    """
    spec = parse_calendar(text, local_tz=local_tz)
    now = now if now is not None else datetime.now(UTC)
    rows = [] if spec.normalized == text else [("Original form:", text)]
    rows.append(("Normalized form:", spec.normalized))
    elapses = list(iter_elapses(spec, base, iterations))
    if iterations > 0 and not elapses:
        rows.append(("Next elapse:", "never"))
    for index, found in enumerate(elapses):
        rows.append(("Next elapse:" if index == 0 else f"Iter. #{index + 1}:",
                     format_timestamp(found, local_tz)))
        if not zone_is_utc(local_tz):
            rows.append(("(in UTC):", format_timestamp(found, UTC)))
        rows.append(("From now:", format_timestamp_relative(found, now)))
    width = max(len(label) for label, _ in rows)
    # systemd's table printer drops trailing whitespace (an original form like "Mon ").
    return "".join(f"{label:>{width}} {value}".rstrip(" \t\n\r") + "\n" for label, value in rows)
