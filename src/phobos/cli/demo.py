"""``phobos demo``: the whole flow in a throw-away sandbox (see :mod:`phobos.dev.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phobos.cli.common import verb
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    sub = verb(verbs, "demo", "run the whole flow in a throw-away sandbox", cmd_demo)
    sub.add_argument("--dir", type=Path, help="sandbox directory to use and keep")


def cmd_demo(args: argparse.Namespace) -> ExitCode:
    from phobos.dev.demo import run_demo

    return ExitCode(run_demo(args.dir))
