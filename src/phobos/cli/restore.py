"""``phobos restore PATH --to DIR``: a file or directory from an archive of the repository
(or of a drive's copy) into DIR, keeping its path. Output only; the work is in
:mod:`phobos.repos.restore`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phobos.cli.common import config_names, json_flag, load_config, print_json, verb
from phobos.core.console import say
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    sub = verb(verbs, "restore", "restore a file or directory into DIR, keeping its path "
               "(/etc/fstab -> DIR/etc/fstab, HOST:/etc/fstab -> DIR/HOST/etc/fstab)",
               cmd_restore)
    sub.add_argument("path", help="as on the machine it came from: /etc/fstab, or "
                     "HOST:/etc/fstab for a pulled host")
    sub.add_argument("--to", required=True, type=Path, metavar="DIR",
                     help="the directory to restore into (created if missing; never /)")
    config_names(sub.add_argument("--repo", metavar="NAME", help="the repository (default: "
                                  "the only one, or the one copied to --from-drive)"), "repos")
    when = sub.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="TIME", help="the newest version archived at or "
                      "before TIME: 2026-11-29 (end of that day), '2026-11-29 03:00', "
                      "or a time ago: 3d, 12h")
    when.add_argument("--archive", metavar="NAME", help="from this archive")
    config_names(sub.add_argument("--from-drive", metavar="DRIVE", help="from the copy on "
                                  "this off-site drive: unlocked and mounted read-only for "
                                  "the restore, unmounted and locked after"), "drives")
    sub.add_argument("--overwrite", action="store_true",
                     help="replace what exists at DIR/PATH (directories are merged)")
    json_flag(sub)


def cmd_restore(args: argparse.Namespace) -> ExitCode:
    from phobos.cli.find import only_repo
    from phobos.repos.layout import parse_known
    from phobos.repos.restore import RestoreRequest, parse_when, restore

    config = load_config(args)
    known = parse_known(args.path, config)
    if args.from_drive is not None and args.repo is None:
        from phobos.drives.contents import copied_repo
        from phobos.drives.identity import get

        repo = copied_repo(config, get(config, args.from_drive).name, None)[0]
    else:
        repo = only_repo(config, args.repo)
    request = RestoreRequest(path=known, target=args.to.absolute(), repo=repo,
                             at=None if args.at is None else parse_when(args.at),
                             archive=args.archive, drive=args.from_drive,
                             overwrite=args.overwrite)
    report = restore(config, request, say)
    if args.json:
        print_json(report.as_json())
        return ExitCode.OK
    from phobos.cli.find import short_time
    from phobos.jobs.archive import human_size

    what = "" if report.type == "-" else f" ({report.as_json()['type']})"
    source = f"drive {report.drive}'s copy of " if report.drive else ""
    print(f"restored {report.path}{what} from archive {report.archive} "
          f"({short_time(report.time)}) of {source}repository {report.repo}:\n"
          f"  {report.destination}  ({report.items} items, {human_size(report.bytes)}; "
          f"run {report.run_id})")
    return ExitCode.OK
