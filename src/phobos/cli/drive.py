"""`phobos ns ...` (the backup mount namespace) and `phobos drive ...` (off-site drives):
output and prompts only; the work is in :mod:`phobos.namespace` and :mod:`phobos.drives`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
from pathlib import Path
from typing import Any

from phobos.cli.common import json_flag as _json
from phobos.cli.common import load_config as _load
from phobos.cli.common import no_action as _help
from phobos.cli.common import print_json as _print_json
from phobos.cli.common import say as _say
from phobos.cli.common import verb as _action
from phobos.errors import ExitCode, UsageError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def register(verbs: Any) -> None:
    """Add the `ns` and `drive` verbs to the top-level parser's ``verbs``."""
    from phobos.cli.common import verb as _verb

    ns = _verb(verbs, "ns", "the backup mount namespace: create, status, enter, destroy",
               _help)
    _add_ns(ns.add_subparsers(dest="action", metavar="ACTION", required=True))
    drive = _verb(verbs, "drive", "off-site drives: init, attached, release, list, eject, "
                  "mount, sheet", _help)
    actions = drive.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add_drive_init(actions)
    _add_drive_misc(actions)


def _add_ns(actions: Any) -> None:
    _action(actions, "create", "create the namespace (idempotent) and mount [storage] "
            "device inside it", cmd_ns_create)
    _json(_action(actions, "status", "show the mounts only the namespace sees, and prove "
                  "they are invisible outside", cmd_ns_status))
    enter = _action(actions, "enter", "run a command (default: your shell) inside the "
                    "namespace", cmd_ns_enter)
    enter.add_argument("command", nargs=argparse.REMAINDER, help="command and arguments")
    destroy = _action(actions, "destroy", "unmount everything inside and drop the namespace",
                      cmd_ns_destroy)
    destroy.add_argument("--force", action="store_true", help="even while jobs hold locks")


def _add_drive_init(actions: Any) -> None:
    sub = _action(actions, "init", "prepare a new off-site drive: LUKS2 with a keyfile and a "
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
    sub = _action(actions, "attached", "a drive appeared (udev/systemd/daemon entry point): "
                  "run the drive-sync jobs that use it; unknown drives are ignored",
                  cmd_drive_attached)
    sub.add_argument("--uuid", required=True, help="the LUKS header UUID of the device")
    sub.add_argument("-q", "--quiet", action="store_true", help="do not echo the job's log")
    sub = _action(actions, "release", "unmount and lock a drive after a run died "
                  "(for systemd's ExecStopPost=)", cmd_drive_release)
    sub.add_argument("name", nargs="?", help="drive name")
    sub.add_argument("--uuid", help="identify the drive by UUID instead")
    _json(_action(actions, "list", "rotation: last sync, age, attached, due next",
                  cmd_drive_list))
    sub = _action(actions, "eject", "unmount, lock and power off a drive: safe to remove",
                  cmd_drive_eject)
    sub.add_argument("name", help="drive name")
    sub = _action(actions, "mount", "mount a drive read-only inside the namespace, to "
                  "browse or restore", cmd_drive_mount)
    sub.add_argument("name", help="drive name")
    sub = _action(actions, "sheet", "print the drive's recovery sheet", cmd_drive_sheet)
    sub.add_argument("name", help="drive name")
    sub.add_argument("--borg-key", action="store_true",
                     help="include `borg key export --paper` of each repository copied")


# --- ns --------------------------------------------------------------------------------------


def cmd_ns_create(args: argparse.Namespace) -> int:
    from phobos import namespace

    config = _load(args)
    ns = namespace.create(config, namespace.direct_runner(_say))
    print(f"backup namespace ready: {ns.file} (mnt:[{namespace.recorded_id(ns)}])")
    return 0


def cmd_ns_status(args: argparse.Namespace) -> int:
    from phobos import namespace

    status = namespace.status(_load(args))
    if args.json:
        _print_json({"file": str(status.file), "alive": status.alive, "id": status.ns_id,
                     "caller_inside": status.caller_inside,
                     "hidden": [_mount_json(m) for m in status.hidden],
                     "leaked": [_mount_json(m) for m in status.leaked],
                     "invisible_outside": status.alive and not status.leaked})
        return 0
    if not status.alive:
        print(f"no backup namespace ({status.file} is not bound); `phobos ns create` makes one")
        return int(ExitCode.SKIPPED)
    print(f"backup namespace {status.file} (mnt:[{status.ns_id}]): "
          f"{status.inside_count} mounts inside, {status.outside_count} outside")
    print(f"mounts only inside: {len(status.hidden)}")
    for entry in status.hidden:
        print(f"  {entry.mountpoint}  {entry.fstype} {entry.source}  outside: not mounted")
    verdict = "yes" if not status.leaked else "NO: " + ", ".join(m.mountpoint
                                                                 for m in status.leaked)
    print(f"invisible outside: {verdict}")
    return 0 if not status.leaked else int(ExitCode.FAILED)


def _mount_json(entry: Any) -> dict[str, str]:
    return {"mountpoint": entry.mountpoint, "fstype": entry.fstype, "source": entry.source,
            "devno": entry.devno}


def cmd_ns_enter(args: argparse.Namespace) -> int:
    from phobos import namespace

    argv = [a for a in args.command if a != "--"] or [os.environ.get("SHELL", "/bin/sh")]
    namespace.exec_inside(_load(args), argv)


def cmd_ns_destroy(args: argparse.Namespace) -> int:
    from phobos import namespace
    from phobos.core.locks import holders
    from phobos.drives.attach import release
    from phobos.drives.identity import all_drives

    config = _load(args)
    busy = holders(config.paths.run / "locks")
    if busy and not args.force:
        raise UsageError("jobs are running: " + "; ".join(f"{h.resource} by {h.describe()}"
                                                           for h in busy),
                         "wait for them, or add --force")
    run = namespace.direct_runner(_say)

    def release_all() -> None:
        for drive in all_drives(config):
            for line in release(drive, run, _say):
                _say(f"drive {drive.name}: {line}")

    existed = namespace.destroy(config, run, release_all)
    print("backup namespace dropped" if existed else "no backup namespace to drop")
    return 0


# --- drive init --------------------------------------------------------------------------------


def cmd_drive_init(args: argparse.Namespace) -> int:
    from phobos.drives.devices import inspect_device
    from phobos.drives.init import InitRequest, init_drive, refuse_unsafe, snippet
    from phobos.drives.sheet import render_sheet
    from phobos.namespace import direct_runner

    config = _load(args)
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
    result = init_drive(config, request, passphrase, direct_runner(_say))
    print(f"drive {args.name} is ready. Add this to {config.source}:\n")
    print(snippet(result.drive))
    print()
    print(render_sheet(config, result.drive, fs_uuid=result.fs_uuid))
    return 0


def _confirm_destroy(info: Any, args: argparse.Namespace) -> None:
    _say("phobos drive init will DESTROY everything on:")
    for line in info.describe():
        _say(f"  {line}")
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
    _say("The recovery passphrase opens the drive when the NAS (and its keyfile) is gone.")
    first = getpass.getpass(f"Recovery passphrase for {args.name} (empty to decline): ")
    check_passphrase(first)
    if getpass.getpass("Again: ") != first:
        raise UsageError("the two passphrases differ; nothing was written")
    return first


# --- attached, release, list, eject, mount ---------------------------------------------------


def cmd_drive_attached(args: argparse.Namespace) -> int:
    from phobos.core.model import Trigger, format_duration
    from phobos.core.runner import echo_stderr, run_job
    from phobos.drives.identity import by_uuid
    from phobos.drives.rotation import rotation_sets
    from phobos.drives.state import record_event

    config = _load(args)
    drive = by_uuid(config, args.uuid)
    if drive is None:
        message = f"ignoring device with UUID {args.uuid}: not a drive in {config.source}"
        _say(f"phobos: {message}")
        record_event(config, "ignored", None, args.uuid, message)
        return 0
    record_event(config, "attached", drive.name, drive.uuid)
    jobs = [job for job, members in rotation_sets(config).items()
            if drive.name in members]
    if not jobs:
        _say(f"phobos: drive {drive.name} is attached, but no drive-sync job lists it")
        return 0
    worst = 0
    for job in jobs:
        report = run_job(config, job, Trigger.DEVICE, echo=None if args.quiet else echo_stderr)
        tail = f": {report.message}" if report.message else ""
        print(f"{job}: {report.outcome} in {format_duration(report.duration)} "
              f"(run {report.run_id}){tail}")
        worst = max(worst, int(report.exit_code))
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


def cmd_drive_release(args: argparse.Namespace) -> int:
    from phobos.drives.attach import release_cli

    config = _load(args)
    drive = _pick(config, args)
    done = release_cli(config, drive, _say)
    print(f"drive {drive.name}: " + ("; ".join(done) if done else
                                     "nothing was mounted or unlocked"))
    return 0


def cmd_drive_list(args: argparse.Namespace) -> int:
    from phobos.cli.common import table, when
    from phobos.core.model import format_duration
    from phobos.drives.rotation import rotation

    config = _load(args)
    statuses = rotation(config)
    if args.json:
        _print_json({"drives": [s.as_json() for s in statuses]})
        return 0
    if not statuses:
        print("no drives configured; prepare one with `phobos drive init`")
        return 0
    rows = [[s.name, when(s.last_sync), format_duration(s.age) if s.age is not None else
             "never", "yes" if s.attached else "no",
             ("OVERDUE" if s.overdue else "ok") + (", due next" if s.due_next else ""),
             ",".join(s.jobs) or "-"] for s in statuses]
    print(table(["DRIVE", "LAST SYNC", "AGE", "ATTACHED", "STATE", "JOBS"], rows))
    return 0


def cmd_drive_eject(args: argparse.Namespace) -> int:
    from phobos.drives.attach import eject
    from phobos.drives.identity import get

    config = _load(args)
    drive = get(config, args.name)
    for line in eject(config, drive, _say):
        _say(f"drive {drive.name}: {line}")
    print(f"drive {drive.name}: safe to remove")
    return 0


def cmd_drive_mount(args: argparse.Namespace) -> int:
    from phobos.drives.attach import mount_readonly
    from phobos.drives.identity import get

    config = _load(args)
    drive = get(config, args.name)
    mountpoint = mount_readonly(config, drive, _say)
    print(f"drive {drive.name} is mounted read-only at {mountpoint}, inside the backup "
          f"namespace only.\n  browse:  phobos ns enter ls {mountpoint}\n"
          f"  Borg:    phobos ns enter borg --bypass-lock list {mountpoint}/REPO-DIR\n"
          f"  shell:   phobos ns enter\n  done:    phobos drive eject {drive.name}")
    return 0


# --- recovery sheet -------------------------------------------------------------------------------


def cmd_drive_sheet(args: argparse.Namespace) -> int:
    from phobos.drives.identity import get
    from phobos.drives.sheet import borg_key_exports, render_sheet

    config = _load(args)
    drive = get(config, args.name)
    keys = borg_key_exports(config, drive, _say) if args.borg_key else {}
    print(render_sheet(config, drive, borg_keys=keys))
    return 0
