"""The elapse search of :mod:`phobos.oncalendar.spec`: systemd's ``find_next()`` over an
emulation of glibc's ``mktime()``.

systemd steers its search by ``mktime()`` normalization, so DST gaps and folds are decided
by glibc's choices there; :class:`_Clock` reproduces them on top of :mod:`zoneinfo`. Kept
apart from the parser so each stays readable; checked against ``systemd-analyze calendar``
by the oracle tests like the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta, tzinfo

from phobos.oncalendar.spec import (
    _ALL_WEEKDAYS,
    _MAX_ITERATIONS,
    MAX_YEAR,
    USEC_PER_SEC,
    CalendarError,
    CalendarSpec,
    Chain,
    _civil_from_days,
    _days_from_civil,
)

# --- broken-down time and glibc's mktime() ------------------------------------------------


@dataclass(slots=True)
class _Tm:
    """C's ``struct tm`` with a full year; fields may be out of range until normalized."""

    year: int
    mon: int  # 0..11
    mday: int
    hour: int
    min: int
    sec: int
    isdst: int  # -1 unknown, 0, 1
    wday: int = 0  # 0 = Sunday

    def copy(self) -> _Tm:
        return replace(self)

    def assign(self, other: _Tm) -> None:
        for name in _TM_FIELDS:
            setattr(self, name, getattr(other, name))

    def key(self) -> tuple[int, int, int, int, int, int]:
        return self.year, self.mon, self.mday, self.hour, self.min, self.sec

    def naive_seconds(self, sec: int) -> int:
        """Seconds since the epoch reading the fields as UTC (glibc's ydhms_diff)."""
        days = _days_from_civil(self.year + self.mon // 12, self.mon % 12 + 1, self.mday)
        return (days * 24 + self.hour) * 3600 + self.min * 60 + sec


_TM_FIELDS = tuple(f.name for f in fields(_Tm))


def _tm_from_naive(naive: int, isdst: int) -> _Tm:
    days, rest = divmod(naive, 86400)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(rest, 3600)
    return _Tm(year, month - 1, day, hour, rest // 60, rest % 60, isdst, (days + 4) % 7)


class _Clock:
    """glibc 2.36's localtime()/mktime() (or gmtime()/timegm() with ``utc``) in one zone.

    mktime() starts from the UTC offset its previous call found; in a DST fold that guess
    picks which of the two wall-clock times is meant, so it is kept here too.
    """

    def __init__(self, zone: tzinfo, utc: bool) -> None:
        self.zone, self.utc, self.guess = zone, utc, 0
        self.offsets: dict[int, tuple[int, int]] = {}

    def offset(self, t: int) -> tuple[int, int]:
        """(UTC offset in seconds, isdst) at instant ``t``."""
        found = self.offsets.get(t)
        if found is None:
            moment = datetime.fromtimestamp(t, self.zone)
            found = (int((moment.utcoffset() or timedelta(0)).total_seconds()),
                     int(bool(moment.dst())))
            self.offsets[t] = found
        return found

    def localtime(self, t: int) -> _Tm:
        offset, isdst = self.offset(t)
        return _tm_from_naive(t + offset, isdst)

    def mktime(self, tm: _Tm) -> int | None:
        """Normalize ``tm`` in place and return its time, or None (tm untouched) on failure."""
        if self.utc:
            tm.isdst = 0  # timegm() ignores any DST request
        sec = min(max(tm.sec, 0), 59)  # glibc probes with 0..59 and adds the rest back later
        naive = tm.naive_seconds(sec)
        t = self.probe(naive, tm.isdst)
        if t is None:
            return None
        self.guess = naive - t
        if self.localtime(t).sec != tm.sec:
            t += tm.sec - sec
        tm.assign(self.localtime(t))
        return t

    def probe(self, naive: int, isdst: int) -> int | None:
        """glibc's search for the instant whose wall-clock reading is ``naive``."""
        t = t1 = t2 = naive - self.guess
        dst2, probes = 0, 6
        while True:
            offset, dst = self.offset(t)
            delta = naive - (t + offset)
            if delta == 0:
                break
            # Oscillating across a spring-forward gap: settle next to the gap, preferring
            # DST when no isdst was asked for, else the flavour that was not asked for.
            if t == t1 and t != t2 and (dst2 <= dst if isdst < 0 else (isdst != 0) != dst):
                return t
            probes -= 1
            if probes == 0:
                return None
            t1, t2, t, dst2 = t2, t, t + delta, dst
        if isdst < 0 or (isdst != 0) == dst:
            return t
        # The wall time exists, but with the other isdst: borrow the UTC offset of the
        # nearest instant (in steps of about a week, up to ~8.5 years away) that has it.
        for delta in range(601200, 536454000 // 2 + 601200, 601200):
            for other in (t - delta, t + delta):
                offset, dst = self.offset(other)
                if (isdst != 0) == dst:
                    return naive - offset
        return None

    def normalizes(self, tm: _Tm) -> bool:
        # mktime_or_timegm() < 0 counts as failure in systemd, even for valid pre-1970 times.
        result = self.mktime(tm)
        return result is not None and result >= 0


# --- next elapse: systemd's find_next() and helpers -----------------------------------------


def _end_of_month(clock: _Clock, tm: _Tm, back: int) -> int:
    """The day ``back`` days counted from the end of tm's month (1 = last), or -1."""
    probe = tm.copy()
    probe.mon += 1
    probe.mday = 1 - back
    if not clock.normalizes(probe) or probe.mon != tm.mon:
        return -1
    return probe.mday


def _match(clock: _Clock, chain: Chain, tm: _Tm, value: int, eom: bool) -> tuple[int, int]:
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


def _within_bounds(clock: _Clock, tm: _Tm) -> int:
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


def _truncate(tm: _Tm, unit: str) -> int:
    """Reset every field below ``unit`` to its first value; returns 0 for the µs part."""
    for name in _UNITS[_UNITS.index(unit) + 1:]:
        setattr(tm, name, 1 if name == "mday" else 0)
    return 0


def _weekday_ok(clock: _Clock, bits: int, tm: _Tm) -> bool:
    if bits < 0 or bits >= _ALL_WEEKDAYS:
        return True
    norm = tm.copy()
    return clock.normalizes(norm) and bool(bits & (1 << ((norm.wday + 6) % 7)))


def _find_next(spec: CalendarSpec, clock: _Clock, start: _Tm, start_usec: int
               ) -> tuple[_Tm, int] | None:
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


def _match_unit(clock: _Clock, spec: CalendarSpec, c: _Tm, unit: str, chain: Chain,
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


def next_usec(spec: CalendarSpec, after: int) -> int | None:
    """systemd's calendar_spec_next_usec(): the first elapse > ``after`` (µs since epoch)."""
    clock = _Clock(spec.zone, spec.utc)
    after += 1
    found = _find_next(spec, clock, clock.localtime(after // USEC_PER_SEC), after % USEC_PER_SEC)
    if found is None:
        return None
    tm, usec = found
    t = clock.mktime(tm)
    if t is None or t < 0:
        raise CalendarError(f"cannot convert the next elapse of {spec.normalized}")
    return t * USEC_PER_SEC + usec
