"""Next elapses of a :class:`~phobos.oncalendar.spec.CalendarSpec`: systemd's ``find_next()``
and ``calendar_spec_next_usec()`` over the glibc emulation in :mod:`phobos.oncalendar.civil_time`.

Checked against ``systemd-analyze calendar`` by the oracle tests like the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from phobos.oncalendar.civil_time import Clock, Tm, from_usec, to_usec
from phobos.oncalendar.errors import CalendarError
from phobos.oncalendar.spec import ALL_WEEKDAYS, MAX_YEAR, USEC_PER_SEC, CalendarSpec, Chain

_MAX_ITERATIONS = 1000  # systemd's safety valve in find_next()


def next_elapse(spec: CalendarSpec, after: datetime) -> datetime | None:
    """The first elapse of ``spec`` strictly after ``after``, or None if it never elapses again.

    ``after`` must be timezone-aware and not before 1970 (ValueError otherwise). The result
    is aware, in ``spec.zone``, with microsecond precision. Raises :class:`CalendarError`
    where systemd gives up (its 1000-step safety valve).
    """
    found = next_usec(spec, to_usec(after))
    return None if found is None else from_usec(found).astimezone(spec.zone)


def iter_elapses(spec: CalendarSpec, after: datetime, count: int) -> Iterator[datetime]:
    """Yield up to ``count`` successive elapses after ``after`` (fewer if they stop)."""
    for _ in range(count):
        found = next_elapse(spec, after)
        if found is None:
            return
        yield found
        after = found


def next_usec(spec: CalendarSpec, after: int) -> int | None:
    """systemd's calendar_spec_next_usec(): the first elapse > ``after`` (µs since epoch)."""
    clock = Clock(spec.zone, spec.utc)
    after += 1
    found = _find_next(spec, clock, clock.localtime(after // USEC_PER_SEC), after % USEC_PER_SEC)
    if found is None:
        return None
    tm, usec = found
    t = clock.mktime(tm)
    if t is None or t < 0:
        raise CalendarError(f"cannot convert the next elapse of {spec.normalized}")
    return t * USEC_PER_SEC + usec


# --- systemd's find_next() and its helpers ------------------------------------------------


def _end_of_month(clock: Clock, tm: Tm, back: int) -> int:
    """The day ``back`` days counted from the end of tm's month (1 = last), or -1."""
    probe = tm.copy()
    probe.mon += 1
    probe.mday = 1 - back
    if not clock.normalizes(probe) or probe.mon != tm.mon:
        return -1
    return probe.mday


def _match(clock: Clock, chain: Chain, tm: Tm, value: int, eom: bool) -> tuple[int, int]:
    """Earliest chain value >= ``value``: (-1 none | 0 same | 1 moved, new value)."""
    if not chain:
        return 0, value
    best: int | None = None
    for comp in chain:
        start, stop = comp.start, comp.stop
        if eom:
            start, stop = _end_of_month(clock, tm, start), _end_of_month(clock, tm, stop)
            if stop > 0:
                start, stop = stop, start
        if start >= value:
            candidate = start
        elif comp.repeat > 0:
            candidate = start + comp.repeat * -((start - value) // comp.repeat)
            if 0 <= stop < candidate:
                continue
        else:
            continue
        if best is None or candidate < best:
            best = candidate
    if best is None:
        return -1, value
    return int(best != value), best


def _within_bounds(clock: Clock, tm: Tm) -> int:
    """1 if ``tm`` is normal already; 0 if normalizing moved it forward (``tm`` updated);
    -1 if unusable: past MAX_YEAR, unconvertible, or normalized backwards."""
    if tm.year > MAX_YEAR:
        return -1
    norm = tm.copy()
    if not clock.normalizes(norm):
        return -1
    # After an overflow into a larger unit restart the next smaller one (one level only, as
    # systemd does) so that no elapse in between is skipped.
    for unit, (new, old) in zip(_UNITS, zip(norm.key(), tm.key(), strict=True), strict=True):
        if new != old:
            if unit != "sec":
                below = _UNITS[_UNITS.index(unit) + 1]
                setattr(norm, below, 1 if below == "mday" else 0)
            if new < old:
                return -1
            tm.assign(norm)
            return 0
    return 1


_UNITS = ("year", "mon", "mday", "hour", "min", "sec")


def _truncate(tm: Tm, unit: str) -> int:
    """Reset every field below ``unit`` to its first value; returns 0 for the µs part."""
    for name in _UNITS[_UNITS.index(unit) + 1:]:
        setattr(tm, name, 1 if name == "mday" else 0)
    return 0


def _weekday_ok(clock: Clock, bits: int, tm: Tm) -> bool:
    if bits < 0 or bits >= ALL_WEEKDAYS:
        return True
    norm = tm.copy()
    return clock.normalizes(norm) and bool(bits & (1 << ((norm.wday + 6) % 7)))


def _find_next(spec: CalendarSpec, clock: Clock, start: Tm, start_usec: int
               ) -> tuple[Tm, int] | None:
    """systemd's find_next(): walk from ``start`` to the first match; None if none."""
    steps = (("year", spec.year, ""), ("mon", spec.month, "year"), ("mday", spec.day, "mon"),
             ("hour", spec.hour, "mday"), ("min", spec.minute, "hour"),
             ("sec", spec.second, "min"))  # (field, chain, field to advance on a miss)
    c, usec, keep_isdst = start.copy(), start_usec, False
    for _ in range(_MAX_ITERATIONS):
        clock.mktime(c)  # normalize; a failure is ignored, as in systemd
        if not keep_isdst:
            c.isdst = spec.dst
        for unit, chain, parent in steps:
            r, usec = _match_unit(clock, spec, c, unit, chain, usec)
            state = -1 if r < 0 else _within_bounds(clock, c)
            if state <= 0 and not parent:
                return None  # no year left to try
            if state < 0:
                setattr(c, parent, getattr(c, parent) + 1)
                usec = _truncate(c, parent)
            if state <= 0:
                break
            if unit == "mday" and not _weekday_ok(clock, spec.weekdays, c):
                c.mday += 1
                usec = _truncate(c, "mday")
                break
        else:
            if (*c.key(), usec) >= (*start.key(), start_usec):
                return c, usec
            # Landed before the start (a DST fold): try an hour later and from now on keep
            # the isdst normalization found (Debian's 252.39 has upstream's Dublin fix).
            c.hour += 1
            keep_isdst = True
    raise CalendarError(f"infinite loop in calendar calculation: {spec.normalized}",
                        "systemd gives up on this expression too")


def _match_unit(clock: Clock, spec: CalendarSpec, c: Tm, unit: str, chain: Chain,
                usec: int) -> tuple[int, int]:
    """Match one field of ``c`` against ``chain``; returns (match result, µs part)."""
    if unit == "sec":  # seconds match together with their microseconds
        r, total = _match(clock, chain, c, c.sec * USEC_PER_SEC + usec, False)
        c.sec, usec = divmod(total, USEC_PER_SEC)
        return r, usec
    shift = 1 if unit == "mon" else 0  # months are 1-based in specs, 0-based in struct tm
    r, value = _match(clock, chain, c, getattr(c, unit) + shift, spec.end_of_month and
                      unit == "mday")
    setattr(c, unit, value - shift)
    return r, (_truncate(c, unit) if r > 0 else usec)
