"""``phobos daemon``: run jobs at their calendar times and watch for drives, without
systemd (the same ``phobos run`` underneath)."""

from __future__ import annotations

import argparse
from typing import Any

from phobos.cli.common import load_config, verb
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    verb(verbs, "daemon", "run jobs on schedule and watch for drives (without systemd)",
         cmd_daemon)


def cmd_daemon(args: argparse.Namespace) -> ExitCode:
    from phobos.config.load import config_path
    from phobos.schedule.daemon import run_daemon

    config = load_config(args)
    return ExitCode(run_daemon(config, config_path(args.config).resolve()))
