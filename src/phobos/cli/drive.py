"""`phobos drive ...`: prepare, list, attach, release, eject, mount off-site drives and
print their recovery sheets. Output and prompts only; the work is in :mod:`phobos.drives`."""

from __future__ import annotations

import argparse
import getpass
import re
import sys
from pathlib import Path
from typing import Any

from phobos.cli.common import (
    config_names,
    json_flag,
    load_config,
    no_action,
    print_json,
    table,
    verb,
    when,
)
from phobos.core.console import say
from phobos.errors import ExitCode, UsageError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def register(verbs: Any) -> None:
    """Add the `drive` verb and its actions to the top-level parser's ``verbs``."""
    drive = verb(verbs, "drive", "off-site drives: init, attached, release, list, eject, "
                 "mount, sheet", no_action)
    actions = drive.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add_drive_init(actions)
    _add_drive_misc(actions)


def _add_drive_init(actions: Any) -> None:
    sub = verb(actions, "init", "prepare a new off-site drive: LUKS2 with a keyfile and a "
               "recovery passphrase, header backup, labelled filesystem (DESTROYS its data)",
               cmd_drive_init)
    sub.add_argument("device", help="the drive's block device (or an image file)")
    sub.add_argument("--name", required=True, help="the drive's name in phobos, e.g. ext-a")
    sub.add_argument("--unlock", choices=["luks", "none"], default="luks",
                     help="luks (default), or none: plain filesystem, for drives encrypted "
                     "elsewhere and for tests")
    sub.add_argument("--label", default="extbackup", help="filesystem label (default "
                     "extbackup)")
    sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    sub.add_argument("--force", action="store_true",
                     help="overwrite a device holding a filesystem, and an earlier keyfile")
    sub.add_argument("--passphrase-file", type=Path, metavar="FILE",
                     help="read the recovery passphrase from the first line of FILE")
    sub.add_argument("--pbkdf-iterations", type=int, metavar="N",
                     help="PBKDF2 with exactly N iterations instead of the benchmarked "
                     "Argon2id (fast; for tests: it weakens the passphrase slot)")


def _add_drive_misc(actions: Any) -> None:
    sub = verb(actions, "attached", "a drive appeared (udev/systemd/daemon entry point): "
               "the drive-sync jobs that use it sync this drive; unknown drives are ignored",
               cmd_drive_attached)
    sub.add_argument("--uuid", required=True, help="the LUKS header UUID of the device")
    sub.add_argument("-q", "--quiet", action="store_true", help="do not echo the job's log")
    sub = verb(actions, "release", "unmount and lock a drive after a run died "
               "(for systemd's ExecStopPost=)", cmd_drive_release)
    config_names(sub.add_argument("name", nargs="?", help="drive name"), "drives")
    sub.add_argument("--uuid", help="identify the drive by UUID instead")
    json_flag(verb(actions, "list", "rotation: last sync, age, attached, due next",
               cmd_drive_list))
    sub = verb(actions, "eject", "unmount, lock and power off a drive: safe to remove",
               cmd_drive_eject)
    config_names(sub.add_argument("name", help="drive name"), "drives")
    sub = verb(actions, "mount", "mount a drive read-only inside the namespace, to "
               "browse or restore", cmd_drive_mount)
    config_names(sub.add_argument("name", help="drive name"), "drives")
    sub = verb(actions, "sheet", "print the drive's recovery sheet", cmd_drive_sheet)
    config_names(sub.add_argument("name", help="drive name"), "drives")
    sub.add_argument("--borg-key", action="store_true",
                     help="include `borg key export --paper` of each repository copied")


# --- drive init --------------------------------------------------------------------------------


def cmd_drive_init(args: argparse.Namespace) -> ExitCode:
    from phobos.core.proc import direct_runner
    from phobos.drives.devices import inspect_device
    from phobos.drives.init import InitRequest, init_drive, refuse_unsafe, snippet
    from phobos.drives.sheet import render_sheet

    config = load_config(args)
    if not _NAME.match(args.name):
        raise UsageError(f"{args.name!r} is not a valid drive name",
                         "use letters, digits, '.', '_' and '-', starting with a letter or digit")
    info = inspect_device(args.device)
    refuse_unsafe(info, config, force=args.force)
    _confirm_destroy(info, args)
    passphrase = _passphrase(args) if args.unlock == "luks" else None
    request = InitRequest(device=args.device, name=args.name, unlock=args.unlock,
                          label=args.label, force=args.force,
                          pbkdf_iterations=args.pbkdf_iterations)
    result = init_drive(config, request, passphrase, direct_runner(say))
    print(f"drive {args.name} is ready. Add this to {config.source}:\n")
    print(snippet(result.drive))
    print()
    print(render_sheet(config, result.drive, fs_uuid=result.fs_uuid))
    return ExitCode.OK


def _confirm_destroy(info: Any, args: argparse.Namespace) -> None:
    say("phobos drive init will DESTROY everything on:")
    for line in info.describe():
        say(f"  {line}")
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"refusing to destroy {info.path} without confirmation",
                         "run it on a terminal, or add --yes in scripts")
    answer = input(f"Type the drive name ({args.name}) to go ahead: ")
    if answer.strip() != args.name:
        raise UsageError("not confirmed; nothing was written")


def _passphrase(args: argparse.Namespace) -> str:
    from phobos.drives.init import check_passphrase

    if args.passphrase_file is not None:
        try:
            text = args.passphrase_file.read_text()
        except OSError as exc:
            raise UsageError(f"{args.passphrase_file}: {exc.strerror}") from None
        return check_passphrase(text.splitlines()[0] if text else "")
    if not sys.stdin.isatty():
        return check_passphrase(None)
    say("The recovery passphrase opens the drive when the NAS (and its keyfile) is gone.")
    first = getpass.getpass(f"Recovery passphrase for {args.name} (empty to decline): ")
    check_passphrase(first)
    if getpass.getpass("Again: ") != first:
        raise UsageError("the two passphrases differ; nothing was written")
    return first


# --- attached, release, list, eject, mount ---------------------------------------------------


def cmd_drive_attached(args: argparse.Namespace) -> ExitCode:
    from phobos.core.model import Trigger, format_duration
    from phobos.core.runner import run_job
    from phobos.drives.identity import by_uuid
    from phobos.drives.rotation import rotation_sets
    from phobos.drives.state import record_event

    config = load_config(args)
    drive = by_uuid(config, args.uuid)
    if drive is None:
        message = f"ignoring device with UUID {args.uuid}: not a drive in {config.source}"
        say(f"phobos: {message}")
        record_event(config, "ignored", None, args.uuid, message)
        return ExitCode.OK
    record_event(config, "attached", drive.name, drive.uuid)
    jobs = [job for job, members in rotation_sets(config).items()
            if drive.name in members]
    if not jobs:
        say(f"phobos: drive {drive.name} is attached, but no drive-sync job lists it")
        return ExitCode.OK
    worst = ExitCode.OK
    for job in jobs:
        report = run_job(config, job, Trigger.DEVICE, echo=None if args.quiet else say,
                         only_drive=drive.name)
        tail = f": {report.message}" if report.message else ""
        print(f"{job}: {report.outcome} in {format_duration(report.duration)} "
              f"(run {report.run_id}){tail}")
        worst = max(worst, report.exit_code)
    return worst


def _pick(config: Any, args: argparse.Namespace) -> Any:
    from phobos.drives.identity import by_uuid, get

    if args.uuid:
        drive = by_uuid(config, args.uuid)
        if drive is None:
            raise UsageError(f"no drive in {config.source} has UUID {args.uuid}")
        return drive
    if not args.name:
        raise UsageError("name a drive, or give --uuid")
    return get(config, args.name)


def cmd_drive_release(args: argparse.Namespace) -> ExitCode:
    from phobos.drives.attach import release_cli

    config = load_config(args)
    drive = _pick(config, args)
    done = release_cli(config, drive, say)
    print(f"drive {drive.name}: " + ("; ".join(done) if done else
                                     "nothing was mounted or unlocked"))
    return ExitCode.OK


def cmd_drive_list(args: argparse.Namespace) -> ExitCode:
    from phobos.core.model import format_duration
    from phobos.drives.rotation import rotation

    config = load_config(args)
    statuses = rotation(config)
    if args.json:
        print_json({"drives": [s.as_json() for s in statuses]})
        return ExitCode.OK
    if not statuses:
        print("no drives configured; prepare one with `phobos drive init`")
        return ExitCode.OK
    rows = [[s.name, when(s.last_sync), format_duration(s.age) if s.age is not None else
             "never", "yes" if s.attached else "no",
             ("OVERDUE" if s.overdue else "ok") + (", due next" if s.due_next else ""),
             _drill(s.last_drill), ",".join(s.jobs) or "-"] for s in statuses]
    print(table(["DRIVE", "LAST SYNC", "AGE", "ATTACHED", "STATE", "LAST DRILL", "JOBS"],
                rows))
    return ExitCode.OK


def _drill(last: dict[str, Any] | None) -> str:
    """``2026-11-29 03:00 ok`` / ``... 2 MISMATCHES``: a drill job's last read of the copy."""
    if not last:
        return "never"
    verdict = "ok" if last.get("ok") else f"{last.get('mismatches')} MISMATCHES"
    return f"{when(last.get('at'))} {verdict}"


def cmd_drive_eject(args: argparse.Namespace) -> ExitCode:
    from phobos.drives.attach import eject
    from phobos.drives.identity import get

    config = load_config(args)
    drive = get(config, args.name)
    for line in eject(config, drive, say):
        say(f"drive {drive.name}: {line}")
    print(f"drive {drive.name}: safe to remove")
    return ExitCode.OK


def cmd_drive_mount(args: argparse.Namespace) -> ExitCode:
    from phobos.drives.attach import mount_readonly
    from phobos.drives.identity import get

    config = load_config(args)
    drive = get(config, args.name)
    mountpoint = mount_readonly(config, drive, say)
    print(f"drive {drive.name} is mounted read-only at {mountpoint}, inside the backup "
          f"namespace only.\n  browse:  phobos ns enter ls {mountpoint}\n"
          f"  restore: phobos restore PATH --to DIR --from-drive {drive.name}\n"
          f"  shell:   phobos ns enter\n  done:    phobos drive eject {drive.name}")
    return ExitCode.OK


# --- recovery sheet -------------------------------------------------------------------------------


def cmd_drive_sheet(args: argparse.Namespace) -> ExitCode:
    from phobos.drives.identity import get
    from phobos.drives.sheet import borg_key_exports, render_sheet

    config = load_config(args)
    drive = get(config, args.name)
    keys = borg_key_exports(config, drive, say) if args.borg_key else {}
    print(render_sheet(config, drive, borg_keys=keys))
    return ExitCode.OK
