"""Rotation: per drive, when it was last synced (and drilled), whether it is overdue (older than its
``max_age``, or never synced), whether it is plugged in, and whether it is the one due
next in a drive-sync job's set (the one whose copy is oldest)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from phobos.config.model import Config
from phobos.drives.contents import copiers
from phobos.drives.devices import scan_devices
from phobos.drives.identity import all_drives
from phobos.drives.state import load_state


@dataclass(frozen=True, slots=True, kw_only=True)
class DriveStatus:
    name: str
    uuid: str
    unlock: str
    last_sync: float | None
    age: float | None
    max_age: float
    overdue: bool
    attached: bool | None  # None: not probed
    device: str | None
    due_next: bool
    jobs: tuple[str, ...] = field(default=())
    last_drill: dict[str, Any] | None = None  # a drill job's read of the copy (from_drive)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "uuid": self.uuid, "unlock": self.unlock,
                "last_sync": self.last_sync, "age": self.age, "max_age": self.max_age,
                "overdue": self.overdue, "attached": self.attached, "device": self.device,
                "due_next": self.due_next, "jobs": list(self.jobs),
                "last_drill": self.last_drill}


def rotation_sets(config: Config) -> dict[str, tuple[str, ...]]:
    """Job name -> the drives it rotates through (its ``drives`` list)."""
    return {name: job.drives for name, job in copiers(config).items()}


def rotation(config: Config, *, now: float | None = None,
             probe_devices: bool = True) -> list[DriveStatus]:
    """Every configured drive: last sync, age, overdue (never synced counts), attached
    (if ``probe_devices``), and whether it is the one due next in a job's set (the one
    whose copy is oldest)."""
    now = time.time() if now is None else now
    state = load_state(config).get("drives", {})
    last = {name: state.get(name, {}).get("last_sync") for name in config.drives}
    sets = rotation_sets(config)
    present = scan_devices() if probe_devices else {}
    due = {min(members, key=lambda d: last.get(d) or float("-inf"))
           for members in sets.values() if members}
    statuses = []
    for drive in all_drives(config):
        synced = last.get(drive.name)
        age = None if synced is None else max(0.0, now - synced)
        device = present.get(drive.uuid.lower())
        statuses.append(DriveStatus(
            name=drive.name, uuid=drive.uuid, unlock=drive.unlock, last_sync=synced, age=age,
            max_age=drive.max_age, overdue=age is None or age > drive.max_age,
            attached=(device is not None) if probe_devices else None, device=device,
            due_next=drive.name in due,
            jobs=tuple(job for job, members in sets.items() if drive.name in members),
            last_drill=state.get(drive.name, {}).get("last_drill")))
    return statuses


def overdue_drives(config: Config, now: float | None = None) -> list[DriveStatus]:
    """Drives not synced within their ``max_age`` (or never): for ``phobos status`` and
    the overdue notifiers. Reads state only; probes no devices."""
    return [s for s in rotation(config, now=now, probe_devices=False) if s.overdue]
