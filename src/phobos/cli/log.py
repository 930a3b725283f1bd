"""``phobos log RUN``: the full (redacted) log of one run."""

from __future__ import annotations

import argparse
import time
from typing import Any

from phobos.cli.common import json_flag, load_config, open_history, positive_int, print_json, verb
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    sub = verb(verbs, "log", "the full (redacted) log of one run", cmd_log)
    sub.add_argument("run_id", type=positive_int, help="run id from `phobos history`")
    json_flag(sub)


def cmd_log(args: argparse.Namespace) -> ExitCode:
    config = load_config(args)
    history = open_history(config)
    run = history.run(args.run_id)
    lines = list(history.log_lines(args.run_id))
    steps = history.steps(args.run_id)
    history.close()
    if args.json:
        print_json({"run": run.as_json(), "steps": steps,
                    "log": [{"ts": x.ts, "stream": x.stream, "line": x.line} for x in lines]})
        return ExitCode.OK
    print(f"run {run.id}: job {run.job} ({run.kind}, {run.trigger}) {run.outcome}")
    for line in lines:
        stamp = time.strftime("%H:%M:%S", time.localtime(line.ts))
        marker = {"stderr": "!", "phobos": "#"}.get(line.stream, " ")
        print(f"{stamp} {marker} {line.line}")
    return ExitCode.OK
