"""Civil (wall-clock) time as glibc computes it: C's ``struct tm``, day counts, microseconds
since the epoch, and ``localtime()``/``mktime()`` emulated over :mod:`zoneinfo`.

systemd steers its elapse search by ``mktime()`` normalization, so DST gaps and folds are
decided by glibc's choices there; :class:`Clock` reproduces them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta, tzinfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_usec(moment: datetime) -> int:
    """Microseconds since the epoch of an aware ``moment``; ValueError for a naive one or
    one before 1970 (systemd's usec_t cannot hold it)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} is naive; a timezone-aware datetime is required")
    usec = (moment - _EPOCH) // timedelta(microseconds=1)
    if usec < 0:
        raise ValueError(f"{moment!r} is before 1970, which systemd cannot represent")
    return usec


def from_usec(usec: int) -> datetime:
    """The UTC instant ``usec`` microseconds after the epoch."""
    return _EPOCH + timedelta(microseconds=usec)


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a day counted from 1970-01-01, proleptic Gregorian."""
    era, doe = divmod(days + 719468, 146097)
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (month <= 2), month, doy - (153 * mp + 2) // 5 + 1


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a date; ``day`` may be out of range (it just adds up)."""
    year -= month <= 2
    era, yoe = divmod(year, 400)
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468 + day - 1


@dataclass(slots=True)
class Tm:
    """C's ``struct tm`` with a full year; fields may be out of range until normalized."""

    year: int
    mon: int  # 0..11
    mday: int
    hour: int
    min: int
    sec: int
    isdst: int  # -1 unknown, 0, 1
    wday: int = 0  # 0 = Sunday

    def copy(self) -> Tm:
        """An independent copy (systemd copies its struct tm by value)."""
        return replace(self)

    def assign(self, other: Tm) -> None:
        """Overwrite every field with ``other``'s (C's ``*tm = other``)."""
        for name in _TM_FIELDS:
            setattr(self, name, getattr(other, name))

    def key(self) -> tuple[int, int, int, int, int, int]:
        """The fields from year to second, for comparing two wall-clock readings."""
        return self.year, self.mon, self.mday, self.hour, self.min, self.sec

    def naive_seconds(self, sec: int) -> int:
        """Seconds since the epoch reading the fields as UTC (glibc's ydhms_diff)."""
        days = _days_from_civil(self.year + self.mon // 12, self.mon % 12 + 1, self.mday)
        return (days * 24 + self.hour) * 3600 + self.min * 60 + sec


_TM_FIELDS = tuple(f.name for f in fields(Tm))


def tm_from_naive(naive: int, isdst: int) -> Tm:
    """The broken-down reading of ``naive`` seconds since the epoch taken as UTC (gmtime()),
    with ``isdst`` filled in as given."""
    days, rest = divmod(naive, 86400)
    year, month, day = _civil_from_days(days)
    hour, rest = divmod(rest, 3600)
    return Tm(year, month - 1, day, hour, rest // 60, rest % 60, isdst, (days + 4) % 7)


class Clock:
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

    def localtime(self, t: int) -> Tm:
        """The wall-clock reading of instant ``t`` (seconds since the epoch) in the zone."""
        offset, isdst = self.offset(t)
        return tm_from_naive(t + offset, isdst)

    def mktime(self, tm: Tm) -> int | None:
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

    def normalizes(self, tm: Tm) -> bool:
        """Whether ``mktime(tm)`` succeeds (``tm`` normalized in place) at or after 1970."""
        # mktime_or_timegm() < 0 counts as failure in systemd, even for valid pre-1970 times.
        result = self.mktime(tm)
        return result is not None and result >= 0
