"""systemd ``OnCalendar=`` expressions: parsing, normalization and next elapse.

phobos shows when systemd will start each job, so this module reproduces systemd 252.39
(Debian 12) on glibc exactly, quirks included: verdict, normalized form and every elapse agree
with ``systemd-analyze calendar``. The elapse search ports systemd's ``find_next()``, which
steers by ``mktime()`` normalization, so glibc's ``mktime()`` is emulated over :mod:`zoneinfo`
(:mod:`phobos.oncalendar.elapse`): its choices in DST gaps and folds decide systemd's answers there.

Known limit: a trailing abbreviation of the *local* zone (``CET``) is matched against glibc's
``tzname``, which glibc rewrites as a side effect of conversions; here the names come from the
zone's current rules (:func:`zone_abbreviations`), as glibc has them for zones with DST.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

USEC_PER_SEC = 1_000_000
MIN_YEAR = 1970
MAX_YEAR = 2199
_ALL_WEEKDAYS = 127
_MAX_NESTING = 240  # systemd refuses lists of more than 241 elements
_MAX_ITERATIONS = 1000  # systemd's safety valve in find_next()
_INT_MAX = 2**31 - 1
_ULONG_MAX = 2**64 - 1
_ZONEINFO_DIR = "/usr/share/zoneinfo"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_DIGITS = frozenset(string.digits)
_C_SPACE = frozenset(" \t\n\v\f\r")  # isspace() in the C locale: strtoul() skips these
_DAY_ABBR = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_FULL = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# systemd tries full names before abbreviations and takes the first prefix that matches.
_DAY_NAMES = tuple((name, nr) for nr, full in enumerate(_DAY_FULL) for name in (full, full[:3]))


class CalendarError(ValueError):
    """An expression systemd rejects, or an elapse systemd fails to compute."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint or "see systemd.time(7), section CALENDAR EVENTS"


@dataclass(frozen=True, slots=True, kw_only=True)
class Component:
    """One list element ``start[..stop][/repeat]``; ``stop`` -1 means open, ``repeat`` 0 none.

    Seconds are stored in microseconds, as systemd does.
    """

    start: int
    stop: int = -1
    repeat: int = 0


Chain = tuple[Component, ...]  # the empty chain is systemd's NULL chain: any value


def _ascii_lower(text: str) -> str:
    return text.translate(_LOWER)


def _fail(text: str, reason: str) -> CalendarError:
    return CalendarError(f"invalid calendar specification {text!r}: {reason}")


# --- time zones ---------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _load_zone(name: str) -> tzinfo | None:
    """The zone if systemd's ``timezone_is_valid()`` accepts ``name`` (a sane relative path
    to a TZif file under /usr/share/zoneinfo, or "UTC"), else None."""
    if name == "UTC":
        return UTC
    if not name or name[0] == "/" or name[-1] == "/" or "//" in name:
        return None
    if not all(ch.isascii() and (ch.isalnum() or ch in "-_+/") for ch in name):
        return None
    try:  # load the very file systemd checks, never a bundled tzdata package
        with open(os.path.join(_ZONEINFO_DIR, name), "rb") as tzfile:
            if tzfile.read(4) != b"TZif":
                return None
            tzfile.seek(0)
            return ZoneInfo.from_file(tzfile, key=name)
    except (OSError, ValueError):  # missing, a directory, unreadable: invalid for systemd too
        return None


def system_timezone() -> tzinfo:
    """The local zone as glibc picks it: ``$TZ``, else ``/etc/localtime``, else UTC.

    POSIX rule strings in ``$TZ`` (``CET-1CEST,...``) are not supported and yield UTC.
    """
    spec = os.environ.get("TZ")
    name = "/etc/localtime" if spec is None else spec.removeprefix(":")
    try:
        if name.startswith("/"):
            with open(name, "rb") as tzfile:
                return ZoneInfo.from_file(tzfile, key=name)
        return ZoneInfo(name) if name else UTC
    except (OSError, ValueError):
        return UTC


def _zone_samples(zone: tzinfo) -> list[datetime]:
    year = datetime.now(UTC).year
    return [datetime(year, month, 1, 12, tzinfo=UTC).astimezone(zone) for month in (1, 7)]


def zone_abbreviations(zone: tzinfo) -> tuple[str, str]:
    """glibc's ``tzname`` pair (standard, daylight) for ``zone`` under its current rules.

    A zone without daylight saving time repeats its standard name, as glibc does.
    """
    names = {bool(moment.dst()): moment.tzname() or "" for moment in _zone_samples(zone)}
    standard = names.get(False) or names.get(True, "")
    return standard, names.get(True, standard)


def _zone_is_utc(zone: tzinfo) -> bool:
    # systemd-analyze's in_utc_timezone(): no offset from UTC and no daylight saving time.
    return all(m.utcoffset() == timedelta(0) and not m.dst() for m in _zone_samples(zone))


# --- the specification --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CalendarSpec:
    """A parsed, normalized ``OnCalendar=`` expression (systemd's ``CalendarSpec``).

    ``weekdays`` is a bit set (bit 0 Monday ... bit 6 Sunday) or -1 for any day; ``dst`` is
    -1 unless the expression ended in the local zone's standard (0) or daylight (1) name.
    ``zone`` is where the fields are read: UTC, the named zone, or the local zone.
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
        return _format_spec(self)

    def next_elapse(self, after: datetime) -> datetime | None:
        """The first elapse strictly after ``after``, or None if it never elapses again.

        ``after`` must be timezone-aware and not before 1970. The result is aware, in
        :attr:`zone`, with microsecond precision. Raises :class:`CalendarError` where systemd
        gives up (its 1000-step safety valve).
        """
        from phobos.oncalendar.elapse import next_usec  # the search lives apart from the parser

        found = next_usec(self, _to_usec(after))
        return None if found is None else _from_usec(found).astimezone(self.zone)

    def iter_elapses(self, after: datetime, count: int) -> Iterator[datetime]:
        """Yield up to ``count`` successive elapses after ``after`` (fewer if they stop)."""
        for _ in range(count):
            found = self.next_elapse(after)
            if found is None:
                return
            yield found
            after = found


def _to_usec(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} is naive; a timezone-aware datetime is required")
    usec = (moment - _EPOCH) // timedelta(microseconds=1)
    if usec < 0:
        raise ValueError(f"{moment!r} is before 1970, which systemd cannot represent")
    return usec


def _from_usec(usec: int) -> datetime:
    return _EPOCH + timedelta(microseconds=usec)


# --- parsing ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    """A specification under construction; None chains are systemd's NULL (any value)."""

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


def _const(*values: int) -> list[Component]:
    return [Component(start=value) for value in values]


_MIDNIGHT: dict[str, tuple[int, ...]] = {"hour": (0,), "minute": (0,), "second": (0,)}
_YEARLY = {**_MIDNIGHT, "month": (1,), "day": (1,)}
_HALF_YEARLY = {**_YEARLY, "month": (1, 7)}
# Field values each shorthand sets; "weekdays" is a bit set, everything else a value list.
_SHORTHANDS: dict[str, dict[str, tuple[int, ...]]] = {
    "minutely": {"second": (0,)}, "hourly": {"minute": (0,), "second": (0,)},
    "daily": _MIDNIGHT, "weekly": {**_MIDNIGHT, "weekdays": (1,)},
    "monthly": {**_MIDNIGHT, "day": (1,)}, "quarterly": {**_YEARLY, "month": (1, 4, 7, 10)},
    **dict.fromkeys(("yearly", "annually", "anually"), _YEARLY),  # sic: an old misspelling
    **dict.fromkeys(("semiannually", "semi-annually", "biannually", "bi-annually"), _HALF_YEARLY),
}


def parse_calendar(text: str, *, local_tz: tzinfo | None = None) -> CalendarSpec:
    """Parse ``text`` exactly as systemd 252's ``calendar_spec_from_string()`` does.

    ``local_tz`` is the zone an expression without a zone suffix runs in (default:
    :func:`system_timezone`). Raises :class:`CalendarError` iff systemd rejects ``text``;
    ``today``, ``now`` and other timestamps are not calendar events, for systemd neither.
    """
    zone = local_tz if local_tz is not None else system_timezone()
    names = zone_abbreviations(zone)
    if "\0" in text:
        raise _fail(text, "contains a NUL character")
    draft = _Draft()
    body = _strip_zone(text, names, draft)
    if not body:
        raise _fail(text, "no date or time given")
    shorthand = _SHORTHANDS.get(_ascii_lower(body))
    if _ascii_lower(body) in ("now", "today", "tomorrow", "yesterday"):
        raise CalendarError(f"invalid calendar specification {text!r}: a point in time, "
                            "not a recurring calendar event", "use e.g. 'daily' or '*-*-* 03:00'")
    if shorthand is None:
        _Parser(text, body, draft).parse()
    for name, values in (shorthand or {}).items():
        setattr(draft, name, values[0] if name == "weekdays" else _const(*values))
    return _finish(text, draft, zone, names)


def _strip_zone(text: str, names: tuple[str, str], draft: _Draft) -> str:
    """Take a trailing `` UTC``, local zone abbreviation or zone name off ``text``."""
    lowered = _ascii_lower(text)
    if lowered.endswith(" utc"):
        draft.utc = True
        return text[:-4]
    for dst, name in enumerate(names):
        cut = len(text) - len(name)
        if name and cut > 0 and lowered.endswith(_ascii_lower(name)) and text[cut - 1] == " ":
            draft.dst = dst
            return text[: cut - 1]
    head, space, tail = text.rpartition(" ")
    if space and _load_zone(tail) is not None:
        draft.timezone = tail
        return head
    return text


class _Parser:
    """Recursive descent over the expression body, one method per systemd parse function."""

    def __init__(self, original: str, body: str, draft: _Draft) -> None:
        self.original, self.text, self.pos, self.draft = original, body, 0, draft

    def peek(self, ahead: int = 0) -> str:
        """The character at the cursor; "" at the end, like C's NUL."""
        index = self.pos + ahead
        return self.text[index] if index < len(self.text) else ""

    def fail(self, reason: str) -> CalendarError:
        where = f"at column {self.pos + 1}" if self.peek() else "at the end"
        return _fail(self.original, f"{reason} {where}")

    def skip_spaces(self) -> None:
        while self.peek() == " ":
            self.pos += 1

    def digits(self) -> str:
        begin = self.pos
        while self.peek() in _DIGITS:
            self.pos += 1
        return self.text[begin:self.pos]

    def parse(self) -> None:
        self.weekdays()
        if not self.date():
            self.time()
        if self.peek():
            raise self.fail("unexpected text")

    def weekday(self) -> int | None:
        rest = _ascii_lower(self.text[self.pos:self.pos + 9])
        for name, nr in _DAY_NAMES:
            if rest.startswith(_ascii_lower(name)):
                self.pos += len(name)
                if self.peek() not in ("", "-", ".", ",", " "):
                    raise self.fail("weekday name not followed by ',', '..' or a space")
                return nr
        return None

    def weekdays(self) -> None:
        """An optional weekday list such as ``Mon..Fri,Sun`` (``-`` is an old range form)."""
        range_start, first = -1, True
        while (nr := self.weekday()) is not None:
            self.draft.weekdays |= 1 << nr
            if range_start > nr:
                raise self.fail("weekday range runs backwards")
            for between in range(range_start + 1 if range_start >= 0 else nr, nr):
                self.draft.weekdays |= 1 << between
            if self.peek() in ("", " "):
                self.skip_spaces()
                return
            if self.peek() == ",":
                range_start = -1
                self.pos += 1
            elif range_start >= 0 or (self.peek() == "." and self.peek(1) != "."):
                raise self.fail("bad weekday range")
            else:
                range_start = nr
                self.pos += 2 if self.peek() == "." else 1
            if self.peek() in ("", " "):  # a trailing comma is fine, an open range is not
                self.skip_spaces()
                if range_start >= 0:
                    raise self.fail("weekday range without an end")
                return
            first = False
        if not first:
            raise self.fail("expected a weekday name")

    def date(self) -> bool:
        """``[Y-]M-D`` (``~``: days from the month's end) or ``@SECONDS``; True if that
        fixed the time of day too."""
        if not self.peek():
            return False
        if self.peek() == "@":
            self.timestamp()
            return True
        start = self.pos
        first = self.chain(usec=False)
        if self.peek() in ("", ":"):  # it was an hour, not a date
            self.pos = start
            return False
        self.date_separator()
        second = self.chain(usec=False)
        if self.peek() in ("", " "):
            self.skip_spaces()
            self.draft.month, self.draft.day = first, second
            return False
        if self.draft.end_of_month:
            raise self.fail("'~' must come between month and day")
        self.date_separator()
        third = self.chain(usec=False)
        if self.peek() not in ("", " "):
            raise self.fail("unexpected character after the day")
        self.skip_spaces()
        self.draft.year, self.draft.month, self.draft.day = first, second, third
        return False

    def date_separator(self) -> None:
        if self.peek() == "~":
            self.draft.end_of_month = True
        elif self.peek() != "-":
            raise self.fail("expected '-' or '~' in the date")
        self.pos += 1

    def timestamp(self) -> None:
        """``@SECONDS``, read with strtoul()'s leniency (leading spaces, a sign) like systemd."""
        self.pos += 1
        while self.peek() in _C_SPACE:
            self.pos += 1
        negative = self.peek() == "-"
        if self.peek() in ("+", "-"):
            self.pos += 1
        digits = self.digits()
        if not digits or int(digits) > _ULONG_MAX:
            raise self.fail("expected seconds since the epoch after '@'")
        value = (-int(digits)) % 2**64 if negative else int(digits)
        from phobos.oncalendar.elapse import _tm_from_naive

        tm = _tm_from_naive(value - 2**64 if value >= 2**63 else value, 0)  # time_t is signed
        draft = self.draft
        draft.year, draft.month, draft.day = _const(tm.year), _const(tm.mon + 1), _const(tm.mday)
        draft.hour, draft.minute = _const(tm.hour), _const(tm.min)
        draft.second, draft.utc = _const(tm.sec * USEC_PER_SEC), True

    def time(self) -> None:
        """``H:M[:S]``; no time at all means midnight, no seconds mean 0."""
        draft = self.draft
        draft.hour = draft.minute = draft.second = _const(0)
        if not self.peek():
            return
        draft.hour = self.chain(usec=False)
        self.expect_colon("hour")
        draft.minute = self.chain(usec=False)
        if self.peek():
            self.expect_colon("minute")
            draft.second = self.chain(usec=True)
            if self.peek():
                raise self.fail("unexpected text after the seconds")

    def expect_colon(self, after: str) -> None:
        if self.peek() != ":":
            raise self.fail(f"expected ':' after the {after}")
        self.pos += 1

    def chain(self, usec: bool) -> list[Component] | None:
        """``*`` or a comma list of components; None means any value."""
        if self.peek() == "*":
            self.pos += 1
            return [Component(start=0, repeat=USEC_PER_SEC)] if usec else None
        components: list[Component] = []
        while True:
            if len(components) > _MAX_NESTING:
                raise self.fail(f"more than {_MAX_NESTING + 1} values in a list")
            components.append(self.component(usec))
            if self.peek() != ",":
                return components
            self.pos += 1

    def component(self, usec: bool) -> Component:
        start, stop, repeat = self.decimal(usec), -1, 0
        if self.peek() == "." and self.peek(1) == ".":
            self.pos += 2
            stop = self.decimal(usec)
            repeat = USEC_PER_SEC if usec else 1
        if self.peek() == "/":
            self.pos += 1
            repeat = self.decimal(usec)
            if repeat == 0:
                raise self.fail("repetition of 0")
        elif start > _INT_MAX - repeat:
            raise self.fail("value out of range")
        elif usec and stop >= 0 and start + repeat > stop:
            # A seconds range shorter than its default one-second step could never repeat.
            raise self.fail("seconds range shorter than one second")
        if self.peek() not in ("", " ", ",", "-", "~", ":"):
            raise self.fail(f"unexpected character {self.peek()!r}")
        return Component(start=start, stop=stop, repeat=repeat)

    def decimal(self, usec: bool) -> int:
        """A number; with ``usec`` seconds with up to 6 decimals, returned in µs."""
        digits = self.digits()
        if not digits:
            raise self.fail("expected a number")
        value = int(digits)
        if usec:
            value *= USEC_PER_SEC
            if self.peek() == "." and self.peek(1) != ".":  # "." is a decimal point, ".." a range
                self.pos += 1
                decimals = self.digits()
                if not decimals:
                    raise self.fail("expected digits after the decimal point")
                # Six digits count, the seventh rounds, the rest are ignored.
                value += int(decimals[:6].ljust(6, "0")) + (decimals[6:7] >= "5")
        if value > _INT_MAX:
            raise self.fail(f"number {digits} out of range")
        return value


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


# --- normalization, validation, formatting ------------------------------------------------


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
        shown = f"{what} {_format_component(comp, 1, scale)}"
        if not low <= comp.start <= high or (comp.stop >= 0 and not low <= comp.stop <= high):
            raise _fail(text, f"{shown} is outside {low // scale}..{high // scale}")
        if comp.repeat > high - low:
            raise _fail(text, f"{shown}: repetition too large")
        if comp.stop >= 0 and comp.start + comp.repeat > comp.stop:
            raise _fail(text, f"{shown}: empty range")
        if comp.stop < 0 and (comp.start - comp.repeat < low if eom
                              else comp.start + comp.repeat > high):
            raise _fail(text, f"{shown}: the repetition never fits in the range")


def _finish(text: str, draft: _Draft, local: tzinfo, names: tuple[str, str]) -> CalendarSpec:
    """systemd's calendar_spec_normalize() and calendar_spec_valid()."""
    utc = draft.utc or draft.timezone == "UTC"
    timezone = None if draft.timezone == "UTC" else draft.timezone
    years = None if draft.year is None else [
        Component(start=_fix_year(c.start), stop=_fix_year(c.stop), repeat=c.repeat)
        for c in draft.year]
    day = _normalize_chain(draft.day)
    spec = CalendarSpec(
        weekdays=draft.weekdays if 0 < draft.weekdays < _ALL_WEEKDAYS else -1,
        year=_normalize_chain(years), month=_normalize_chain(draft.month), day=day,
        hour=_normalize_chain(draft.hour), minute=_normalize_chain(draft.minute),
        second=_normalize_chain(draft.second), end_of_month=draft.end_of_month and bool(day),
        utc=utc, timezone=timezone, dst=draft.dst, zone_names=names,
        zone=UTC if utc else (_load_zone(timezone) or UTC) if timezone else local)
    for what, chain, low, high in (("year", spec.year, MIN_YEAR, MAX_YEAR),
                                   ("month", spec.month, 1, 12), ("day", spec.day, 1, 31),
                                   ("hour", spec.hour, 0, 23), ("minute", spec.minute, 0, 59),
                                   ("second", spec.second, 0, 60 * USEC_PER_SEC - 1)):
        _check_chain(text, what, chain, low, high, spec.end_of_month and what == "day")
    return spec


def _format_number(value: int, width: int, scale: int) -> str:
    whole, micro = divmod(value, scale)
    return f"{whole:0{width}d}" + (f".{micro:06d}" if micro else "")


def _format_component(comp: Component, width: int, scale: int) -> str:
    out = _format_number(comp.start, width, scale)
    if comp.stop > 0:
        out += ".." + _format_number(comp.stop, width, scale)
    if comp.repeat > 0 and not (comp.stop > 0 and comp.repeat == scale):
        out += "/" + _format_number(comp.repeat, 1, scale)
    return out


def _format_chain(chain: Chain, width: int, usec: bool = False) -> str:
    if not chain or (usec and Component(start=0, repeat=USEC_PER_SEC) in chain):
        return "*"  # no restriction, or one element that covers every second
    return ",".join(_format_component(c, width, USEC_PER_SEC if usec else 1) for c in chain)


def _format_weekdays(bits: int) -> str:
    parts, day = [], 0
    while day < 7:
        end = day
        while bits & (1 << day) and end + 1 < 7 and bits & (1 << (end + 1)):
            end += 1
        if bits & (1 << day):  # runs of three or more days become ranges
            sep = ".." if end > day + 1 else ","
            parts.append(_DAY_ABBR[day] + ("" if end == day else sep + _DAY_ABBR[end]))
        day = end + 1
    return ",".join(parts)


def _format_spec(spec: CalendarSpec) -> str:
    out = f"{_format_weekdays(spec.weekdays)} " if spec.weekdays > 0 else ""
    out += (f"{_format_chain(spec.year, 4)}-{_format_chain(spec.month, 2)}"
            f"{'~' if spec.end_of_month else '-'}{_format_chain(spec.day, 2)} "
            f"{_format_chain(spec.hour, 2)}:{_format_chain(spec.minute, 2)}:"
            f"{_format_chain(spec.second, 2, usec=True)}")
    if spec.utc:
        return out + " UTC"
    if spec.timezone:
        return f"{out} {spec.timezone}"
    if spec.dst in (0, 1) and spec.zone_names[spec.dst]:
        return f"{out} {spec.zone_names[spec.dst]}"
    return out


# --- systemd-analyze calendar -------------------------------------------------------------


def format_timestamp(moment: datetime, zone: tzinfo) -> str:
    """Like systemd's format_timestamp(): ``Mon 2024-01-01 08:00:00 CET``."""
    local = moment.astimezone(zone)
    name = local.tzname()
    return f"{_DAY_ABBR[local.weekday()]} {local:%Y-%m-%d %H:%M:%S}" + (f" {name}" if name else "")


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
    usec = _to_usec(moment) - _to_usec(now)
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
    elapses = list(spec.iter_elapses(base, iterations))
    if iterations > 0 and not elapses:
        rows.append(("Next elapse:", "never"))
    for index, found in enumerate(elapses):
        rows.append(("Next elapse:" if index == 0 else f"Iter. #{index + 1}:",
                     format_timestamp(found, local_tz)))
        if not _zone_is_utc(local_tz):
            rows.append(("(in UTC):", format_timestamp(found, UTC)))
        rows.append(("From now:", format_timestamp_relative(found, now)))
    width = max(len(label) for label, _ in rows)
    # systemd's table printer drops trailing whitespace (an original form like "Mon ").
    return "".join(f"{label:>{width}} {value}".rstrip(" \t\n\r") + "\n" for label, value in rows)
