"""``phobos run JOB``: run one job now. Every trigger (timer, drive, daemon, person)
ends here."""

from __future__ import annotations

import argparse
from typing import Any

from phobos.cli.common import json_flag, load_config, print_json, verb
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    sub = verb(verbs, "run", "run one job now (every trigger ends here)", cmd_run)
    sub.add_argument("job", help="job name from the config")
    sub.add_argument("--trigger", default="manual",
                     choices=["manual", "timer", "device", "daemon"],
                     help="what started the run (recorded in history; default manual)")
    sub.add_argument("-q", "--quiet", action="store_true", help="do not echo the job's log")
    json_flag(sub)


def cmd_run(args: argparse.Namespace) -> ExitCode:
    from phobos.core.console import say
    from phobos.core.model import Trigger, format_duration
    from phobos.core.runner import run_job

    config = load_config(args)
    report = run_job(config, args.job, Trigger(args.trigger),
                     echo=None if args.quiet else say)
    if args.json:
        print_json({"run_id": report.run_id, "job": report.job,
                    "outcome": str(report.outcome), "exit_code": int(report.exit_code),
                    "message": report.message, "duration": report.duration})
    else:
        tail = f": {report.message}" if report.message else ""
        print(f"{report.job}: {report.outcome} in {format_duration(report.duration)} "
              f"(run {report.run_id}){tail}")
    return report.exit_code
