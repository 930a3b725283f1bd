"""`phobos doctor` (check this machine, or its remote-unlock setup) and `phobos unlock
HOST` (unlock the NAS at boot from an admin's machine). Output only; the work is in
:mod:`phobos.doctor` and :mod:`phobos.unlock`."""

from __future__ import annotations

import argparse
import getpass
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phobos.cli.common import decide_pin, json_flag, print_json, verb
from phobos.errors import UsageError
from phobos.unlock.defaults import DEFAULT_PORT

DOCTOR_EXIT_CODES = """exit codes:
  0   nothing is wrong (warnings, if any, are printed but pass)
  1   at least one error (with --strict: or a warning)
  2   bad command line
"""

UNLOCK_EXIT_CODES = """exit codes:
  0   unlocked (or nothing was left to unlock)
  1   not unlocked: unreachable, host key not pinned or changed, login refused,
      wrong passphrase, no cryptroot-unlock (the message says which)
  2   bad command line, or no way to ask for the passphrase
"""


def register(verbs: Any) -> None:
    """Add the `doctor` and `unlock` verbs to the top-level parser's ``verbs``."""
    doctor = verb(verbs, "doctor", "check this machine: tools, config, key and "
                  "passphrase files, Borg key export, drives, units, namespace, LED, "
                  "notifiers, clock; say what is wrong and how to fix it", cmd_doctor)
    _epilog(doctor, DOCTOR_EXIT_CODES)
    doctor.add_argument("--initramfs", action="store_true",
                        help="check the remote-unlock setup instead (dropbear-initramfs, "
                        "authorized_keys, host keys, DROPBEAR_OPTIONS, network in the "
                        "initramfs, /etc/crypttab); needs no phobos config")
    doctor.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    doctor.add_argument("--root", type=Path, default=Path("/"),
                        help="read the files of another root file system (an image, a "
                        "chroot) for --initramfs and the installed units (default /)")
    doctor.add_argument("--no-network", action="store_true",
                        help="do not try to connect to the SMTP server")
    json_flag(doctor)
    _add_unlock(verbs)


def _epilog(sub: argparse.ArgumentParser, text: str) -> None:
    """The exit-code table as written; the description wrapped by hand (the raw
    formatter keeps the table's layout, and would not wrap the description either)."""
    sub.epilog = text
    sub.description = textwrap.fill(sub.description or "", 79)
    sub.formatter_class = argparse.RawDescriptionHelpFormatter


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


def _add_unlock(verbs: Any) -> None:
    sub: argparse.ArgumentParser = verb(
        verbs, "unlock", "unlock the NAS's encrypted disks at boot from this machine: ssh "
        "to its initramfs (dropbear), run cryptroot-unlock and send the passphrase on "
        "stdin (never on a command line); --pin first pins the initramfs's own host key",
        cmd_unlock)
    _epilog(sub, UNLOCK_EXIT_CODES)
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


# --- doctor -------------------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    from phobos.config.load import config_path
    from phobos.doctor.findings import counts, exit_code, guarded

    root: Path = args.root
    if not root.is_absolute() or not root.is_dir():
        raise UsageError(f"--root {root}: not an existing absolute directory")
    if args.initramfs:
        from phobos.doctor.initramfs import initramfs_findings

        findings = guarded("initramfs", lambda: initramfs_findings(root))
        subject = f"remote unlock setup of {root}"
    else:
        from phobos.doctor.collect import check_machine
        from phobos.doctor.options import Options

        opts = Options(root=root, executable=_program(), probe_network=not args.no_network)
        source = config_path(args.config)
        findings = check_machine(source, opts)
        subject = f"this machine, config {source}"
    code = int(exit_code(findings, strict=args.strict))
    if args.json:
        print_json({"subject": subject, "exit_code": code,
                     "counts": counts(findings),
                     "findings": [f.as_json() for f in findings]})
    else:
        print(render(subject, findings, code))
    return code


def _program() -> Path | None:
    """The phobos program `phobos systemd install` would put into the units."""
    from phobos.cli.common import this_program

    try:
        return this_program()
    except UsageError:
        return None


LABELS = {"ok": "ok", "warning": "WARN", "error": "ERROR"}


def render(subject: str, findings: Sequence[Any], code: int) -> str:
    """Findings grouped by area: severity, what was checked, message, then the fix."""
    from phobos.doctor.findings import areas, counts

    width = min(28, max((len(f.check) for f in findings), default=8))
    lines = [f"phobos doctor: {subject}"]
    for area, group in areas(findings):
        lines.append(f"\n{area}")
        for finding in group:
            label = LABELS[str(finding.severity)]
            first, *more = finding.message.splitlines() or [""]
            lines.append(f"  {label:<5}  {finding.check:<{width}}  {first}")
            pad = " " * (11 + width)
            lines += [f"{pad}{line}" for line in more]
            if finding.fix:
                word = "tip" if label == "ok" else "fix"
                lines.append(f"{pad}{word}: {finding.fix}")
    found = counts(findings)
    lines.append(f"\n{_plural(found['error'], 'error')}, "
                 f"{_plural(found['warning'], 'warning')}, {found['ok']} ok (exit {code})")
    return "\n".join(lines)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


# --- unlock -------------------------------------------------------------------------------


def _target(args: argparse.Namespace) -> Any:
    from phobos.unlock.client import Initramfs, default_known_hosts

    return Initramfs(host=args.host, port=args.port, user=args.user,
                     known_hosts=args.known_hosts or default_known_hosts(),
                     identity=args.identity, alias=args.alias or "")


def cmd_unlock(args: argparse.Namespace) -> int:
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
    return 0


def _passphrase(args: argparse.Namespace, target: Any) -> str:
    """From --passphrase-command, or asked on the terminal (never echoed, never logged)."""
    from phobos.unlock.client import passphrase_from_command

    if args.passphrase_command:
        return passphrase_from_command(args.passphrase_command)
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the passphrase on",
                         "give --passphrase-command CMD (its first output line is used)")
    return getpass.getpass(f"Passphrase for {target.host} (sent to its initramfs): ")


def _pin(args: argparse.Namespace, target: Any) -> int:
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
    return 0


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
