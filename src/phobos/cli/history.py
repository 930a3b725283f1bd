"""``phobos history [JOB]``: past runs, newest first."""

from __future__ import annotations

import argparse
from typing import Any

from phobos.cli.common import (
    config_names,
    json_flag,
    load_config,
    open_history,
    positive_int,
    print_json,
    table,
    verb,
    when,
)
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    sub = verb(verbs, "history", "past runs, newest first", cmd_history)
    config_names(sub.add_argument("job", nargs="?",
                                  help="only this job (restores: restore:REPO)"), "jobs")
    sub.add_argument("--limit", type=positive_int, default=20, help="how many (default 20)")
    json_flag(sub)


def cmd_history(args: argparse.Namespace) -> ExitCode:
    from phobos.core.model import format_duration

    config = load_config(args)
    history = open_history(config)
    runs = history.runs(args.job, args.limit)
    history.close()
    if args.job is not None and not runs:
        config.job(args.job)  # a clear error for an unknown name (restore:REPO has runs)
    if args.json:
        print_json({"runs": [r.as_json() for r in runs]})
        return ExitCode.OK
    rows = [[str(r.id), r.job, r.trigger, when(r.started), format_duration(r.duration),
             str(r.outcome), (r.message or "")[:60]] for r in runs]
    print(table(["RUN", "JOB", "TRIGGER", "STARTED", "TOOK", "OUTCOME", "MESSAGE"], rows))
    return ExitCode.OK
