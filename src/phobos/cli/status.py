"""``phobos status``: the last outcome, next run and overdue state of every job, and what
runs now (step, progress, expected end); ``--watch`` refreshes it until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from typing import Any

from phobos.cli.common import (
    history_or_empty,
    history_problem,
    json_flag,
    load_config,
    print_json,
    table,
    verb,
    when,
)
from phobos.errors import ExitCode

WATCH_SECONDS = 2.0


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0.2 <= value <= 3600:
        raise argparse.ArgumentTypeError("give between 0.2 and 3600 seconds")
    return value


def register(verbs: Any) -> None:
    sub = verb(verbs, "status", "last outcome of every job, and what runs now", cmd_status)
    json_flag(sub)
    sub.add_argument("--watch", nargs="?", type=_interval, const=WATCH_SECONDS,
                     metavar="SECONDS", help="refresh every SECONDS (default "
                     f"{WATCH_SECONDS:g}) until Ctrl-C; with --json, one JSON object a line")


def _entries(config: Any) -> list[dict[str, Any]]:
    return _entries_and_problem(config)[0]


def _entries_and_problem(config: Any) -> tuple[list[dict[str, Any]], str | None]:
    """Status entries, and the history's problem ("history unavailable: ..."): without
    the history every job shows as never run, rather than the command failing."""
    import sqlite3

    from phobos.core.history import History
    from phobos.schedule.status import status_entries

    now = datetime.now().astimezone()
    history, problem = history_or_empty(config)
    try:
        return status_entries(config, history, now), problem
    except sqlite3.DatabaseError as exc:  # damage found past the header
        return status_entries(config, History.in_memory(), now), history_problem(exc)
    finally:
        history.close()


def cmd_status(args: argparse.Namespace) -> ExitCode:
    from phobos.core.console import say

    config = load_config(args)
    if args.watch is not None:
        return _watch(config, args.watch, as_json=args.json)
    entries, problem = _entries_and_problem(config)
    if problem is not None:
        say(f"phobos: {problem}")
    if args.json:
        print_json({"jobs": entries, **({"history_problem": problem} if problem else {})})
        return ExitCode.FAILED if problem else ExitCode.OK
    print(render(entries, time.time()))
    return ExitCode.FAILED if problem else ExitCode.OK


def render(entries: list[dict[str, Any]], now: float) -> str:
    """The status table and, when something runs, the table of running jobs."""
    from phobos.core.model import format_duration
    from phobos.schedule.summaries import summary

    rows = []
    for entry in entries:
        last = entry["last"] or {}
        outcome = last.get("outcome", "never run")
        rows.append([entry["job"], entry["kind"], outcome + (" (OVERDUE)" if entry["overdue"]
                                                             else ""),
                     when(last.get("started")), format_duration(last.get("duration")),
                     when(entry["next_run"]) if entry["schedule"] else "on trigger",
                     summary(entry["kind"], last.get("stats"))[:60]])
    text = table(["JOB", "KIND", "LAST", "WHEN", "TOOK", "NEXT", "DETAIL"], rows)
    running = [e for e in entries if e.get("running")]
    if running:
        text += "\n\n" + _running_table(running, now)
    return text


def _running_table(entries: list[dict[str, Any]], now: float) -> str:
    from phobos.core.model import format_duration
    from phobos.schedule.running import eta_text, progress_text

    rows = [[e["job"], str(e["running"]["run"]), format_duration(e["running"]["elapsed"]),
             e["running"]["step"] or "-", progress_text(e["running"])[:70],
             eta_text(e["running"], now)] for e in entries]
    return table(["RUNNING", "RUN", "ELAPSED", "STEP", "PROGRESS", "EXPECTED END"], rows)


def _watch(config: Any, seconds: float, *, as_json: bool) -> ExitCode:
    """Print the status every ``seconds`` until Ctrl-C (exit 0): redrawn in place on a
    terminal, printed again (with a time stamp) otherwise, one JSON line with --json."""
    try:
        if as_json:
            while True:
                print(json.dumps({"time": time.time(), "jobs": _entries(config)},
                                 sort_keys=True), flush=True)
                time.sleep(seconds)
        elif sys.stdout.isatty():
            _watch_live(config, seconds)
        else:
            while True:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                print(f"--- {stamp}\n{render(_entries(config), time.time())}\n", flush=True)
                time.sleep(seconds)
    except KeyboardInterrupt:
        pass
    return ExitCode.OK


def _watch_live(config: Any, seconds: float) -> None:
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    def frame() -> Text:
        stamp = time.strftime("%H:%M:%S")
        return Text(f"{render(_entries(config), time.time())}\n\n"
                    f"{stamp} · every {seconds:g} s · Ctrl-C to stop")

    with Live(frame(), console=Console(), auto_refresh=False, transient=False) as live:
        while True:
            time.sleep(seconds)
            live.update(frame(), refresh=True)
