"""The command tree as the completion scripts need it, read from the argument parser.

Every command (``phobos``, ``phobos drive``, ``phobos drive release`` …) has its
subcommands, its options and its positional arguments; each value an argument takes is
a :class:`Spot` saying what completes there. The scripts look these up in a table of
:class:`Entry` lines keyed ``KIND:PATH:EXTRA`` (``pos:phobos/run:1``), the same keys in
every shell, so the three scripts walk the command line by one rule.

Arguments that take the name of a ``[jobs.NAME]``, ``[hosts.NAME]``, ``[drives.NAME]``
or ``[repos.NAME]`` table are marked where they are defined (:func:`mark_names`); the
scripts ask phobos for those names when they complete.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import weakref
from dataclasses import dataclass
from pathlib import Path

#: The config tables whose names completion offers.
NAME_TABLES = ("jobs", "hosts", "drives", "repos")
#: How the scripts name the top-level command in their keys.
ROOT = "phobos"
DESCRIPTION_WIDTH = 60

_marked: weakref.WeakKeyDictionary[argparse.Action, str] = weakref.WeakKeyDictionary()


def mark_names(action: argparse.Action, table: str) -> argparse.Action:
    """Mark ``action`` as taking a name from the config's ``[TABLE.NAME]`` tables."""
    if table not in NAME_TABLES:
        raise ValueError(f"completion offers names of {NAME_TABLES}, not {table!r}")
    _marked[action] = table
    return action


def names_table(action: argparse.Action) -> str | None:
    """The table ``action`` takes a name from (see :func:`mark_names`), or None."""
    return _marked.get(action)


@dataclass(frozen=True, slots=True)
class Spot:
    """What completes where a value goes: ``names`` of a table, ``choices``, ``files``,
    ``commands`` (a command line of its own), or ``none`` (free text)."""

    kind: str
    words: tuple[str, ...] = ()

    def encode(self) -> str:
        """The spot as the scripts read it: ``names jobs``, ``choices a b``, ``files``."""
        return " ".join([self.kind, *self.words])


@dataclass(frozen=True, slots=True)
class Command:
    """One command: its key path (``phobos/drive/release``), its subcommands and options
    (word and description), what each option's value is, and its positionals."""

    path: str
    subcommands: tuple[tuple[str, str], ...]
    options: tuple[tuple[str, str], ...]
    values: tuple[tuple[str, Spot], ...]
    positionals: tuple[Spot, ...]
    repeats: bool  # the last positional takes any number of words


@dataclass(frozen=True, slots=True)
class Entry:
    """One table entry: ``key`` (a shell pattern when ``wildcard``) and its lines,
    ``word<TAB>description`` for subcommands and options, one spot otherwise."""

    key: str
    lines: tuple[str, ...]
    wildcard: bool = False


def describe(action: argparse.Action) -> str:
    """The action's help as one short line (argparse's ``%(default)s`` filled in)."""
    text = action.help or ""
    if text == argparse.SUPPRESS:
        return ""
    with contextlib.suppress(KeyError, TypeError, ValueError):
        text = text % {**vars(action), "prog": ROOT}
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > DESCRIPTION_WIDTH:
        text = text[:DESCRIPTION_WIDTH].rsplit(" ", 1)[0].rstrip(",;:(") + "..."
    return text


def spot_of(action: argparse.Action) -> Spot:
    table = names_table(action)
    if table is not None:
        return Spot("names", (table,))
    if action.choices is not None:
        return Spot("choices", tuple(str(choice) for choice in action.choices))
    if action.nargs == argparse.REMAINDER:
        return Spot("commands")
    if action.type is Path or action.metavar == "FILE":
        return Spot("files")
    return Spot("none")


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _command(path: str, parser: argparse.ArgumentParser) -> Command:
    subs = _subparsers(parser)
    subcommands = tuple((pseudo.dest, describe(pseudo))
                        for pseudo in (subs._choices_actions if subs else []))
    options, values, positionals = [], [], []
    for action in parser._actions:
        if action is subs:
            continue
        if not action.option_strings:
            positionals.append(action)
            continue
        flags = [f for f in action.option_strings
                 if f.startswith("--") or len(action.option_strings) == 1]
        options += [(flag, describe(action)) for flag in flags]
        # An optional value (`--watch [SECONDS]`) is left to the user: the next word may
        # as well be another option.
        if action.nargs not in (0, argparse.OPTIONAL):
            values += [(flag, spot_of(action)) for flag in action.option_strings]
    repeats = bool(positionals) and positionals[-1].nargs in ("+", "*", argparse.REMAINDER)
    return Command(path=path, subcommands=subcommands, options=tuple(options),
                   values=tuple(values), positionals=tuple(spot_of(a) for a in positionals),
                   repeats=repeats)


def commands(parser: argparse.ArgumentParser, path: str = ROOT) -> list[Command]:
    """``parser``'s command and every subcommand below it, depth first, in the order
    they were added."""
    found = [_command(path, parser)]
    subs = _subparsers(parser)
    for name, sub in (subs.choices.items() if subs else []):
        found += commands(sub, f"{path}/{name}")
    return found


def entries(parser: argparse.ArgumentParser) -> list[Entry]:
    """The table every script carries: for each command, ``subs:PATH:`` and
    ``opts:PATH:`` (word and description per line), ``value:PATH:FLAG`` and
    ``pos:PATH:N`` (a spot); a repeating last positional matches ``pos:PATH:*``, after
    the exact entries, so the scripts' first match is the right one."""
    table = []
    for command in commands(parser):
        if command.subcommands:
            table.append(Entry(f"subs:{command.path}:",
                               tuple(f"{w}\t{d}" for w, d in command.subcommands)))
        table.append(Entry(f"opts:{command.path}:",
                           tuple(f"{w}\t{d}" for w, d in command.options)))
        table += [Entry(f"value:{command.path}:{flag}", (spot.encode(),))
                  for flag, spot in command.values]
        table += [Entry(f"pos:{command.path}:{index}", (spot.encode(),))
                  for index, spot in enumerate(command.positionals, start=1)]
        if command.repeats:
            table.append(Entry(f"pos:{command.path}:", (command.positionals[-1].encode(),),
                               wildcard=True))
    return table
