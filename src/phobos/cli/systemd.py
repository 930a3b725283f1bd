"""`phobos systemd ...`: render, install, uninstall and list the generated units.
Output only; the work is in :mod:`phobos.systemd.units`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from phobos.cli.common import (
    config_names,
    json_flag,
    load_config,
    print_json,
    table,
    this_program,
    verb,
    writable_dir,
    write_output,
)
from phobos.errors import ExitCode, PhobosError, UsageError


def register(verbs: Any) -> None:
    """Add the `systemd` verb and its actions to the top-level parser's ``verbs``."""
    sub = verb(verbs, "systemd", "generate and install systemd timers and units",
               cmd_systemd_help)
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    render = verb(actions, "render", "print the units for the config, or write them "
                  "to --dir", cmd_systemd_render)
    render.add_argument("--dir", type=writable_dir,
                        help="write the files into this directory (created if missing)")
    install = verb(actions, "install", "write the units to /etc/systemd/system, "
                   "reload, enable and start the timers", cmd_systemd_install)
    uninstall = verb(actions, "uninstall", "disable and remove exactly the units "
                     "phobos installed", cmd_systemd_uninstall)
    listing = verb(actions, "list", "the installed units and whether they are up to "
                   "date", cmd_systemd_list)
    trigger = verb(actions, "trigger", "for a job unit's ExecStartPre=: note whether its "
                   "timer or `systemctl start` began this run (`run --trigger unit` reads it)",
                   cmd_systemd_trigger)
    config_names(trigger.add_argument("job", help="job name from the config"), "jobs")
    for sub_action in (install, uninstall, listing):
        sub_action.add_argument("--root", type=Path, default=Path("/"),
                                help="operate on another root file system (an image); "
                                "systemd is then neither reloaded nor started")
    json_flag(listing)


def _target(args: argparse.Namespace, config: Any) -> Any:
    """The program and config the units run: ``[systemd] executable`` or this phobos."""
    from phobos.config.load import config_path
    from phobos.systemd.units import Target

    executable = config.systemd.executable or this_program()
    return Target(executable=executable, config=Path(os.path.abspath(config_path(args.config))))


def _root(args: argparse.Namespace) -> Path:
    root: Path = args.root
    if not root.is_absolute() or not root.is_dir():
        raise UsageError(f"--root {root}: not an existing absolute directory")
    return root


def cmd_systemd_help(args: argparse.Namespace) -> ExitCode:  # pragma: no cover - argparse requires
    return ExitCode.USAGE


def cmd_systemd_render(args: argparse.Namespace) -> ExitCode:
    from phobos.systemd.units import render

    config = load_config(args)
    files = render(config, _target(args, config))
    if args.dir is None:
        for index, (name, text) in enumerate(files.items()):
            print(("\n" if index else "") + f"### {name}")
            print(text, end="")
        return ExitCode.OK
    try:
        args.dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--dir {args.dir}: cannot create it: {exc.strerror or exc}"
                         ) from None
    for name, text in files.items():
        write_output(args.dir / name, text)
        print(args.dir / name)
    return ExitCode.OK


def cmd_systemd_install(args: argparse.Namespace) -> ExitCode:
    from phobos.systemd.install import install

    config = load_config(args)
    target = _target(args, config)
    if not _under_root(args, target.executable).exists():
        print(f"phobos: warning: {target.executable} does not exist (under {args.root}); "
              "the units will fail to start", file=sys.stderr)
    report = install(config, target, _root(args))
    for path in report.written:
        print(f"wrote    {path}")
    for path in report.removed:
        print(f"removed  {path}")
    _print_kept(report.kept)
    print(f"{len(report.written)} written, {len(report.unchanged)} unchanged, "
          f"{len(report.removed)} removed; enabled: {', '.join(report.enabled) or 'none'}")
    if not report.live:
        print("systemd is not running here: units were enabled offline; they start at "
              "the next boot")
    return ExitCode.OK


def _under_root(args: argparse.Namespace, path: Path) -> Path:
    return Path(args.root) / path.relative_to("/")


def _print_kept(kept: tuple[str, ...]) -> None:
    for path in kept:
        print(f"phobos: warning: kept {path}: edited since phobos installed it; "
              "remove it by hand", file=sys.stderr)


def cmd_systemd_uninstall(args: argparse.Namespace) -> ExitCode:
    from phobos.systemd.install import uninstall

    config = load_config(args)
    report = uninstall(config, _root(args))
    for path in report.removed:
        print(f"removed  {path}")
    _print_kept(report.kept)
    if not report.removed and not report.kept:
        print("nothing installed by phobos")
    return ExitCode.FAILED if report.kept else ExitCode.OK


def cmd_systemd_list(args: argparse.Namespace) -> ExitCode:
    from phobos.systemd.install import listing

    config = load_config(args)
    rows = listing(config, _target(args, config), _root(args))
    if args.json:
        print_json({"files": [{"path": r.path, "unit": r.unit, "state": r.state}
                              for r in rows]})
        return ExitCode.OK
    if not rows:
        print("no units installed by phobos (`phobos systemd install` installs them)")
        return ExitCode.OK
    print(table(["UNIT", "STATE", "PATH"], [[r.unit or "-", r.state, r.path] for r in rows]))
    return ExitCode.OK


def cmd_systemd_trigger(args: argparse.Namespace) -> ExitCode:
    from phobos.core import proc
    from phobos.systemd.activation import (
        INVOCATION_ENV,
        show_argv,
        trigger_from_show,
        write_note,
    )

    config = load_config(args)
    config.job(args.job)
    invocation = os.environ.get(INVOCATION_ENV)
    if not invocation:
        raise UsageError(f"${INVOCATION_ENV} is not set: `phobos systemd trigger` belongs in "
                         "a job unit's ExecStartPre=", "to run a job by hand: phobos run JOB")
    shown = proc.run(show_argv(args.job), capture=True, timeout=30)
    try:
        trigger = trigger_from_show(shown.stdout)
    except ValueError as exc:
        raise PhobosError(f"cannot tell what started {args.job}'s unit: {exc}",
                          "the run is recorded as manual") from None
    write_note(config.paths.run, args.job, invocation, trigger)
    print(f"{args.job}: started by {'its timer' if trigger == 'timer' else 'hand'}")
    return ExitCode.OK
