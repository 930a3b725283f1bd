"""phobos.oncalendar against the real ``systemd-analyze calendar`` (the oracle).

Every corpus expression is run through systemd-analyze (batched: one invocation per local zone
and base time) and through :func:`format_like_systemd_analyze`; any difference in verdict,
normalized form or elapse is its own failing test with a line diff. "From now" lines depend on
the real clock in systemd, so they are compared against our output for the wall-clock instants
just before and just after the systemd run.

A missing systemd-analyze is a failure, not a skip (DESIGN.md §5).
"""

from __future__ import annotations

import difflib
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from phobos.oncalendar.analyze import format_like_systemd_analyze
from phobos.oncalendar.errors import CalendarError
from phobos.oncalendar.parse import parse_calendar

ITERATIONS = 5
SEED = 20240229
RANDOM_COUNT = 560

# Bases chosen next to the edges that matter: DST changes in Berlin and New York, month and
# year ends, a leap day, a non-leap century and the end of systemd's range (2199).
BASES = (
    datetime(2024, 1, 1, 0, 0, tzinfo=UTC),
    datetime(2024, 2, 28, 12, 34, 56, 500000, tzinfo=UTC),
    datetime(2024, 3, 30, 23, 30, tzinfo=UTC),
    datetime(2024, 10, 26, 23, 0, tzinfo=UTC),
    datetime(2024, 3, 10, 5, 0, tzinfo=UTC),
    datetime(2024, 11, 3, 4, 30, tzinfo=UTC),
    datetime(2023, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(2100, 2, 27, 0, 0, tzinfo=UTC),
    datetime(2199, 12, 30, 12, 0, tzinfo=UTC),
)
LOCAL_ZONES = ("UTC", "Europe/Berlin", "America/New_York")

HAND_PICKED = (
    # shorthands and words systemd does not take as calendar events
    "minutely", "hourly", "daily", "weekly", "monthly", "yearly", "annually", "anually",
    "quarterly", "semiannually", "semi-annually", "biannually", "bi-annually", "DAILY",
    "today", "now", "tomorrow", "yesterday", "", " ", "daily ", " daily", "daily UTC",
    "daily utc", "weekly Europe/Berlin",
    # house style examples
    "*-*-* 03:00", "Sun *-*-* 07:00", "*-*-* 06:00", "*-*-* 03:00 UTC",
    # weekdays
    "Mon..Fri", "Mon..Fri 08..18/2:00", "Sat,Sun 10:00", "Monday..Wednesday", "mon-wed",
    "Fri..Mon", "Mon,", "Mon ", "Mon..", "Mon-", "Mon.Tue", "Mo", "Mond", "Mondays",
    "Mon,Tue,Wed,Thu,Fri,Sat,Sun", "Mon..Sun", "sunday", "Wed..Wed", "Mon..Wed,Fri..Sun",
    "Mon..Wed..Fri", "Tue,Thu 12:00 UTC", "Mon,, 12:00", "Mon 2024-*-*", "Fri *-*-13",
    # dates, month ends, leap days
    "2024-02-29", "*-02-29", "2023-02-29", "*-02-30", "*-02-31", "*-04-31", "*-*-31",
    "*-*-29 12:00", "2024-01-01 ", "2100-02-29", "2096-02-29", "24-02-29", "99-12-31",
    "70-01-01", "69-01-01", "1969-12-31", "2199-12-31 23:59:59", "2200-01-01", "12-25",
    "*-12-25 18:00", "2024-*-* 00:00", "2024..2026-01-01", "2024/2-06-01", "*-1/3-1",
    "*-*-1/2", "*-*-2..30/7", "*-1/5-1 12:00", "*-*-0", "*-*-32", "*-0-1", "*-13-1", "*-*-*-*",
    # the ~ (days counted from the end of the month) syntax
    "*-02~01", "*-*~01", "*-*~03", "*-*~1..7", "*-*~7/2", "*-05~1..7 Mon", "*~01",
    "*-*~28", "*-*~29", "2024-02~1", "2024~02-01", "*-02~29", "*-02~28/3", "*-*~*",
    "*-*~14,09,3,27", "*-*~1,2", "*-*~1,2,3,4,5,6,7", "*-*~1,2,3,4,5,6,7,8,9", "*-*~3..1",
    # list length limit: 241 elements are fine, 242 are not
    ",".join(["0"] * 241) + ":00", ",".join(["0"] * 242) + ":00",
    # times and seconds
    "08..18/2:00", "*:0/15", "*:*:0/20", "12:00:00.5", "12:00:60", "24:00", "23:60",
    "*:*:59.9999995", "*:*:0/0.5", "*:*:1.5..3", "*:*:1..1.5", "0:0:0.0000001",
    "12:00:30.", "12:00:5.25,10.75", "12", "12:", ":00", "12:00:00:00", "*:*", "*:*:*",
    "1,2,3-4,5-6 1:2:3", "00:00:00/1", "*/2:00", "*:30", "00:00..59/5:00",
    # epoch timestamps, including strtoul()'s leniency
    "@0", "@1700000000", "@+5", "@ 5", "@-1", "@-0", "@", "@x", "@1700000000 UTC",
    "@7258118399", "@7258118400", "@5 ", "Mon @1700000000",
    # zones
    "*-*-* 03:00 Europe/Berlin", "*-*-* 03:00 America/New_York", "*-*-* 03:00 Etc/UTC",
    "*-*-* 03:00 europe/berlin", "daily  Europe/Berlin", "*-*-* 03:00 Nowhere/Town",
    "*-*-* 02:30 Europe/Berlin", "*-*-* 02:30 America/New_York", "*:30 America/New_York",
    "*-*-* 01:30 America/New_York", "*-*-* 02:30 Australia/Lord_Howe",
    "hourly Europe/Dublin", "*-*-* 12:00 CET", "*-*-* 12:00 CEST", "*-*-* 02:30 CEST",
    "*-*-* 02:30 CET", "daily EST", "daily EDT", "*-*-* 01:30 EDT", "*-*-* 01:30 EST",
    "*-*-* 00:00 Asia/Kolkata", "*-*-* 00:00 Pacific/Chatham", "*-*-* 00:00 Etc/GMT-14",
)

# Expressions that meet DST gaps and folds in the local zone; run from every DST base too.
DST_SENSITIVE = (
    "*-*-* 02:30", "*-*-* 02:00", "*-*-* 01:59:59", "*-*-* *:30", "*-*-* *:0/15",
    "*-*-* 01..03:00", "*-*-* 02:*:*", "Sun *-*-* 02:30", "hourly", "minutely",
    "*-*-* 02:30 CEST", "*-*-* 01:30 EDT",
)


@dataclass(frozen=True, slots=True)
class Case:
    """One expression evaluated in one local zone from one base time."""

    expr: str
    zone: str
    base: datetime

    @property
    def id(self) -> str:
        expr = self.expr if len(self.expr) < 60 else f"{self.expr[:40]}...({len(self.expr)})"
        return f"{self.zone}@{self.base:%Y%m%dT%H%M}:{expr!r}"


class _Generator:
    """Random but deterministic expressions, mostly valid, some off by one in every way."""

    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)

    def pick(self, *options: str) -> str:
        return self.rnd.choice(options)

    def number(self, low: int, high: int, width: int) -> str:
        value = self.rnd.randint(low, high)
        return f"{value:0{width}d}" if self.rnd.random() < 0.7 else str(value)

    def field(self, low: int, high: int, width: int, star: float = 0.3) -> str:
        roll = self.rnd.random()
        if roll < star:
            return "*"
        if roll < 0.55:
            return self.number(low, high, width)
        if roll < 0.7:
            return ",".join(self.number(low, high, width) for _ in range(self.rnd.randint(2, 4)))
        a, b = sorted(self.rnd.randint(low, high) for _ in range(2))
        if roll < 0.82:
            return f"{a:0{width}d}..{b:0{width}d}"
        step = self.rnd.randint(1, max(1, (high - low) // 2))
        return f"{a}/{step}" if roll < 0.92 else f"{a}..{b}/{step}"

    def weekdays(self) -> str:
        names = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
        full = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
        a, b = sorted(self.rnd.sample(range(7), 2))
        roll = self.rnd.random()
        if roll < 0.3:
            return self.rnd.choice(names + full)
        if roll < 0.6:
            return f"{names[a]}..{names[b]}"
        if roll < 0.75:
            return ",".join(self.rnd.sample(names, self.rnd.randint(2, 4)))
        if roll < 0.85:
            return f"{full[a]}-{full[b]}".lower()
        return f"{names[b]}..{names[a]}" if a != b else "Mon..Sun"

    def seconds(self) -> str:
        roll = self.rnd.random()
        if roll < 0.6:
            return self.field(0, 59, 2)
        if roll < 0.8:
            text = f"{self.rnd.randint(0, 59)}.{self.rnd.randint(0, 9999999):07d}"
            return text[:self.rnd.randint(4, len(text))]
        return f"{self.rnd.randint(0, 30)}/{self.pick('0.5', '0.25', '1.5', '7.5', '15')}"

    def date(self) -> str:
        roll = self.rnd.random()
        month = self.field(1, 12, 2)
        if roll < 0.15:
            return f"{month}~{self.field(1, 4, 2, star=0.1)}"
        if roll < 0.2:
            return f"{month}~{self.field(1, 28, 2, star=0)}"
        if roll < 0.35:
            return f"{month}-{self.field(1, 31, 2)}"
        year = self.field(2023, 2030, 4, star=0.5)
        if self.rnd.random() < 0.1:
            year = self.field(0, 99, 2)
        sep = "~" if self.rnd.random() < 0.1 else "-"
        return f"{year}-{month}{sep}{self.field(1, 31, 2)}"

    def time(self) -> str:
        hm = f"{self.field(0, 23, 2)}:{self.field(0, 59, 2)}"
        return hm if self.rnd.random() < 0.4 else f"{hm}:{self.seconds()}"

    def valid_ish(self) -> str:
        parts = []
        if self.rnd.random() < 0.3:
            parts.append(self.weekdays())
        if self.rnd.random() < 0.7:
            parts.append(self.date())
        if self.rnd.random() < 0.85 or not parts:
            parts.append(self.time())
        if self.rnd.random() < 0.2:
            parts.append(self.pick("UTC", "utc", "Europe/Berlin", "America/New_York",
                                   "Asia/Kolkata", "Australia/Lord_Howe", "Europe/London"))
        return " ".join(parts)

    def mutate(self, text: str) -> str:
        """Break an expression the way people do: out-of-range numbers, stray characters."""
        roll = self.rnd.random()
        pos = self.rnd.randint(0, len(text))
        if roll < 0.3:
            extra = self.pick("60", "24", "32", "13", "0", "99", "1970", "2200")
        elif roll < 0.6:
            extra = self.pick(":", "-", "~", ".", "..", "/", ",", " ", "x", "*")
        else:
            return text[:pos] + text[pos + 1:]
        return text[:pos] + extra + text[pos:]

    def expressions(self, count: int) -> Iterator[str]:
        for _ in range(count):
            text = self.valid_ish()
            yield self.mutate(text) if self.rnd.random() < 0.25 else text


def _corpus() -> list[Case]:
    gen = _Generator(SEED)
    cases = [Case(expr, zone, base)
             for i, expr in enumerate(HAND_PICKED + DST_SENSITIVE)
             for zone, base in ((LOCAL_ZONES[i % 3], BASES[i % len(BASES)]),
                                ("UTC", BASES[0]))]
    for i, expr in enumerate(gen.expressions(RANDOM_COUNT)):
        cases.append(Case(expr, LOCAL_ZONES[i % 5 % 3], BASES[i % len(BASES)]))
    for expr in DST_SENSITIVE:
        cases += [Case(expr, zone, base) for zone in LOCAL_ZONES[1:] for base in BASES[2:6]]
    return list(dict.fromkeys(cases))  # drop repeats, keep the order


CORPUS = _corpus()


@dataclass(frozen=True, slots=True)
class Verdict:
    """What systemd-analyze did with one expression."""

    block: str | None  # its stdout table, None when it printed an error instead
    error: str  # "parse", "elapse" or "" (no error)


def _split_blocks(stdout: str, count: int) -> list[str | None]:
    """Cut systemd-analyze's stdout into one table per expression (None where it failed).

    Tables are separated by one newline and contain no empty line; a failed expression
    prints no table, which leaves two separators in a row.
    """
    blocks: list[str | None] = []
    pos = 0
    for index in range(count):
        if pos < len(stdout) and stdout[pos] != "\n":
            end = stdout.find("\n\n", pos)
            end = len(stdout) if end < 0 else end + 1
            blocks.append(stdout[pos:end])
            pos = end
        else:
            blocks.append(None)
        if index < count - 1:
            pos += 1
    assert pos >= len(stdout) - 1, "unparsed systemd-analyze output left over"
    return blocks


def _run_systemd(exprs: list[str], zone: str, base: datetime) -> tuple[list[Verdict], datetime,
                                                                        datetime]:
    usec = (base - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()
    argv = ["systemd-analyze", "calendar", f"--iterations={ITERATIONS}",
            f"--base-time=@{usec:.6f}", "--", *exprs]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": zone, "LC_ALL": "C",
           "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}
    before = datetime.now(UTC)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                            timeout=120)
    after = datetime.now(UTC)
    verdicts = []
    for expr, block in zip(exprs, _split_blocks(result.stdout, len(exprs)), strict=True):
        error = ""
        if block is None:
            error = ("parse" if f"Failed to parse calendar specification '{expr}'"
                     in result.stderr else "elapse")
        verdicts.append(Verdict(block, error))
    return verdicts, before, after


@pytest.fixture(scope="session")
def oracle() -> dict[Case, tuple[Verdict, datetime, datetime]]:
    """Run the whole corpus through systemd-analyze, one call per (zone, base) group."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed; the calendar oracle test needs it")
    groups: dict[tuple[str, datetime], list[Case]] = {}
    for case in CORPUS:
        groups.setdefault((case.zone, case.base), []).append(case)
    answers = {}
    for (zone, base), cases in groups.items():
        verdicts, before, after = _run_systemd([c.expr for c in cases], zone, base)
        for case, verdict in zip(cases, verdicts, strict=True):
            answers[case] = (verdict, before, after)
    return answers


def _ours(case: Case, now: datetime) -> tuple[str | None, str]:
    zone = ZoneInfo(case.zone)
    try:
        parse_calendar(case.expr, local_tz=zone)
    except CalendarError as exc:
        return None, f"parse: {exc}"
    try:
        return format_like_systemd_analyze(case.expr, ITERATIONS, case.base, zone, now=now), ""
    except CalendarError as exc:
        return None, f"elapse: {exc}"


def _diff(expected: str | None, actual: str | None) -> str:
    lines = difflib.unified_diff((expected or "<error>\n").splitlines(),
                                 (actual or "<error>\n").splitlines(),
                                 "systemd-analyze", "phobos", lineterm="")
    return "\n".join(lines)


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 500
    assert len({case.expr for case in CORPUS}) >= 500


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_agrees_with_systemd(case: Case,
                             oracle: dict[Case, tuple[Verdict, datetime, datetime]]) -> None:
    verdict, before, after = oracle[case]
    ours_before, problem = _ours(case, before)
    if verdict.block is None:
        assert ours_before is None, (
            f"systemd rejects {case.expr!r} ({verdict.error}) but phobos accepts it:\n"
            + _diff(None, ours_before))
        assert problem.startswith(verdict.error), (
            f"systemd fails on {case.expr!r} at {verdict.error}, phobos at {problem}")
        return
    assert ours_before is not None, (
        f"systemd accepts {case.expr!r} but phobos says {problem}:\n{verdict.block}")
    if verdict.block == ours_before:
        return
    ours_after, _ = _ours(case, after)  # "From now" may have ticked over during the run
    assert verdict.block == ours_after, _diff(verdict.block, ours_before)
