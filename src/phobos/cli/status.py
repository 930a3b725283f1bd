"""``phobos status``: the last outcome, next run and overdue state of every job."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from phobos.cli.common import json_flag, load_config, open_history, print_json, table, verb, when
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    sub = verb(verbs, "status", "last outcome of every job", cmd_status)
    json_flag(sub)


def cmd_status(args: argparse.Namespace) -> ExitCode:
    from phobos.core.model import format_duration
    from phobos.schedule.status import status_entries
    from phobos.schedule.summaries import summary

    config = load_config(args)
    history = open_history(config)
    entries = status_entries(config, history, datetime.now().astimezone())
    history.close()
    if args.json:
        print_json({"jobs": entries})
        return ExitCode.OK
    rows = []
    for entry in entries:
        last = entry["last"] or {}
        outcome = last.get("outcome", "never run")
        rows.append([entry["job"], entry["kind"], outcome + (" (OVERDUE)" if entry["overdue"]
                                                             else ""),
                     when(last.get("started")), format_duration(last.get("duration")),
                     when(entry["next_run"]) if entry["schedule"] else "on trigger",
                     summary(entry["kind"], last.get("stats"))[:60]])
    print(table(["JOB", "KIND", "LAST", "WHEN", "TOOK", "NEXT", "DETAIL"], rows))
    return ExitCode.OK
