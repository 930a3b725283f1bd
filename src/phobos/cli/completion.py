"""``phobos completion SHELL``: the bash, zsh or fish completion script, generated from
the argument parser, so it offers exactly the commands, options and choices phobos
accepts; job, host, drive and repository names come from the config when a name is
completed (``phobos completion --names TABLE``, which the scripts call)."""

from __future__ import annotations

import argparse
from typing import Any

from phobos.cli.common import load_config, verb
from phobos.completion.tree import NAME_TABLES
from phobos.errors import ExitCode, PhobosError, UsageError

SHELLS = ("bash", "zsh", "fish")


def register(verbs: Any, *, root: argparse.ArgumentParser) -> None:
    """Add the verb; ``root`` is the whole command line the script completes."""
    sub = verb(verbs, "completion", "print the shell completion script for bash, zsh or "
               "fish (bash: `source <(phobos completion bash)`)", cmd_completion)
    sub.add_argument("shell", nargs="?", choices=SHELLS, help="the shell")
    sub.add_argument("--names", choices=NAME_TABLES, metavar="TABLE",
                     help="print the names of the config's [TABLE.NAME] tables, one per "
                     "line (what the scripts complete; nothing if the config does not "
                     f"load); TABLE: {', '.join(NAME_TABLES)}")
    sub.set_defaults(root_parser=root)


def cmd_completion(args: argparse.Namespace) -> ExitCode:
    if args.names is not None:
        if args.shell is not None:
            raise UsageError("give a shell or --names, not both",
                             "e.g. `phobos completion bash` or `phobos completion --names jobs`")
        for name in config_names(args, args.names):
            print(name)
        return ExitCode.OK
    if args.shell is None:
        raise UsageError("name the shell: bash, zsh or fish",
                         "e.g. `source <(phobos completion bash)`")
    print(script(args.shell, args.root_parser), end="")
    return ExitCode.OK


def config_names(args: argparse.Namespace, table: str) -> list[str]:
    """The names of ``[TABLE.NAME]`` in the config ``-c``/``$PHOBOS_CONFIG`` names, sorted;
    none when it does not load (a completion must not print errors into a prompt)."""
    try:
        config = load_config(args)
    except (PhobosError, OSError, ValueError):
        return []
    return sorted(getattr(config, table))


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    from phobos.completion import bash, fish, zsh

    writers = {"bash": bash.script, "zsh": zsh.script, "fish": fish.script}
    return writers[shell](parser)
