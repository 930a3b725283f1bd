"""phobos.oncalendar: normalization, next elapses and errors, as tables.

Every expected value here was checked against systemd-analyze 252 (Debian 12);
tests/integration/test_calendar_oracle.py re-checks a large corpus against it live.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from phobos.errors import ExitCode, PhobosError
from phobos.oncalendar.analyze import format_like_systemd_analyze, format_timestamp_relative
from phobos.oncalendar.elapse import iter_elapses, next_elapse
from phobos.oncalendar.errors import CalendarError
from phobos.oncalendar.parse import parse_calendar
from phobos.oncalendar.spec import CalendarSpec

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def spec(text: str, zone: str = "UTC") -> CalendarSpec:
    return parse_calendar(text, local_tz=ZoneInfo(zone))


NORMALIZED = [
    ("daily", "*-*-* 00:00:00"),
    ("*-*-* 03:00", "*-*-* 03:00:00"),
    ("Sun *-*-* 07:00", "Sun *-*-* 07:00:00"),
    ("*-*-* 03:00 UTC", "*-*-* 03:00:00 UTC"),
    ("daily utc", "*-*-* 00:00:00 UTC"),
    ("*-*-* 03:00 Europe/Berlin", "*-*-* 03:00:00 Europe/Berlin"),
    ("minutely", "*-*-* *:*:00"),
    ("hourly", "*-*-* *:00:00"),
    ("weekly", "Mon *-*-* 00:00:00"),
    ("monthly", "*-*-01 00:00:00"),
    ("yearly", "*-01-01 00:00:00"),
    ("annually", "*-01-01 00:00:00"),
    ("quarterly", "*-01,04,07,10-01 00:00:00"),
    ("semiannually", "*-01,07-01 00:00:00"),
    ("DAILY", "*-*-* 00:00:00"),
    ("Mon..Fri 08..18/2:00", "Mon..Fri *-*-* 08..18/2:00:00"),
    ("Sat,Sun", "Sat,Sun *-*-* 00:00:00"),
    ("Monday..Wednesday", "Mon..Wed *-*-* 00:00:00"),
    ("mon-wed", "Mon..Wed *-*-* 00:00:00"),
    ("Mon,Tue,Wed,Fri", "Mon..Wed,Fri *-*-* 00:00:00"),
    ("Fri,Mon", "Mon,Fri *-*-* 00:00:00"),
    ("Mon..Sun", "*-*-* 00:00:00"),
    ("Mon, 12:00", "Mon *-*-* 12:00:00"),
    ("*-02~01", "*-02~01 00:00:00"),
    ("*-*~1..7", "*-*~01..07 00:00:00"),
    ("*-*-1/2", "*-*-01/2 00:00:00"),
    ("12-25", "*-12-25 00:00:00"),
    ("2024-*-* 12:00", "2024-*-* 12:00:00"),
    ("2024-01-01 ", "2024-01-01 00:00:00"),
    ("24-02-29", "2024-02-29 00:00:00"),  # two-digit years: 00..69 -> 20xx
    ("99-12-31", "1999-12-31 00:00:00"),  # 70..99 -> 19xx
    ("*:30", "*-*-* *:30:00"),
    ("12:00:00.5", "*-*-* 12:00:00.500000"),
    ("*:*:0/0.5", "*-*-* *:*:00/0.500000"),
    ("*-*-* *:*:*", "*-*-* *:*:*"),
    ("*:*:0/1", "*-*-* *:*:*"),
    ("3,1,2,1:00", "*-*-* 01,02,03:00:00"),  # sorted, duplicates dropped
    ("1..10/3:00", "*-*-* 01..10/3:00:00"),
    ("1..9/3:00", "*-*-* 01..07/3:00:00"),  # range trimmed to whole steps
    ("5..5:00", "*-*-* 05:00:00"),
    ("1..3/5:00", "*-*-* 01:00:00"),  # a step that can never fire is dropped
    ("@1700000000", "2023-11-14 22:13:20 UTC"),
]


@pytest.mark.parametrize(("text", "normalized"), NORMALIZED)
def test_normalized_form(text: str, normalized: str) -> None:
    assert spec(text).normalized == normalized


def test_local_zone_abbreviation_pins_dst() -> None:
    assert spec("*-*-* 12:00 CEST", "Europe/Berlin").normalized == "*-*-* 12:00:00 CEST"
    assert spec("daily cet", "Europe/Berlin").dst == 0
    assert spec("daily EDT", "America/New_York").dst == 1
    # Under another local zone "CET" is just a zone name (there is a zoneinfo file CET).
    assert spec("daily CET").timezone == "CET"


# (expression, local zone, after, the first elapses in order; "never" when they stop there)
ELAPSES = [
    # month ends and leap days
    ("*-*-31", "UTC", "2024-01-31T00:00:00+00:00",
     ["2024-03-31T00:00:00+00:00", "2024-05-31T00:00:00+00:00", "2024-07-31T00:00:00+00:00",
      "2024-08-31T00:00:00+00:00"]),
    ("*-02-29", "UTC", "2023-01-01T00:00:00+00:00",
     ["2024-02-29T00:00:00+00:00", "2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]),
    ("2023-02-29", "UTC", "2023-01-01T00:00:00+00:00", ["never"]),
    ("2199-12-31 23:59:59", "UTC", "2199-12-30T00:00:00+00:00",
     ["2199-12-31T23:59:59+00:00", "never"]),
    # ~: days counted back from the end of the month
    ("*-02~01", "UTC", "2024-01-01T00:00:00+00:00",
     ["2024-02-29T00:00:00+00:00", "2025-02-28T00:00:00+00:00", "2026-02-28T00:00:00+00:00"]),
    ("*-*~03", "UTC", "2024-01-01T00:00:00+00:00",
     ["2024-01-29T00:00:00+00:00", "2024-02-27T00:00:00+00:00", "2024-03-29T00:00:00+00:00"]),
    ("*-*~1..3", "UTC", "2024-02-26T00:00:00+00:00",
     ["2024-02-27T00:00:00+00:00", "2024-02-28T00:00:00+00:00", "2024-02-29T00:00:00+00:00",
      "2024-03-29T00:00:00+00:00"]),
    ("Mon *-05~1..7", "UTC", "2024-01-01T00:00:00+00:00",  # last Monday of May
     ["2024-05-27T00:00:00+00:00", "2025-05-26T00:00:00+00:00"]),
    # repetitions
    ("*-*-1/10", "UTC", "2024-02-15T00:00:00+00:00",
     ["2024-02-21T00:00:00+00:00", "2024-03-01T00:00:00+00:00", "2024-03-11T00:00:00+00:00",
      "2024-03-21T00:00:00+00:00"]),
    ("08..18/4:00", "UTC", "2024-01-01T09:00:00+00:00",
     ["2024-01-01T12:00:00+00:00", "2024-01-01T16:00:00+00:00", "2024-01-02T08:00:00+00:00",
      "2024-01-02T12:00:00+00:00"]),
    ("quarterly", "UTC", "2024-01-01T00:00:00+00:00",
     ["2024-04-01T00:00:00+00:00", "2024-07-01T00:00:00+00:00", "2024-10-01T00:00:00+00:00"]),
    # weekdays
    ("Mon..Fri 08:00", "UTC", "2024-01-05T09:00:00+00:00",
     ["2024-01-08T08:00:00+00:00", "2024-01-09T08:00:00+00:00", "2024-01-10T08:00:00+00:00"]),
    ("Sat,Sun *-*-* 10:00", "UTC", "2024-01-01T00:00:00+00:00",
     ["2024-01-06T10:00:00+00:00", "2024-01-07T10:00:00+00:00", "2024-01-13T10:00:00+00:00"]),
    ("weekly", "UTC", "2024-01-01T00:00:00+00:00",
     ["2024-01-08T00:00:00+00:00", "2024-01-15T00:00:00+00:00"]),
    # seconds, fractional seconds
    ("*:*:0/20", "UTC", "2024-01-01T00:00:41+00:00",
     ["2024-01-01T00:01:00+00:00", "2024-01-01T00:01:20+00:00", "2024-01-01T00:01:40+00:00"]),
    ("*:*:1.5", "UTC", "2024-01-01T00:00:00+00:00",
     ["2024-01-01T00:00:01.500000+00:00", "2024-01-01T00:01:01.500000+00:00"]),
    ("*:*:0/0.25", "UTC", "2024-01-01T00:00:00.100000+00:00",
     ["2024-01-01T00:00:00.250000+00:00", "2024-01-01T00:00:00.500000+00:00",
      "2024-01-01T00:00:00.750000+00:00"]),
    # Berlin, spring forward (2024-03-31 02:00 CET -> 03:00 CEST): 02:xx does not exist that
    # day, so a daily 02:30 skips it rather than moving to 03:30.
    ("*-*-* 02:30", "Europe/Berlin", "2024-03-30T12:00:00+00:00",
     ["2024-04-01T02:30:00+02:00", "2024-04-02T02:30:00+02:00"]),
    ("*:0/30", "Europe/Berlin", "2024-03-31T00:00:00+00:00",
     ["2024-03-31T01:30:00+01:00", "2024-03-31T03:00:00+02:00", "2024-03-31T03:30:00+02:00",
      "2024-03-31T04:00:00+02:00"]),
    # Berlin, fall back (2024-10-27 03:00 CEST -> 02:00 CET): the repeated hour runs once,
    # in summer time.
    ("*-*-* 02:30", "Europe/Berlin", "2024-10-26T12:00:00+00:00",
     ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"]),
    ("*:0/30", "Europe/Berlin", "2024-10-27T00:00:00+00:00",
     ["2024-10-27T02:30:00+02:00", "2024-10-27T03:00:00+01:00", "2024-10-27T03:30:00+01:00",
      "2024-10-27T04:00:00+01:00"]),
    # New York, spring forward (2024-03-10 02:00 EST -> 03:00 EDT) and fall back
    # (2024-11-03 02:00 EDT -> 01:00 EST).
    ("*-*-* 02:30", "America/New_York", "2024-03-09T12:00:00+00:00",
     ["2024-03-11T02:30:00-04:00", "2024-03-12T02:30:00-04:00"]),
    ("*-*-* 01:30", "America/New_York", "2024-11-02T12:00:00+00:00",
     ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"]),
    ("*:0/30", "America/New_York", "2024-11-03T05:00:00+00:00",
     ["2024-11-03T01:30:00-04:00", "2024-11-03T02:00:00-05:00", "2024-11-03T02:30:00-05:00",
      "2024-11-03T03:00:00-05:00"]),
    # a named zone wins over the local one; results come back in the spec's zone
    ("*-*-* 02:30 Europe/Berlin", "UTC", "2024-03-30T12:00:00+00:00",
     ["2024-04-01T02:30:00+02:00", "2024-04-02T02:30:00+02:00"]),
    ("*-*-* 03:00 UTC", "Europe/Berlin", "2024-06-01T00:00:00+00:00",
     ["2024-06-01T03:00:00+00:00"]),
    # a pinned summer time never matches in winter, and after the fall-back fold it fires
    # once more in winter time before it stops (systemd 252.39 does exactly this)
    ("*-*-* 12:00 CEST", "Europe/Berlin", "2024-01-10T10:00:00+00:00", ["never"]),
    ("*-*-* 02:30 CEST", "Europe/Berlin", "2024-10-26T23:00:00+00:00",
     ["2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00", "never"]),
]


@pytest.mark.parametrize(("text", "zone", "after", "expected"), ELAPSES,
                         ids=[f"{row[0]}@{row[1]}" for row in ELAPSES])
def test_elapses(text: str, zone: str, after: str, expected: list[str]) -> None:
    found = iter_elapses(spec(text, zone), datetime.fromisoformat(after), len(expected))
    shown = [moment.isoformat() for moment in found]
    assert shown + ["never"] * (len(expected) - len(shown)) == expected


def test_month_step_past_december_hits_systemds_safety_valve_in_dst_zones() -> None:
    # 1/5 means months 1, 6, 11, 16...: month 16 overflows into April (summer time), and
    # systemd's restart at January with the April isdst walks back into December for ever.
    every_five = "*-1/5-1 12:00"
    assert next_elapse(spec(every_five), datetime(2024, 11, 2, tzinfo=UTC)) == datetime(
        2025, 1, 1, 12, tzinfo=UTC)
    with pytest.raises(CalendarError, match="infinite loop"):
        next_elapse(spec(every_five, "Europe/Berlin"), datetime(2024, 11, 2, tzinfo=UTC))


def test_next_elapse_is_strictly_after_and_aware() -> None:
    daily = spec("*-*-* 03:00", "Europe/Berlin")
    at_three = datetime(2024, 5, 1, 3, 0, tzinfo=BERLIN)
    nxt = next_elapse(daily, at_three)
    assert nxt == datetime(2024, 5, 2, 3, 0, tzinfo=BERLIN)
    assert nxt is not None and nxt.tzinfo is not None
    assert next_elapse(daily, at_three - timedelta(microseconds=1)) == at_three


def test_after_in_any_zone_means_the_same_instant() -> None:
    daily = spec("*-*-* 03:00 UTC")
    instant = datetime(2024, 5, 1, 2, 0, tzinfo=UTC)
    assert next_elapse(daily, instant) == next_elapse(daily, instant.astimezone(NEW_YORK))


def test_naive_or_pre_epoch_after_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        next_elapse(spec("daily"), datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="1970"):
        next_elapse(spec("daily"), datetime(1969, 1, 1, tzinfo=UTC))


def test_iter_elapses_stops_when_the_calendar_does() -> None:
    once = spec("2024-06-01 12:00")
    assert list(iter_elapses(once, datetime(2024, 1, 1, tzinfo=UTC), 5)) == [
        datetime(2024, 6, 1, 12, tzinfo=UTC)]
    assert list(iter_elapses(once, datetime(2024, 1, 1, tzinfo=UTC), 0)) == []


def test_spec_is_a_frozen_value() -> None:
    first = spec("Mon..Fri 08:00")
    assert first == spec("mon-fri 8:0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.weekdays = 1  # type: ignore[misc]


BAD = [
    ("", "no date or time given"),
    ("today", "a point in time, not a recurring calendar event"),
    ("now", "a point in time"),
    ("Fri..Mon", "weekday range runs backwards"),
    ("Mon..", "weekday range without an end"),
    ("Mondays", "weekday name not followed by"),
    ("Mon.Tue", "bad weekday range at column 4"),
    ("*-13-01", "month 13 is outside 1..12"),
    ("*-*-32", "day 32 is outside 1..31"),
    ("*-*-0", "day 0 is outside 1..31"),
    ("24:00", "hour 24 is outside 0..23"),
    ("12:60", "minute 60 is outside 0..59"),
    ("12:00:60", "second 60 is outside 0..59"),
    ("*:*:59.9999995", "second 60 is outside"),  # the seventh decimal rounds up
    ("1969-12-31", "year 1969 is outside 1970..2199"),
    ("2200-01-01", "year 2200 is outside 1970..2199"),
    ("*-02~29", "day 29 is outside 1..28"),
    ("*-*~14,09,3,27", "day 27 is outside 1..19"),  # systemd narrows per list element
    ("2024~02-01", "'~' must come between month and day"),
    ("*/2:00", "expected '-' or '~' in the date"),
    ("12", "expected ':' after the hour"),
    ("12:00:00:00", "unexpected text after the seconds"),
    ("*-*-1/0", "repetition of 0"),
    ("*-*-1/31", "repetition too large"),
    ("5..1:00", "empty range"),
    ("*:*:1..1.5", "seconds range shorter than one second"),
    ("12:00:30.", "expected digits after the decimal point"),
    ("@-1", "year 1969"),
    ("*-*-* 03:00 europe/berlin", "expected ':' after the minute"),  # zone names are exact
    (" daily", "expected a number at column 1"),
    (",".join(["0"] * 242) + ":00", "more than 241 values in a list"),
    ("2147483648:00", "out of range"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_expressions_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(CalendarError, match="invalid calendar specification") as caught:
        spec(text)
    assert message in str(caught.value)
    assert caught.value.hint
    assert isinstance(caught.value, PhobosError)
    assert caught.value.exit_code == ExitCode.USAGE


def test_241_list_elements_are_still_fine() -> None:
    assert spec(",".join(["0"] * 241) + ":00").normalized == "*-*-* 00:00:00"


RELATIVE = [
    (timedelta(0), "now"),
    (timedelta(microseconds=5), "5us left"),
    (timedelta(milliseconds=250), "250ms left"),
    (timedelta(seconds=-42), "42s ago"),
    (timedelta(minutes=2, seconds=5), "2min 5s left"),
    (timedelta(minutes=17, seconds=59), "17min left"),
    (timedelta(hours=2, minutes=3), "2h 3min left"),
    (timedelta(hours=7), "7h left"),
    (timedelta(hours=24, minutes=30), "24h left"),
    (timedelta(hours=30), "1 day 6h left"),
    (timedelta(days=-3), "3 days ago"),
    (timedelta(days=8), "1 week 1 day left"),
    (timedelta(days=40), "1 month 9 days left"),
    (timedelta(days=800), "2 years 2 months left"),
    (timedelta(days=-365), "11 months 30 days ago"),
]


@pytest.mark.parametrize(("delta", "text"), RELATIVE)
def test_relative_time_like_systemd(delta: timedelta, text: str) -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    assert format_timestamp_relative(now + delta, now) == text


def test_systemd_analyze_layout() -> None:
    out = format_like_systemd_analyze("Mon..Fri 8:00", 2, datetime(2024, 3, 29, tzinfo=UTC),
                                      BERLIN, now=datetime(2024, 3, 29, tzinfo=UTC))
    assert out == (
        "  Original form: Mon..Fri 8:00\n"
        "Normalized form: Mon..Fri *-*-* 08:00:00\n"
        "    Next elapse: Fri 2024-03-29 08:00:00 CET\n"
        "       (in UTC): Fri 2024-03-29 07:00:00 UTC\n"
        "       From now: 7h left\n"
        "       Iter. #2: Mon 2024-04-01 08:00:00 CEST\n"
        "       (in UTC): Mon 2024-04-01 06:00:00 UTC\n"
        "       From now: 3 days left\n")


def test_systemd_analyze_layout_never_and_utc() -> None:
    out = format_like_systemd_analyze("2020-01-01", 5, datetime(2024, 1, 1, tzinfo=UTC), UTC)
    assert out == ("  Original form: 2020-01-01\n"
                   "Normalized form: 2020-01-01 00:00:00\n"
                   "    Next elapse: never\n")
    with pytest.raises(CalendarError):
        format_like_systemd_analyze("today", 1, datetime(2024, 1, 1, tzinfo=UTC), UTC)
