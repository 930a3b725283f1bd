"""`phobos ns ...`: create, inspect, enter and drop the backup mount namespace.
Output only; the work is in :mod:`phobos.namespace`."""

from __future__ import annotations

import argparse
import os
from typing import Any

from phobos.cli.common import json_flag, load_config, no_action, print_json, verb
from phobos.core.console import say
from phobos.core.proc import direct_runner
from phobos.errors import ExitCode, UsageError


def register(verbs: Any) -> None:
    """Add the `ns` verb and its actions to the top-level parser's ``verbs``."""
    ns = verb(verbs, "ns", "the backup mount namespace: create, status, enter, destroy",
              no_action)
    _add_ns(ns.add_subparsers(dest="action", metavar="ACTION", required=True))


def _add_ns(actions: Any) -> None:
    verb(actions, "create", "create the namespace (idempotent) and mount [storage] "
         "device inside it", cmd_ns_create)
    json_flag(verb(actions, "status", "show the mounts only the namespace sees, and prove "
               "they are invisible outside", cmd_ns_status))
    enter = verb(actions, "enter", "run a command (default: your shell) inside the "
                 "namespace", cmd_ns_enter)
    enter.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments")
    destroy = verb(actions, "destroy", "unmount everything inside and drop the namespace",
                   cmd_ns_destroy)
    destroy.add_argument("--force", action="store_true", help="even while jobs hold locks")


def cmd_ns_create(args: argparse.Namespace) -> ExitCode:
    from phobos import namespace

    config = load_config(args)
    ns = namespace.create(config, direct_runner(say))
    print(f"backup namespace ready: {ns.file} (mnt:[{namespace.recorded_id(ns)}])")
    return ExitCode.OK


def cmd_ns_status(args: argparse.Namespace) -> ExitCode:
    from phobos import namespace

    status = namespace.status(load_config(args))
    if args.json:
        print_json({"file": str(status.file), "alive": status.alive, "id": status.ns_id,
                    "caller_inside": status.caller_inside,
                    "hidden": [_mount_json(m) for m in status.hidden],
                    "leaked": [_mount_json(m) for m in status.leaked],
                    "invisible_outside": status.alive and not status.leaked})
        return ExitCode.OK
    if not status.alive:
        print(f"no backup namespace ({status.file} is not bound); `phobos ns create` makes one")
        return ExitCode.SKIPPED
    print(f"backup namespace {status.file} (mnt:[{status.ns_id}]): "
          f"{status.inside_count} mounts inside, {status.outside_count} outside")
    print(f"mounts only inside: {len(status.hidden)}")
    for entry in status.hidden:
        print(f"  {entry.mountpoint}  {entry.fstype} {entry.source}  outside: not mounted")
    verdict = "yes" if not status.leaked else "NO: " + ", ".join(m.mountpoint
                                                                 for m in status.leaked)
    print(f"invisible outside: {verdict}")
    return ExitCode.OK if not status.leaked else ExitCode.FAILED


def _mount_json(entry: Any) -> dict[str, str]:
    return {"mountpoint": entry.mountpoint, "fstype": entry.fstype, "source": entry.source,
            "devno": entry.devno}


def cmd_ns_enter(args: argparse.Namespace) -> ExitCode:
    from phobos import namespace

    argv = [a for a in args.command if a != "--"] or [os.environ.get("SHELL", "/bin/sh")]
    namespace.exec_inside(load_config(args), argv)


def cmd_ns_destroy(args: argparse.Namespace) -> ExitCode:
    from phobos import namespace
    from phobos.core.locks import holders
    from phobos.drives.attach import release
    from phobos.drives.identity import all_drives

    config = load_config(args)
    busy = holders(config.paths.run / "locks")
    if busy and not args.force:
        raise UsageError("jobs are running: " + "; ".join(f"{h.resource} by {h.describe()}"
                                                           for h in busy),
                         "wait for them, or add --force")
    run = direct_runner(say)

    def release_all() -> None:
        for drive in all_drives(config):
            for line in release(drive, run, say):
                say(f"drive {drive.name}: {line}")

    existed = namespace.destroy(config, run, release_all)
    print("backup namespace dropped" if existed else "no backup namespace to drop")
    return ExitCode.OK
