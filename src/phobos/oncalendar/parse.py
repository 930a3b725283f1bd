"""Parsing ``OnCalendar=`` expressions exactly as systemd 252's
``calendar_spec_from_string()`` does: shorthands, the zone suffix, and the recursive descent
over weekdays, date and time (one method per systemd parse function)."""

from __future__ import annotations

import string
from datetime import tzinfo

from phobos.oncalendar.civil_time import tm_from_naive
from phobos.oncalendar.errors import CalendarError
from phobos.oncalendar.normalize import Draft, normalize_and_validate
from phobos.oncalendar.spec import USEC_PER_SEC, CalendarSpec, Component
from phobos.oncalendar.zones import load_zone, system_timezone, zone_abbreviations

_MAX_NESTING = 240  # systemd refuses lists of more than 241 elements
_INT_MAX = 2**31 - 1
_ULONG_MAX = 2**64 - 1
_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_DIGITS = frozenset(string.digits)
_C_SPACE = frozenset(" \t\n\v\f\r")  # isspace() in the C locale: strtoul() skips these
_DAY_FULL = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# systemd tries full names before abbreviations and takes the first prefix that matches.
_DAY_NAMES = tuple((name, nr) for nr, full in enumerate(_DAY_FULL) for name in (full, full[:3]))


def _ascii_lower(text: str) -> str:
    return text.translate(_LOWER)


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
        raise CalendarError.invalid(text, "contains a NUL character")
    draft = Draft()
    body = _strip_zone(text, names, draft)
    if not body:
        raise CalendarError.invalid(text, "no date or time given")
    shorthand = _SHORTHANDS.get(_ascii_lower(body))
    if _ascii_lower(body) in ("now", "today", "tomorrow", "yesterday"):
        raise CalendarError(f"invalid calendar specification {text!r}: a point in time, "
                            "not a recurring calendar event", "use e.g. 'daily' or '*-*-* 03:00'")
    if shorthand is None:
        _Parser(text, body, draft).parse()
    for name, values in (shorthand or {}).items():
        setattr(draft, name, values[0] if name == "weekdays" else _const(*values))
    return normalize_and_validate(text, draft, zone, names)


def _strip_zone(text: str, names: tuple[str, str], draft: Draft) -> str:
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
    if space and load_zone(tail) is not None:
        draft.timezone = tail
        return head
    return text


class _Parser:
    """Recursive descent over the expression body, one method per systemd parse function."""

    def __init__(self, original: str, body: str, draft: Draft) -> None:
        self.original, self.text, self.pos, self.draft = original, body, 0, draft

    def peek(self, ahead: int = 0) -> str:
        """The character at the cursor; "" at the end, like C's NUL."""
        index = self.pos + ahead
        return self.text[index] if index < len(self.text) else ""

    def fail(self, reason: str) -> CalendarError:
        where = f"at column {self.pos + 1}" if self.peek() else "at the end"
        return CalendarError.invalid(self.original, f"{reason} {where}")

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
        tm = tm_from_naive(value - 2**64 if value >= 2**63 else value, 0)  # time_t is signed
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

