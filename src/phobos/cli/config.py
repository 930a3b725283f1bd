"""``phobos config check|show|reference``: validate, print and document the configuration."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from phobos.cli.common import json_flag, load_config, no_action, print_json, verb
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    sub = verb(verbs, "config", "check or show the configuration", no_action)
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    check: argparse.ArgumentParser = actions.add_parser(
        "check", help="validate the config; exit 0 or 2")
    check.set_defaults(handler=cmd_config_check)
    show: argparse.ArgumentParser = actions.add_parser(
        "show", help="the validated config with defaults, secrets masked")
    show.set_defaults(handler=cmd_config_show)
    json_flag(show)
    reference: argparse.ArgumentParser = actions.add_parser(
        "reference", help="every config key with type, default and meaning (Markdown)")
    reference.set_defaults(handler=cmd_config_reference)


def cmd_config_check(args: argparse.Namespace) -> ExitCode:
    config = load_config(args)
    kinds: dict[str, int] = {}
    for job in config.jobs.values():
        kinds[str(job.kind)] = kinds.get(str(job.kind), 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no jobs"
    print(f"{config.source}: ok ({summary}; {len(config.hosts)} hosts, "
          f"{len(config.repos)} repos, {len(config.drives)} drives)")
    # Legal but risky layouts: said here and by `phobos doctor`, never in a run's log.
    from phobos.config.layout import layout_warnings

    for warning in layout_warnings(config):
        print(f"phobos: warning: {warning}", file=sys.stderr)
    return ExitCode.OK


def cmd_config_show(args: argparse.Namespace) -> ExitCode:
    from phobos.config.show import MASK, to_plain, toml_lines

    config = load_config(args)
    plain = to_plain(config)
    if args.json:
        print_json(plain)
        return ExitCode.OK
    source = plain.pop("source")
    print(f"# {source} as phobos reads it: every default filled in, unset keys left out.")
    print(f"# Secrets are masked ({MASK}, marked below): the file loads, the secrets do not")
    print("# work.")
    print("\n".join(toml_lines(plain)).lstrip("\n"))
    return ExitCode.OK


def cmd_config_reference(args: argparse.Namespace) -> ExitCode:
    from phobos.config.reference import render

    print(render(), end="")
    return ExitCode.OK
