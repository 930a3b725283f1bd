"""From a parsed draft to a :class:`~phobos.oncalendar.spec.CalendarSpec`: systemd's
``calendar_spec_normalize()`` and ``calendar_spec_valid()``, with errors that say which value
is wrong and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, tzinfo

from phobos.oncalendar.errors import CalendarError
from phobos.oncalendar.spec import (
    ALL_WEEKDAYS,
    MAX_YEAR,
    MIN_YEAR,
    USEC_PER_SEC,
    CalendarSpec,
    Chain,
    Component,
    format_component,
)
from phobos.oncalendar.zones import load_zone


@dataclass(slots=True)
class Draft:
    """A specification under construction by the parser; None chains are systemd's NULL
    (any value), ``weekdays`` 0 means no weekday was named."""

    weekdays: int = 0
    year: list[Component] | None = None
    month: list[Component] | None = None
    day: list[Component] | None = None
    hour: list[Component] | None = None
    minute: list[Component] | None = None
    second: list[Component] | None = None
    end_of_month: bool = False
    utc: bool = False
    timezone: str | None = None
    dst: int = -1


def normalize_and_validate(text: str, draft: Draft, local: tzinfo,
                           names: tuple[str, str]) -> CalendarSpec:
    """The specification ``draft`` (parsed from ``text``) stands for, normalized as systemd
    does; ``local`` is the zone when the expression names none, ``names`` its abbreviations.
    Raises :class:`CalendarError` for a value systemd's validity check rejects."""
    utc = draft.utc or draft.timezone == "UTC"
    timezone = None if draft.timezone == "UTC" else draft.timezone
    years = None if draft.year is None else [
        Component(start=_fix_year(c.start), stop=_fix_year(c.stop), repeat=c.repeat)
        for c in draft.year]
    day = _normalize_chain(draft.day)
    spec = CalendarSpec(
        weekdays=draft.weekdays if 0 < draft.weekdays < ALL_WEEKDAYS else -1,
        year=_normalize_chain(years), month=_normalize_chain(draft.month), day=day,
        hour=_normalize_chain(draft.hour), minute=_normalize_chain(draft.minute),
        second=_normalize_chain(draft.second), end_of_month=draft.end_of_month and bool(day),
        utc=utc, timezone=timezone, dst=draft.dst, zone_names=names,
        zone=UTC if utc else (load_zone(timezone) or UTC) if timezone else local)
    for what, chain, low, high in (("year", spec.year, MIN_YEAR, MAX_YEAR),
                                   ("month", spec.month, 1, 12), ("day", spec.day, 1, 31),
                                   ("hour", spec.hour, 0, 23), ("minute", spec.minute, 0, 59),
                                   ("second", spec.second, 0, 60 * USEC_PER_SEC - 1)):
        _check_chain(text, what, chain, low, high, spec.end_of_month and what == "day")
    return spec


def _fix_year(value: int) -> int:
    # Two-digit years: 12 means 2012 and 89 means 1989.
    return value + 2000 if 0 <= value < 70 else value + 1900 if 70 <= value < 100 else value


def _normalize_chain(chain: list[Component] | None) -> Chain:
    """Trim ranges to whole steps, drop steps that never fire, sort and dedupe."""
    if chain is None:
        return ()
    result = []
    for comp in chain:
        start, stop, repeat = comp.start, comp.stop, comp.repeat
        if stop > start and repeat > 0:
            stop -= (stop - start) % repeat
        if (stop > start and repeat > 0 and start + repeat > stop) or start == stop:
            stop, repeat = -1, 0
        result.append(Component(start=start, stop=stop, repeat=repeat))
    return tuple(sorted(set(result), key=lambda c: (c.start, c.stop, c.repeat)))


def _check_chain(text: str, what: str, chain: Chain, low: int, high: int, eom: bool) -> None:
    """Reject what systemd's chain_valid() rejects, saying which value and why."""
    scale = USEC_PER_SEC if what == "second" else 1
    for comp in chain:
        if eom:
            # "~N" may reach 28 days back, but systemd's recursive check takes 3 more days
            # off the limit for every further list element; kept for fidelity.
            high -= 3
        shown = f"{what} {format_component(comp, 1, scale)}"
        if not low <= comp.start <= high or (comp.stop >= 0 and not low <= comp.stop <= high):
            raise CalendarError.invalid(text, f"{shown} is outside {low // scale}..{high // scale}")
        if comp.repeat > high - low:
            raise CalendarError.invalid(text, f"{shown}: repetition too large")
        if comp.stop >= 0 and comp.start + comp.repeat > comp.stop:
            raise CalendarError.invalid(text, f"{shown}: empty range")
        if comp.stop < 0 and (comp.start - comp.repeat < low if eom
                              else comp.start + comp.repeat > high):
            raise CalendarError.invalid(text, f"{shown}: the repetition never fits in the range")
