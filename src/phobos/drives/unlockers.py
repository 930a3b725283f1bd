"""Unlocking a drive: the narrow :class:`Unlocker` interface, chosen by the drive's
``unlock`` setting. :class:`CryptsetupUnlocker` (``cryptsetup open --key-file``, needs
device-mapper), or :class:`PlainUnlocker` for ``unlock = "none"``, where the device holds
the filesystem directly (drives encrypted elsewhere, and tests on hosts without
device-mapper)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from phobos.core.proc import StepRunner
from phobos.core.step import Step
from phobos.drives.identity import Drive
from phobos.errors import PhobosError
from phobos.tools import cryptsetup


class Unlocker(Protocol):
    """Turns a drive's device into the block device holding its filesystem, and back."""

    def open(self, drive: Drive, device: str, run: StepRunner, *,
             readonly: bool = False) -> str:
        """Unlock ``device``; returns the block device holding the filesystem."""
        ...

    def close(self, drive: Drive, run: StepRunner) -> None:
        """Lock the drive again (no-op if it is not unlocked)."""
        ...

    def is_open(self, drive: Drive) -> bool: ...


@dataclass(frozen=True, slots=True)
class CryptsetupUnlocker:
    """LUKS via ``cryptsetup open --key-file`` (needs device-mapper)."""

    def open(self, drive: Drive, device: str, run: StepRunner, *,
             readonly: bool = False) -> str:
        if drive.keyfile is None or not drive.keyfile.is_file():
            raise PhobosError(f"drive {drive.name}: keyfile {drive.keyfile} is missing",
                              "restore it from your backup of the keys, or unlock by hand "
                              "with the recovery passphrase (see `phobos drive sheet`)")
        run(Step(name="unlock", argv=cryptsetup.open_mapping(device, drive.mapping,
                                                             drive.keyfile, readonly=readonly),
                 explain=cryptsetup.explain))
        return str(cryptsetup.mapper_path(drive.mapping))

    def close(self, drive: Drive, run: StepRunner) -> None:
        if self.is_open(drive):
            run(Step(name="lock", argv=cryptsetup.close_mapping(drive.mapping),
                     explain=cryptsetup.explain))

    def is_open(self, drive: Drive) -> bool:
        return cryptsetup.mapper_path(drive.mapping).exists()


@dataclass(frozen=True, slots=True)
class PlainUnlocker:
    """``unlock = "none"``: the device already is the filesystem."""

    def open(self, drive: Drive, device: str, run: StepRunner, *,
             readonly: bool = False) -> str:
        return device

    def close(self, drive: Drive, run: StepRunner) -> None:
        return None

    def is_open(self, drive: Drive) -> bool:
        return False


def unlocker_for(drive: Drive) -> Unlocker:
    return PlainUnlocker() if drive.unlock == "none" else CryptsetupUnlocker()
