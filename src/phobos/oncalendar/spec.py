"""A parsed ``OnCalendar=`` expression (systemd's ``CalendarSpec``) and its normalized form,
printed exactly as ``systemd-analyze calendar`` prints it.

phobos reproduces systemd 252.39 (Debian 12) on glibc exactly, quirks included: verdict,
normalized form and every elapse agree with ``systemd-analyze calendar``
(tests/integration/test_calendar_oracle.py checks a large corpus live).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo

USEC_PER_SEC = 1_000_000
MIN_YEAR = 1970
MAX_YEAR = 2199
ALL_WEEKDAYS = 127  # the weekday bit set with every day in it
WEEKDAY_ABBREVIATIONS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True, slots=True, kw_only=True)
class Component:
    """One list element ``start[..stop][/repeat]``; ``stop`` -1 means open, ``repeat`` 0 none.

    Seconds are stored in microseconds, as systemd does.
    """

    start: int
    stop: int = -1
    repeat: int = 0


Chain = tuple[Component, ...]  # the empty chain is systemd's NULL chain: any value


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarSpec:
    """A parsed, normalized ``OnCalendar=`` expression (systemd's ``CalendarSpec``).

    ``weekdays`` is a bit set (bit 0 Monday ... bit 6 Sunday) or -1 for any day; ``dst`` is
    -1 unless the expression ended in the local zone's standard (0) or daylight (1) name.
    ``zone`` is where the fields are read: UTC, the named zone, or the local zone.
    Build one with :func:`phobos.oncalendar.parse.parse_calendar`; its elapses come from
    :mod:`phobos.oncalendar.elapse`.
    """

    weekdays: int
    year: Chain
    month: Chain
    day: Chain
    hour: Chain
    minute: Chain
    second: Chain
    end_of_month: bool
    utc: bool
    timezone: str | None
    dst: int
    zone: tzinfo = field(compare=False, repr=False)
    zone_names: tuple[str, str] = field(compare=False, repr=False)

    @property
    def normalized(self) -> str:
        """The expression exactly as systemd prints it ("Normalized form")."""
        out = f"{_format_weekdays(self.weekdays)} " if self.weekdays > 0 else ""
        out += (f"{_format_chain(self.year, 4)}-{_format_chain(self.month, 2)}"
                f"{'~' if self.end_of_month else '-'}{_format_chain(self.day, 2)} "
                f"{_format_chain(self.hour, 2)}:{_format_chain(self.minute, 2)}:"
                f"{_format_chain(self.second, 2, usec=True)}")
        if self.utc:
            return out + " UTC"
        if self.timezone:
            return f"{out} {self.timezone}"
        if self.dst in (0, 1) and self.zone_names[self.dst]:
            return f"{out} {self.zone_names[self.dst]}"
        return out


# --- the normalized form ------------------------------------------------------------------


def _format_number(value: int, width: int, scale: int) -> str:
    whole, micro = divmod(value, scale)
    return f"{whole:0{width}d}" + (f".{micro:06d}" if micro else "")


def format_component(comp: Component, width: int, scale: int) -> str:
    """``comp`` as systemd prints it, numbers ``width`` digits wide and divided by ``scale``
    (USEC_PER_SEC for seconds, else 1)."""
    out = _format_number(comp.start, width, scale)
    if comp.stop > 0:
        out += ".." + _format_number(comp.stop, width, scale)
    if comp.repeat > 0 and not (comp.stop > 0 and comp.repeat == scale):
        out += "/" + _format_number(comp.repeat, 1, scale)
    return out


def _format_chain(chain: Chain, width: int, usec: bool = False) -> str:
    if not chain or (usec and Component(start=0, repeat=USEC_PER_SEC) in chain):
        return "*"  # no restriction, or one element that covers every second
    return ",".join(format_component(c, width, USEC_PER_SEC if usec else 1) for c in chain)


def _format_weekdays(bits: int) -> str:
    parts, day = [], 0
    while day < 7:
        end = day
        while bits & (1 << day) and end + 1 < 7 and bits & (1 << (end + 1)):
            end += 1
        if bits & (1 << day):  # runs of three or more days become ranges
            sep = ".." if end > day + 1 else ","
            parts.append(WEEKDAY_ABBREVIATIONS[day]
                         + ("" if end == day else sep + WEEKDAY_ABBREVIATIONS[end]))
        day = end + 1
    return ",".join(parts)
