"""``phobos schedule``: the window ahead, simulated: when each job starts and ends, what
it waits for, what is skipped, and when a triggered job fits."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from phobos.cli.common import (
    json_flag,
    load_config,
    open_history,
    positive_int,
    print_json,
    verb,
    writable_file,
)
from phobos.errors import ExitCode, UsageError

FROM_LAYOUT = "%Y-%m-%d %H:%M"
MAX_DAYS = 366


def window_days(text: str) -> int:
    """An argparse type: 1 to MAX_DAYS days."""
    days = positive_int(text)
    if days > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"at most {MAX_DAYS} days")
    return days


def register(verbs: Any) -> None:
    sub = verb(verbs, "schedule", "the window ahead, simulated: when each job starts and "
               "ends, what it waits for, what is skipped", cmd_schedule)
    sub.add_argument("--days", type=window_days, default=1,
                     help=f"window length in days, 1 to {MAX_DAYS} (default 1)")
    sub.add_argument("--from", dest="start", metavar="'YYYY-MM-DD HH:MM'",
                     help="start of the window, local time (default: this hour)")
    sub.add_argument("--svg", type=writable_file, metavar="FILE",
                     help="also write the picture as SVG")
    json_flag(sub)


def cmd_schedule(args: argparse.Namespace) -> ExitCode:
    from phobos.schedule.picture import render_svg
    from phobos.schedule.simulate import simulate
    from phobos.schedule.timeline import render_text, simulation_json, window

    config = load_config(args)
    start, end = window(window_start(args.start), args.days)
    history = open_history(config)
    try:
        sim = simulate(config, history, start, end)
    finally:
        history.close()
    if args.svg is not None:
        try:
            args.svg.write_text(render_svg(sim, config))
        except OSError as exc:
            raise UsageError(f"--svg {args.svg}: cannot write it: {exc.strerror}",
                             "pick a writable path") from None
    if args.json:
        print_json(simulation_json(sim, config))
    else:
        print(render_text(sim, config), end="")
    return ExitCode.OK


def window_start(text: str | None) -> datetime:
    """``--from`` as an aware local time; by default the start of the current hour."""
    from phobos.oncalendar.zones import system_timezone

    zone = system_timezone()
    if text is None:
        return datetime.now(zone).replace(minute=0, second=0, microsecond=0)
    try:
        naive = datetime.strptime(text.strip(), FROM_LAYOUT)
    except ValueError:
        raise UsageError(f"--from {text!r} is not a local time like '2026-01-04 03:00'",
                         "give the date and time as YYYY-MM-DD HH:MM") from None
    return naive.replace(tzinfo=zone)
