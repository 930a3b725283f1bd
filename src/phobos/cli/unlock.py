"""`phobos unlock HOST`: unlock the NAS's encrypted disks at boot from an admin's machine
(ssh to its initramfs, run cryptroot-unlock, send the passphrase on stdin), and pin the
initramfs's own host key. Output and prompts only; the work is in :mod:`phobos.unlock`."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phobos.cli.common import decide_pin, exit_codes_epilog, json_flag, print_json, verb
from phobos.errors import ExitCode, UsageError
from phobos.unlock.defaults import DEFAULT_PORT

UNLOCK_EXIT_CODES = """exit codes:
  0   unlocked (or nothing was left to unlock)
  1   not unlocked: unreachable, host key not pinned or changed, login refused,
      wrong passphrase, no cryptroot-unlock (the message says which)
  2   bad command line, or no way to ask for the passphrase
"""


def register(verbs: Any) -> None:
    """Add the `unlock` verb to the top-level parser's ``verbs``."""
    sub: argparse.ArgumentParser = verb(
        verbs, "unlock", "unlock the NAS's encrypted disks at boot from this machine: ssh "
        "to its initramfs (dropbear), run cryptroot-unlock and send the passphrase on "
        "stdin (never on a command line); --pin first pins the initramfs's own host key",
        cmd_unlock)
    exit_codes_epilog(sub, UNLOCK_EXIT_CODES)
    sub.add_argument("host", help="the NAS's address (DNS name or IP) during boot")
    sub.add_argument("--port", type=_port, default=DEFAULT_PORT,
                     help="dropbear's port (-p in DROPBEAR_OPTIONS; "
                     f"default {DEFAULT_PORT})")
    sub.add_argument("--user", default="root", help="login (default root)")
    sub.add_argument("--known-hosts", type=Path, metavar="FILE",
                     help="where the initramfs's host key is pinned (default "
                     "~/.config/phobos/initramfs_known_hosts)")
    sub.add_argument("--alias", metavar="NAME",
                     help="the name its key is pinned under (default HOST-initramfs)")
    sub.add_argument("--identity", type=Path, metavar="KEY",
                     help="ssh private key (default: ssh's own choice and the agent)")
    sub.add_argument("--passphrase-command", metavar="CMD",
                     help="run CMD (no shell) and use the first line it prints, e.g. "
                     "'pass show nas/luks'; default: ask on the terminal")
    sub.add_argument("--timeout", type=_seconds, default=120.0, metavar="SECONDS",
                     help="give up after this many seconds (default 120)")
    sub.add_argument("--pin", action="store_true",
                     help="only pin the host key the initramfs offers (after showing it); "
                     "run while the NAS waits for its passphrase")
    sub.add_argument("--yes", action="store_true",
                     help="with --pin: pin without asking (check the fingerprint first!)")
    sub.add_argument("--fingerprint", metavar="SHA256:...",
                     help="with --pin: pin only if the initramfs offers this key "
                     "(`phobos doctor --initramfs` on the NAS prints it)")
    json_flag(sub)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("must be 1-65535")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _target(args: argparse.Namespace) -> Any:
    from phobos.unlock.client import Initramfs, default_known_hosts

    return Initramfs(host=args.host, port=args.port, user=args.user,
                     known_hosts=args.known_hosts or default_known_hosts(),
                     identity=args.identity, alias=args.alias or "")


def cmd_unlock(args: argparse.Namespace) -> ExitCode:
    from phobos.unlock.client import require_pinned, unlock

    target = _target(args)
    if args.pin:
        return _pin(args, target)
    if args.yes or args.fingerprint:
        raise UsageError("--yes and --fingerprint go with --pin")
    require_pinned(target)
    passphrase = _passphrase(args, target)

    def echo(line: str) -> None:
        print(f"{target.host}: {line}", file=sys.stderr)

    result = unlock(target, passphrase, echo=None if args.json else echo,
                           timeout=args.timeout)
    if args.json:
        print_json(result.as_json())
    elif result.nothing_left:
        print(f"{target.host}: nothing was waiting to be unlocked (already unlocked?)")
    else:
        print(f"{target.host}: unlocked {', '.join(result.unlocked)}; the NAS boots on")
    return ExitCode.OK


def _passphrase(args: argparse.Namespace, target: Any) -> str:
    """From --passphrase-command, or asked on the terminal (never echoed, never logged)."""
    from phobos.unlock.client import passphrase_from_command

    if args.passphrase_command:
        return passphrase_from_command(args.passphrase_command)
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the passphrase on",
                         "give --passphrase-command CMD (its first output line is used)")
    return getpass.getpass(f"Passphrase for {target.host} (sent to its initramfs): ")


def _pin(args: argparse.Namespace, target: Any) -> ExitCode:
    from phobos.unlock.pinning import pin

    result = pin(target, _confirmer(args, target))
    if args.json:
        print_json(result.as_json())
    elif result.changed:
        shown = ", ".join(k.describe() for k in result.offered)
        print(f"pinned the initramfs host key of {target.host} as {target.alias} in "
              f"{target.known_hosts}: {shown}")
    else:
        print(f"the initramfs of {target.host} still offers the pinned key; nothing changed")
    return ExitCode.OK


def _confirmer(args: argparse.Namespace, target: Any) -> Any:
    """--fingerprint must match, --yes accepts, else ask on a terminal (shown on stderr)."""
    from phobos.tools.ssh import HostKey

    def confirm(new: Sequence[HostKey], old: Sequence[HostKey]) -> bool:
        err = sys.stderr
        if old:
            print(f"The initramfs host key of {target.host} has CHANGED. Pinned:", file=err)
            for key in old:
                print(f"  {key.describe()}", file=err)
            print("It now offers:", file=err)
        else:
            print(f"The initramfs of {target.host} ({target.where}) offers:", file=err)
        for key in new:
            print(f"  {key.describe()}", file=err)
        print("Compare with `phobos doctor --initramfs` run on the NAS itself.", file=err)
        return decide_pin(
            args, {k.fingerprint for k in new},
            missing=f"the initramfs of {target.host} does not offer "
            f"{args.fingerprint}; nothing was pinned",
            missing_hint="someone may be in between, or the fingerprint is of "
            "another key (the system's, not the initramfs's)",
            no_tty_hint="add --fingerprint SHA256:... (from `phobos doctor "
            "--initramfs` on the NAS) or --yes",
            question=f"Pin this key for the initramfs of {target.host}?")

    return confirm
