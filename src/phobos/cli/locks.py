"""``phobos locks``: the resource locks held right now, and by whom."""

from __future__ import annotations

import argparse
from typing import Any

from phobos.cli.common import json_flag, load_config, print_json, table, verb, when
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    sub = verb(verbs, "locks", "resource locks held right now, and by whom", cmd_locks)
    json_flag(sub)


def cmd_locks(args: argparse.Namespace) -> ExitCode:
    from phobos.core.locks import holders

    config = load_config(args)
    found = holders(config.paths.run / "locks")
    if args.json:
        print_json({"locks": [{"resource": h.resource, "job": h.job, "run_id": h.run_id,
                               "pid": h.pid, "since": h.since,
                               "mode": "write" if h.write else "read"} for h in found]})
        return ExitCode.OK
    if not found:
        print("no locks held")
        return ExitCode.OK
    rows = [[h.resource, "write" if h.write else "read", h.job, str(h.run_id), str(h.pid),
             when(h.since)] for h in found]
    print(table(["RESOURCE", "MODE", "JOB", "RUN", "PID", "SINCE"], rows))
    return ExitCode.OK
