"""Helpers every command-line module uses: building verbs, loading the config, output."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from phobos.errors import ExitCode, UsageError

Handler = Callable[[argparse.Namespace], int]


def verb(parent: Any, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
    """A (sub)command of ``parent`` (an argparse subparsers object) run by ``handler``."""
    sub: argparse.ArgumentParser = parent.add_parser(name, help=help_text,
                                                     description=help_text)
    sub.set_defaults(handler=handler)
    return sub


def json_flag(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--json", action="store_true", help="machine-readable output (stable)")


def no_action(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires one
    return int(ExitCode.USAGE)


def load_config(args: argparse.Namespace) -> Any:
    from phobos.config.model import config_path, load

    return load(config_path(args.config))


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def say(line: str) -> None:
    """Progress for a person, on stderr (stdout may be --json)."""
    print(line, file=sys.stderr, flush=True)


def when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def decide_pin(args: argparse.Namespace, offered: set[str], *, missing: str,
               missing_hint: str, no_tty_hint: str, question: str) -> bool:
    """Whether to pin a host key: ``--fingerprint`` must be among ``offered``, ``--yes``
    pins, otherwise a person answers ``question`` on a terminal (never pinned silently)."""
    if args.fingerprint:
        if args.fingerprint not in offered:
            raise UsageError(missing, missing_hint)
        return True
    if args.yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError("refusing to pin a host key without confirmation", no_tty_hint)
    answer = input(f"{question} [y/N] ")
    return answer.strip().lower() in ("y", "yes")
