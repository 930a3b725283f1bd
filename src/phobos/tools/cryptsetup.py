"""argv builders for cryptsetup (LUKS2), the meaning of its exit codes, and how to read
its ``luksDump`` (the active key slots).

Contract: every argv builder returns an argv tuple and never a secret. Keys reach cryptsetup
as a *path* (``--key-file FILE``); a passphrase reaches it on stdin, one line: without
``--key-file`` for the new/tested key and with stdin not a terminal, cryptsetup reads the
passphrase up to the first newline, which is exactly what a human types at the prompt
during a recovery.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

CRYPTSETUP = "cryptsetup"

# cryptsetup(8) "RETURN CODES".
_EXIT_MEANINGS = {
    1: "wrong parameters",
    2: "no permission (bad passphrase or key)",
    3: "out of memory",
    4: "wrong device specified",
    5: "device already exists or device is busy",
}


def explain(code: int) -> str:
    """The documented meaning of cryptsetup's exit ``code`` (empty if unknown)."""
    return _EXIT_MEANINGS.get(code, "")


def pbkdf_options(iterations: int | None) -> tuple[str, ...]:
    """Key-derivation options: cryptsetup's benchmarked default (Argon2id) for None,
    else PBKDF2 with exactly ``iterations`` (fast: for tests and very slow machines)."""
    if iterations is None:
        return ()
    return ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", str(iterations))


def luks_format(device: str, keyfile: Path, *, label: str | None = None,
                pbkdf: Sequence[str] = ()) -> tuple[str, ...]:
    """Format ``device`` as LUKS2 with ``keyfile`` in slot 0 (``--batch-mode``: phobos has
    already asked for confirmation)."""
    argv = [CRYPTSETUP, "luksFormat", "--type", "luks2", "--batch-mode",
            "--key-file", str(keyfile), *pbkdf]
    if label:
        argv += ["--label", label]
    return (*argv, "--", device)


def add_passphrase(device: str, keyfile: Path, *, pbkdf: Sequence[str] = ()) -> tuple[str, ...]:
    """Add a passphrase slot, authorised by ``keyfile``; the passphrase comes on stdin."""
    return (CRYPTSETUP, "luksAddKey", "--batch-mode", "--key-file", str(keyfile), *pbkdf,
            "--", device)


def test_passphrase(device: str, keyfile: Path | None = None) -> tuple[str, ...]:
    """Check that a key opens ``device`` without creating a mapping (no device-mapper
    needed). Without ``keyfile`` the passphrase is read from stdin."""
    key = ("--key-file", str(keyfile)) if keyfile is not None else ()
    return (CRYPTSETUP, "open", "--test-passphrase", "--batch-mode", *key, "--", device)


def header_backup(device: str, backup: Path) -> tuple[str, ...]:
    """Save the LUKS header (refused by cryptsetup if ``backup`` exists)."""
    return (CRYPTSETUP, "luksHeaderBackup", "--header-backup-file", str(backup), "--", device)


def luks_dump(device: str) -> tuple[str, ...]:
    """The LUKS header in words (no secret: the key slots' metadata only)."""
    return (CRYPTSETUP, "luksDump", "--", device)


_LUKS1_SLOT = re.compile(r"^Key Slot (\d+): ENABLED")
_LUKS2_SLOT = re.compile(r"^  (\d+): luks2")


def parse_keyslots(dump: str) -> list[int]:
    """Active key slots from :func:`luks_dump`'s output (LUKS2 "Keyslots:" section, or
    LUKS1 "Key Slot N: ENABLED" lines)."""
    slots: list[int] = []
    in_section = False
    for line in dump.splitlines():
        luks1 = _LUKS1_SLOT.match(line)
        if luks1:
            slots.append(int(luks1.group(1)))
        if re.match(r"^\S", line):
            in_section = line.startswith("Keyslots:")
            continue
        luks2 = _LUKS2_SLOT.match(line)
        if in_section and luks2:
            slots.append(int(luks2.group(1)))
    return slots


def luks_uuid(device: str) -> tuple[str, ...]:
    return (CRYPTSETUP, "luksUUID", "--", device)


def is_luks(device: str) -> tuple[str, ...]:
    """Exit 0 if ``device`` holds a LUKS header, 1 if not."""
    return (CRYPTSETUP, "isLuks", "--", device)


def open_mapping(device: str, mapping: str, keyfile: Path, *,
                 readonly: bool = False) -> tuple[str, ...]:
    """Unlock ``device`` as ``/dev/mapper/<mapping>`` (needs device-mapper)."""
    return (CRYPTSETUP, "open", "--type", "luks", *(("--readonly",) if readonly else ()),
            "--key-file", str(keyfile), "--", device, mapping)


def close_mapping(mapping: str) -> tuple[str, ...]:
    return (CRYPTSETUP, "close", "--", mapping)


def mapper_path(mapping: str) -> Path:
    return Path("/dev/mapper") / mapping
