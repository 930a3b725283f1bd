"""``phobos locks``: the resource locks held right now, by whom, and the runs in line."""

from __future__ import annotations

import argparse
from typing import Any

from phobos.cli.common import json_flag, load_config, print_json, table, verb, when
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    sub = verb(verbs, "locks", "resource locks held right now, by whom, and who waits in line",
               cmd_locks)
    json_flag(sub)


def cmd_locks(args: argparse.Namespace) -> ExitCode:
    from phobos.core.locks import holders
    from phobos.core.queue import live_tickets

    config = load_config(args)
    found = holders(config.paths.run / "locks")
    line = live_tickets(config.paths.run / "locks" / "queue")
    holding = {h.pid for h in found}
    if args.json:
        print_json({"locks": [{"resource": h.resource, "job": h.job, "run_id": h.run_id,
                               "pid": h.pid, "since": h.since,
                               "mode": "write" if h.write else "read"} for h in found],
                    "line": [{"job": t.job, "run_id": t.run_id, "pid": t.pid,
                              "since": t.since, "place": t.place.when, "rank": t.place.rank,
                              "holding": t.pid in holding,
                              "wants": {r: "write" if w else "read"
                                        for r, w in t.resources.items()}} for t in line]})
        return ExitCode.OK
    if not found:
        print("no locks held")
    else:
        rows = [[h.resource, "write" if h.write else "read", h.job, str(h.run_id),
                 str(h.pid), when(h.since)] for h in found]
        print(table(["RESOURCE", "MODE", "JOB", "RUN", "PID", "SINCE"], rows))
    waiting = [t for t in line if t.pid not in holding]
    if waiting:
        print("\nIn line, first first:")
        rows = [[t.job, str(t.run_id), str(t.pid), when(t.since),
                 ", ".join(f"{r} ({'write' if w else 'read'})" for r, w in t.resources.items())
                 or "-"] for t in waiting]
        print(table(["JOB", "RUN", "PID", "WAITING SINCE", "WANTS"], rows))
    return ExitCode.OK
