"""The drives' record: when each drive was last synced and drilled, what ``drive init``
prepared, and the event log (attached, ignored, synced, released...), in
``STATE/drives.json``, updated under a flock by whichever phobos process needs to."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

from phobos.config.model import Config
from phobos.drives.identity import Drive
from phobos.errors import PhobosError

STATE_FILE = "drives.json"
MAX_EVENTS = 200
MAX_SYNCS = 50


def _empty_state() -> dict[str, Any]:
    return {"version": 1, "drives": {}, "events": []}


def load_state(config: Config) -> dict[str, Any]:
    """The drive state (a JSON document); empty if none was written yet."""
    try:
        data = json.loads((config.paths.state / STATE_FILE).read_text())
    except FileNotFoundError:
        return _empty_state()
    except (OSError, ValueError) as exc:
        raise PhobosError(f"cannot read {config.paths.state / STATE_FILE}: {exc}",
                          "fix or remove the file (it only holds rotation history)") from None
    return data if isinstance(data, dict) else _empty_state()


@contextlib.contextmanager
def _updating(config: Config) -> Iterator[dict[str, Any]]:
    """Read-modify-write of the state under a flock; written atomically."""
    path = config.paths.state / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = load_state(config)
        data.setdefault("drives", {})
        data.setdefault("events", [])
        yield data
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(path)
    finally:
        os.close(fd)


def record_event(config: Config, event: str, drive: str | None, uuid: str | None,
                 detail: str = "") -> None:
    """Append to the drive event log (attached, ignored, synced, released...)."""
    with _updating(config) as data:
        data["events"].append({"at": time.time(), "event": event, "drive": drive,
                               "uuid": uuid, "detail": detail})
        del data["events"][:-MAX_EVENTS]
        if drive is not None and event == "attached":
            data["drives"].setdefault(drive, {})["last_attached"] = time.time()


def record_sync(config: Config, drive: Drive, *, job: str, run_id: int,
                stats: Mapping[str, Any]) -> None:
    """A verified copy is on ``drive`` now: the fact rotation is about."""
    now = time.time()
    with _updating(config) as data:
        entry = data["drives"].setdefault(drive.name, {})
        entry["uuid"] = drive.uuid
        entry["last_sync"] = now
        syncs = entry.setdefault("syncs", [])
        syncs.append({"at": now, "job": job, "run_id": run_id, **stats})
        del syncs[:-MAX_SYNCS]
        data["events"].append({"at": now, "event": "synced", "drive": drive.name,
                               "uuid": drive.uuid, "detail": f"job {job}, run {run_id}"})
        del data["events"][:-MAX_EVENTS]


def record_init(config: Config, name: str, facts: Mapping[str, Any]) -> None:
    """``drive init`` prepared drive ``name``: keep what it made (UUIDs, key paths)."""
    with _updating(config) as data:
        entry = data["drives"].setdefault(name, {})
        entry.update(facts)
        entry["initialised"] = time.time()
        data["events"].append({"at": time.time(), "event": "initialised", "drive": name,
                               "uuid": facts.get("uuid"), "detail": str(facts.get("device"))})


def record_drill(config: Config, drive: str, *, job: str, run_id: int,
                 stats: Mapping[str, Any]) -> None:
    """A restore drill read the copy on ``drive``: keep its result (``drive list``)."""
    now = time.time()
    mismatches = int(stats.get("mismatches", 0))
    with _updating(config) as data:
        entry = data["drives"].setdefault(drive, {})
        entry["last_drill"] = {"at": now, "job": job, "run_id": run_id,
                               "ok": mismatches == 0, "archive": stats.get("archive"),
                               "files_checked": stats.get("files_checked", 0),
                               "mismatches": mismatches}
        data["events"].append({"at": now, "event": "drilled", "drive": drive, "uuid":
                               entry.get("uuid"), "detail": f"job {job}, run {run_id}, "
                               f"{mismatches} mismatches"})
        del data["events"][:-MAX_EVENTS]
