"""Helpers every command-line module uses: building verbs, loading the config, output.
Each helper has one name; verb modules import them by that name."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from phobos.errors import ExitCode, UsageError

Handler = Callable[[argparse.Namespace], ExitCode]


def verb(parent: Any, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
    """A (sub)command of ``parent`` (an argparse subparsers object) run by ``handler``."""
    sub: argparse.ArgumentParser = parent.add_parser(name, help=help_text,
                                                     description=help_text)
    sub.set_defaults(handler=handler)
    return sub


def json_flag(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--json", action="store_true", help="machine-readable output (stable)")


def no_action(args: argparse.Namespace) -> ExitCode:  # pragma: no cover - argparse needs one
    return ExitCode.USAGE


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def load_config(args: argparse.Namespace) -> Any:
    from phobos.config.load import config_path, load

    return load(config_path(args.config))


def open_history(config: Any) -> Any:
    """The history database of ``config``, with runs of dead processes marked interrupted."""
    from phobos.core.history import History

    history = History.open(config.paths.state)
    history.recover()
    return history


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table, columns padded to their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)


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


def this_program() -> Path:
    """The phobos program running now: its console script, not ``python -m``."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "phobos" and argv0.exists():
        return Path(os.path.abspath(argv0))
    beside = Path(sys.executable).parent / "phobos"
    if beside.exists():
        return beside
    found = shutil.which("phobos")
    if found:
        return Path(os.path.abspath(found))
    raise UsageError("cannot tell which phobos program the units should run",
                     "set `executable` in the [systemd] table of the config")


def exit_codes_epilog(sub: argparse.ArgumentParser, text: str) -> None:
    """The exit-code table as written; the description wrapped by hand (the raw
    formatter keeps the table's layout, and would not wrap the description either)."""
    sub.epilog = text
    sub.description = textwrap.fill(sub.description or "", 79)
    sub.formatter_class = argparse.RawDescriptionHelpFormatter
