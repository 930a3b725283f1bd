"""Watching for registered drives appearing, for ``phobos daemon`` (no systemd).

Uses pyudev's netlink monitor on udev events (not kernel ones: only udev's events carry
``ID_FS_UUID``). A block device whose UUID is a registered drive's LUKS UUID is handed
to ``on_attach``; every other device is ignored without being touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from phobos.config.model import Config


class Watcher(Protocol):
    def stop(self) -> None: ...


def watch_drives(config: Config, on_attach: Callable[[str], None],
                 say: Callable[[str], None]) -> Watcher | None:
    """Start watching in a background thread; None when there is nothing to watch."""
    uuids = {drive.luks_uuid.lower() for drive in config.drives.values()}
    if not uuids:
        return None
    try:
        import pyudev
    except ImportError:
        say("phobos daemon: pyudev is not installed: drives are not watched "
            "(install python3-pyudev, or use the systemd units)")
        return None
    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context, source="udev")
    monitor.filter_by("block")

    def event(action: str, device: Any) -> None:
        uuid = (device.get("ID_FS_UUID") or "").lower()
        if action == "add" and uuid in uuids:
            say(f"drive {uuid} appeared as {device.device_node}")
            on_attach(uuid)

    observer = pyudev.MonitorObserver(monitor, event)
    observer.start()
    say(f"phobos daemon: watching for {len(uuids)} drive(s)")
    return observer  # type: ignore[no-any-return]
