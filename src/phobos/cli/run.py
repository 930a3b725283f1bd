"""``phobos run JOB``: run one job now. Every trigger (timer, drive, daemon, person)
ends here."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from phobos.cli.common import (
    config_names,
    json_flag,
    load_config,
    open_history,
    print_json,
    verb,
)
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    sub = verb(verbs, "run", "run one job now (every trigger ends here)", cmd_run)
    config_names(sub.add_argument("job", help="job name from the config"), "jobs")
    sub.add_argument("--trigger", default="manual",
                     choices=["manual", "timer", "device", "daemon", "unit"],
                     help="what started the run (recorded in history; default manual); "
                     "unit: the job's systemd unit, recorded as timer when its timer "
                     "started it and as manual for `systemctl start`")
    config_names(sub.add_argument("--drive", metavar="NAME",
                                  help="a drive-sync job: sync this drive only (as plugging "
                                  "it in does; default: every drive of the job present)"),
                 "drives")
    sub.add_argument("-q", "--quiet", action="store_true", help="do not echo the job's log")
    sub.add_argument("--no-progress", action="store_true",
                     help="run the programs without their progress output and draw no "
                     "bars (`phobos status` still shows the step and elapsed time)")
    json_flag(sub)


def _bars(config: Any, args: argparse.Namespace) -> Any:
    """Progress bars when a person watches (stderr is a terminal), else None."""
    if args.quiet or args.no_progress or not sys.stderr.isatty():
        return None
    import sqlite3

    from phobos.core.terminal import TerminalBars
    from phobos.errors import HistoryUnavailable
    from phobos.schedule.plan import typical_duration

    job = config.job(args.job)
    try:
        history = open_history(config)
    except HistoryUnavailable:  # the run copes (phobos.core.recorder) and says so itself
        return TerminalBars(None)
    try:
        return TerminalBars(typical_duration(history, args.job, job).median)
    except sqlite3.DatabaseError:  # damage past the header: found and handled by the run
        return TerminalBars(None)
    finally:
        history.close()


def cmd_run(args: argparse.Namespace) -> ExitCode:
    from phobos.core.console import say
    from phobos.core.model import Trigger, format_duration
    from phobos.core.runner import run_job

    config = load_config(args)
    if args.drive is not None:
        from phobos.jobs.drive_sync import require_member

        require_member(config.job(args.job), args.job, args.drive)
    trigger = _unit_trigger(config, args.job) if args.trigger == "unit" \
        else Trigger(args.trigger)
    bars = _bars(config, args)
    echo = None if args.quiet else bars.echo if bars is not None else say
    with bars if bars is not None else contextlib.nullcontext():
        report = run_job(config, args.job, trigger, echo=echo,
                         tool_progress=not args.no_progress, listener=bars,
                         only_drive=args.drive)
    if report.problem is not None:  # said even with --quiet: the history needs a person
        say(f"phobos: {report.problem}")
    if args.json:
        print_json({"run_id": report.run_id, "job": report.job,
                    "outcome": str(report.outcome), "exit_code": int(report.exit_code),
                    "message": report.message, "duration": report.duration,
                    "history_problem": report.problem})
    else:
        tail = f": {report.message}" if report.message else ""
        which = f"run {report.run_id}" if report.run_id > 0 else "not in the history database"
        print(f"{report.job}: {report.outcome} in {format_duration(report.duration)} "
              f"({which}){tail}")
    return report.exit_code


def _unit_trigger(config: Any, job: str) -> Any:
    """timer or manual: the note `phobos systemd trigger` left for this activation of the
    job's unit (see phobos.systemd.activation)."""
    from phobos.systemd.activation import INVOCATION_ENV, take_note

    config.job(job)  # an unknown job is a usage error before anything is read
    return take_note(config.paths.run, job, os.environ.get(INVOCATION_ENV))
