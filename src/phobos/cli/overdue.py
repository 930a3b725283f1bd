"""``phobos overdue``: jobs that missed their slot and drives past their max_age."""

from __future__ import annotations

import argparse
import sqlite3
import sys
from datetime import datetime
from typing import Any

from phobos.cli.common import (
    history_or_empty,
    history_problem,
    json_flag,
    load_config,
    print_json,
    verb,
    when,
)
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    sub = verb(verbs, "overdue", "jobs that missed their slot and drives past their "
               "max_age (exit 1 if any)", cmd_overdue)
    sub.add_argument("--notify", action="store_true",
                     help="tell the notifiers, once per episode (for an hourly timer)")
    json_flag(sub)


def cmd_overdue(args: argparse.Namespace) -> ExitCode:
    from phobos.schedule.overdue import notify_new_episodes, overdue_drives, overdue_jobs

    config = load_config(args)
    history, problem = history_or_empty(config)  # dead runs are cleaned up and told here
    now = datetime.now().astimezone()
    try:
        found = overdue_jobs(config, history, now)
    except sqlite3.DatabaseError as exc:  # damage past the header: the drives still count
        found, problem = {}, history_problem(exc)
    finally:
        history.close()
    found.update(overdue_drives(config, now))
    if problem is not None:  # the jobs cannot be judged: that is a finding too
        print(f"phobos: {problem}", file=sys.stderr)
    notified: list[str] = []
    if args.notify:
        notified = notify_new_episodes(
            config, found, warn=lambda text: print(f"phobos: warning: {text}", file=sys.stderr))
    if args.json:
        print_json({"overdue": [{"job": n, "due_since": d, "notified": n in notified}
                                for n, d in sorted(found.items())]})
    elif not found:
        print("nothing overdue")
    for name, due in sorted(found.items()):
        if not args.json:
            since = f"overdue since {when(due)}" if due else "never synced"
            print(f"{name}: {since}" + (" (notified)" if name in notified else ""))
    return ExitCode.FAILED if found or problem else ExitCode.OK
