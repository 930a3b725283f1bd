"""Which drive is which: a configured drive (``[drives.NAME]``) with every default resolved,
looked up by name or by the UUID of its LUKS header (or of its filesystem, for
``unlock = "none"``), and the lock resource it is written under."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phobos.config.model import Config
from phobos.config.schema import suggest
from phobos.config.secrets import KEYFILE_SUFFIX, drive_header_backup
from phobos.core import locks
from phobos.core.locks import Resource
from phobos.errors import UsageError


@dataclass(frozen=True, slots=True, kw_only=True)
class Drive:
    """A configured drive with every default resolved."""

    name: str
    uuid: str  # LUKS header UUID (or the filesystem's, for unlock = "none")
    label: str
    unlock: str
    keyfile: Path | None
    header_backup: Path
    mountpoint: Path
    max_age: float

    @property
    def mapping(self) -> str:
        """The device-mapper name while unlocked: ``/dev/mapper/phobos-NAME``."""
        return f"phobos-{self.name}"

    @property
    def resource(self) -> Resource:
        return locks.drive(self.name)


def default_keyfile(config: Config, name: str) -> Path:
    return config.paths.keys / f"{name}{KEYFILE_SUFFIX}"


def default_header_backup(config: Config, name: str) -> Path:
    return drive_header_backup(config, name)


def default_mountpoint(config: Config, name: str) -> Path:
    return config.paths.run / "drives" / name


def get(config: Config, name: str) -> Drive:
    """The drive ``name``; UsageError naming the known ones if there is none."""
    if name not in config.drives:
        known = ", ".join(sorted(config.drives)) or "none"
        raise UsageError(f"no drive named {name!r}{suggest(name, config.drives)}",
                         f"drives in {config.source}: {known}")
    cfg = config.drives[name]
    return Drive(
        name=name, uuid=cfg.luks_uuid, label=cfg.label, unlock=cfg.unlock,
        keyfile=None if cfg.unlock == "none" else (cfg.keyfile or default_keyfile(config, name)),
        header_backup=default_header_backup(config, name),
        mountpoint=cfg.mountpoint or default_mountpoint(config, name), max_age=cfg.max_age)


def all_drives(config: Config) -> list[Drive]:
    return [get(config, name) for name in sorted(config.drives)]


def by_uuid(config: Config, uuid: str) -> Drive | None:
    """The configured drive whose UUID is ``uuid`` (case-insensitive), or None."""
    for drive in all_drives(config):
        if drive.uuid.lower() == uuid.strip().lower():
            return drive
    return None
