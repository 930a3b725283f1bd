"""``phobos calendar``: normalize OnCalendar expressions and show their next elapses,
laid out like ``systemd-analyze calendar``."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from phobos.cli.common import positive_int, verb
from phobos.errors import ExitCode, UsageError


def register(verbs: Any) -> None:
    sub = verb(verbs, "calendar", "normalize an OnCalendar expression and show its next "
               "elapses, laid out like `systemd-analyze calendar`", cmd_calendar)
    sub.add_argument("expression", nargs="+", help="e.g. 'Sun *-*-* 07:00'")
    sub.add_argument("--iterations", type=positive_int, default=1,
                     help="how many elapses to show (default 1)")
    sub.add_argument("--base-time", metavar="TIME",
                     help="compute from this time ('YYYY-MM-DD HH:MM:SS [UTC]'), not now")


def cmd_calendar(args: argparse.Namespace) -> ExitCode:
    from phobos.oncalendar.analyze import format_like_systemd_analyze
    from phobos.oncalendar.errors import CalendarError
    from phobos.oncalendar.zones import system_timezone

    zone = system_timezone()
    base = _parse_base_time(args.base_time, zone)
    failed = False
    for index, text in enumerate(args.expression):
        if index:
            print()
        try:
            print(format_like_systemd_analyze(text, args.iterations, base, zone), end="")
        except CalendarError as exc:
            # Every expression is shown; one bad one does not hide the others.
            print(f"phobos: {text!r}: {exc.message}", file=sys.stderr)
            failed = True
    if failed:
        raise UsageError("not every expression is valid (systemd would refuse the same)")
    return ExitCode.OK


def _parse_base_time(text: str | None, zone: Any) -> datetime:
    if text is None:
        return datetime.now(zone)
    value, utc, _ = text.strip().partition(" UTC")
    for layout in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            moment = datetime.strptime(value.strip(), layout)
        except ValueError:
            continue
        return moment.replace(tzinfo=UTC if utc else zone)
    raise UsageError(f"--base-time {text!r}: use 'YYYY-MM-DD HH:MM:SS', optionally + ' UTC'")
