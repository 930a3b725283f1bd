"""``phobos schedule``: when jobs run, how long they take, where they would overlap."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from phobos.cli.common import json_flag, load_config, open_history, positive_int, print_json, verb
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    sub = verb(verbs, "schedule", "when jobs run, how long they take, where they would "
               "overlap", cmd_schedule)
    sub.add_argument("--days", type=positive_int, default=1, help="window length (default 1)")
    sub.add_argument("--svg", type=Path, metavar="FILE", help="also write the picture as SVG")
    json_flag(sub)


def cmd_schedule(args: argparse.Namespace) -> ExitCode:
    from phobos.schedule.plan import plan_window
    from phobos.schedule.timeline import plan_json, render_svg, render_text

    config = load_config(args)
    history = open_history(config)
    start = datetime.now().astimezone().replace(minute=0, second=0, microsecond=0)
    plan = plan_window(config, history, start, start + timedelta(days=args.days))
    history.close()
    if args.svg is not None:
        args.svg.write_text(render_svg(plan, config))
    if args.json:
        print_json(plan_json(plan))
    else:
        print(render_text(plan, config), end="")
    return ExitCode.OK
