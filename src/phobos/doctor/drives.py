"""Doctor check area ``drives``: each LUKS drive has a recovery passphrase slot besides
its keyfile, and a header backup."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from phobos.config.model import Config
from phobos.core import proc
from phobos.doctor.findings import Finding, error, ok, warning
from phobos.tools import cryptsetup


def keyslots(device: str) -> list[int]:
    """The active key slots of the LUKS ``device`` (asks cryptsetup)."""
    result = proc.run(cryptsetup.luks_dump(device), capture=True,
                      explain=cryptsetup.explain, timeout=60)
    return cryptsetup.parse_keyslots(result.stdout)


def drive_findings(config: Config, *, probe: bool = True) -> list[Finding]:
    """Per LUKS drive: a recovery passphrase slot besides the keyfile, and a header
    backup. A plugged-in drive is asked (luksDump); otherwise what `phobos drive init`
    recorded counts."""
    from phobos.drives.devices import locate
    from phobos.drives.identity import all_drives
    from phobos.drives.state import load_state

    state = load_state(config).get("drives", {})
    findings = []
    for drive in all_drives(config):
        if drive.keyfile is None:
            findings.append(ok("drives", f"drive {drive.name}", "unlock = \"none\": not "
                               "encrypted by phobos, no key slots to check"))
            continue
        facts = state.get(drive.name, {})
        device = locate(drive.uuid) if probe else None
        findings.append(_slot_finding(f"drive {drive.name} slots", device, facts))
        findings.append(_header_finding(f"drive {drive.name} header", drive.header_backup,
                                        device))
    return findings


def _slot_finding(check: str, device: str | None, facts: dict[str, Any]) -> Finding:
    if device is not None:
        slots = keyslots(device)
        if len(slots) >= 2:
            return ok("drives", check, f"{device}: {len(slots)} key slots "
                      f"({', '.join(map(str, slots))}): keyfile and recovery passphrase")
        return error("drives", check, f"{device}: only {len(slots)} key slot: when the NAS "
                     "(and its keyfile) is lost, this drive cannot be opened",
                     f"add a recovery passphrase: cryptsetup luksAddKey --key-file KEYFILE "
                     f"{device}")
    if facts.get("initialised"):
        when = time.strftime("%Y-%m-%d", time.localtime(float(facts["initialised"])))
        return ok("drives", check, f"prepared by `phobos drive init` on {when} (keyfile "
                  "and recovery passphrase slots)")
    return warning("drives", check, "not known to have a recovery passphrase slot: not "
                   "prepared with `phobos drive init`, and not plugged in to look",
                   "plug it in and run `phobos doctor` again")


def _header_finding(check: str, backup: Path, device: str | None) -> Finding:
    if backup.is_file():
        return ok("drives", check, f"LUKS header backup at {backup}")
    dev = device or "DEVICE"
    return warning("drives", check, f"no LUKS header backup at {backup}: a damaged header "
                   "makes the drive unreadable, even with the right key",
                   f"cryptsetup luksHeaderBackup {dev} --header-backup-file {backup}; "
                   "chmod 0400 it and keep a copy off the NAS")
