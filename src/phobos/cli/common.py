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

from phobos.completion.tree import mark_names
from phobos.errors import ExitCode, UsageError

Handler = Callable[[argparse.Namespace], ExitCode]


def verb(parent: Any, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
    """A (sub)command of ``parent`` (an argparse subparsers object) run by ``handler``."""
    sub: argparse.ArgumentParser = parent.add_parser(name, help=help_text,
                                                     description=help_text)
    sub.set_defaults(handler=handler)
    return sub


def config_names(action: argparse.Action, table: str) -> argparse.Action:
    """Mark an argument (what ``add_argument`` returned) as taking the name of a
    ``[TABLE.NAME]`` of the config (``jobs``, ``hosts``, ``drives``, ``repos``): shell
    completion offers the config's names there."""
    return mark_names(action, table)


def json_flag(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--json", action="store_true", help="machine-readable output (stable)")


def no_action(args: argparse.Namespace) -> ExitCode:  # pragma: no cover - argparse needs one
    return ExitCode.USAGE


# The largest id SQLite stores (a run id beyond it names no run).
ID_MAX = 2**63 - 1


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high``; the error says which."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {low} to {high}")
        return value

    return parse


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (and at most :data:`ID_MAX`)."""
    return bounded_int(1, ID_MAX)(text)


def writable_file(text: str) -> Path:
    """An argparse type: a file to write; refused if it is a directory."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory: name a file")
    return path


def writable_dir(text: str) -> Path:
    """An argparse type: a directory to write into (created if missing); refused if it
    exists and is not a directory."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    return path


def write_output(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` for the user; UsageError saying why it cannot."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}",
                         "name a file in a directory you may write to") from None


def load_config(args: argparse.Namespace) -> Any:
    from phobos.config.load import config_path, load

    return load(config_path(args.config))


def open_history(config: Any) -> Any:
    """The history database of ``config``, after cleaning up after runs whose process
    died (:mod:`phobos.reconcile`: marked interrupted, drives released, told once).
    HistoryUnavailable if it cannot be opened."""
    import sqlite3

    from phobos.core.console import say
    from phobos.core.history import History
    from phobos.errors import PhobosError
    from phobos.reconcile import reconcile

    history = History.open(config.paths.state)
    try:
        reconcile(config, history, say=lambda line: say(f"phobos: {line}"))
    except (PhobosError, sqlite3.Error, OSError) as exc:  # a read-only database, say
        say(f"phobos: warning: cleaning up after dead runs failed: {exc}")
    return history


def history_or_empty(config: Any) -> tuple[Any, str | None]:
    """:func:`open_history`, or, when it is unavailable, an empty history and the line
    saying so ("history unavailable: ..."): for verbs that have something to show
    without it (status, overdue). The line also says when the history can be read but
    not written (runs then go to phobos's log file)."""
    from phobos.core.recorder import writing_problem
    from phobos.errors import HistoryUnavailable

    try:
        history = open_history(config)
    except HistoryUnavailable as exc:
        return _last_known(config, exc), history_problem(exc)
    return history, writing_problem(config.paths.state, config.paths.log)


def _last_known(config: Any, exc: Any) -> Any:
    """What can still be read of an unusable (not damaged) history, read-only as the
    dashboard reads it; else nothing."""
    import sqlite3

    from phobos.core.history import History
    from phobos.errors import PhobosError
    from phobos.web.readonly import open_history as open_read_only

    if not exc.damaged:
        try:
            history = open_read_only(config.paths.state)
            history.runs(limit=1)
            return history
        except (PhobosError, sqlite3.Error):
            pass
    return History.in_memory()


def history_problem(exc: BaseException) -> str:
    """The one line a reader shows when the history cannot be read."""
    from phobos.errors import PhobosError

    if isinstance(exc, PhobosError):
        hint = f" (hint: {exc.hint})" if exc.hint else ""
        return f"history unavailable: {exc.message}{hint}"
    return f"history unavailable: {exc}"


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def json_errors(handler: Handler) -> Handler:
    """``handler``, but with ``--json`` a failure also prints ``{"error": {"message",
    "hint", "exit_code"}}`` on stdout (a script reading it never gets empty output);
    the error then goes on to ``__main__`` as usual (stderr, exit code)."""
    from phobos.errors import PhobosError

    def wrapped(args: argparse.Namespace) -> ExitCode:
        try:
            return handler(args)
        except PhobosError as exc:
            if getattr(args, "json", False):
                print_json({"error": {"message": exc.message, "hint": exc.hint,
                                      "exit_code": int(exc.exit_code)}})
            raise

    return wrapped


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


def show_host_keys(name: str, new: Sequence[Any], old: Sequence[Any]) -> None:
    """The keys a host (or a repository's server) offers, and the pinned ones they
    replace, on stderr (stdout may be --json), before asking to pin them."""
    err = sys.stderr
    if old:
        print(f"The host key of {name} has CHANGED. Pinned:", file=err)
        for key in old:
            print(f"  {key.describe()}", file=err)
        print("It now offers:", file=err)
    else:
        print(f"{name} offers these host keys:", file=err)
    for key in new:
        print(f"  {key.describe()}", file=err)
    print("Compare with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` run on the host "
          "itself.", file=err)


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
