"""`phobos doctor`: check this machine (or, with --initramfs, its remote-unlock setup) and
say what is wrong and how to fix it. Output only; the work is in :mod:`phobos.doctor`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phobos.cli.common import exit_codes_epilog, json_flag, print_json, verb
from phobos.errors import ExitCode, UsageError

DOCTOR_EXIT_CODES = """exit codes:
  0   nothing is wrong (warnings, if any, are printed but pass)
  1   at least one error (with --strict: or a warning)
  2   bad command line
"""

def register(verbs: Any) -> None:
    """Add the `doctor` verb to the top-level parser's ``verbs``."""
    doctor = verb(verbs, "doctor", "check this machine: tools, config, key and "
                  "passphrase files, Borg key export, drives, units, namespace, LED, "
                  "notifiers, clock; say what is wrong and how to fix it", cmd_doctor)
    exit_codes_epilog(doctor, DOCTOR_EXIT_CODES)
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


def cmd_doctor(args: argparse.Namespace) -> ExitCode:
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
    code = exit_code(findings, strict=args.strict)
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


