"""Installing phobos's systemd units: write what :mod:`phobos.systemd.units` renders, enable
timers and drive units, and remove exactly what phobos installed.

A manifest (``STATE/systemd-installed.json``) records every file phobos wrote with the
SHA-256 of its content, so ``uninstall`` removes those files and nothing else, and a
file edited by hand since is kept and reported instead of being overwritten or lost.
Without a running systemd (or with ``--root``) units are enabled offline with
``systemctl --root``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from phobos.config.model import Config
from phobos.core.files import write_atomic
from phobos.systemd.errors import SystemdError
from phobos.systemd.names import UDEV_RULES
from phobos.systemd.sandbox import required_directories
from phobos.systemd.units import Target, render

UNIT_DIR = Path("/etc/systemd/system")
UDEV_DIR = Path("/etc/udev/rules.d")
MANIFEST = "systemd-installed.json"  # in the state directory


@dataclass(frozen=True, slots=True, kw_only=True)
class Installed:
    """One file phobos installed: where (absolute, inside the root), the SHA-256 of what
    it wrote, its unit name (None for the udev rules) and whether it was enabled."""

    path: str
    sha256: str
    unit: str | None
    enable: bool


def manifest_path(config: Config, root: Path = Path("/")) -> Path:
    return _under(root, config.paths.state / MANIFEST)


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to("/")


def read_manifest(config: Config, root: Path = Path("/")) -> list[Installed] | None:
    """What the last ``install`` into ``root`` wrote, or None if nothing is installed."""
    path = manifest_path(config, root)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Installed(path=f["path"], sha256=f["sha256"], unit=f["unit"],
                          enable=bool(f["enable"])) for f in data["files"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemdError(f"{path}: unreadable install manifest: {exc}",
                           "remove the phobos-* units by hand, then delete this file"
                           ) from None


def _write_manifest(config: Config, root: Path, files: Sequence[Installed]) -> None:
    data = {"version": 1, "files": [{"path": f.path, "sha256": f.sha256, "unit": f.unit,
                                     "enable": f.enable} for f in files]}
    write_atomic(manifest_path(config, root), json.dumps(data, indent=2) + "\n", mode=0o600,
                 parents=True)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def plan_files(config: Config, target: Target) -> list[tuple[Installed, str]]:
    """Where each rendered file is installed and whether it gets enabled: timers, and
    drive services when the device unit triggers them. The udev rules are installed
    only with ``drive_trigger = "udev"``."""
    planned: list[tuple[Installed, str]] = []
    udev = config.systemd.drive_trigger == "udev"
    for name, text in render(config, target).items():
        if name == UDEV_RULES:
            if udev:
                planned.append((Installed(path=str(UDEV_DIR / name), sha256=_sha(text),
                                          unit=None, enable=False), text))
            continue
        enable = name.endswith(".timer") or (name.startswith("phobos-drive-") and not udev)
        planned.append((Installed(path=str(UNIT_DIR / name), sha256=_sha(text), unit=name,
                                  enable=enable), text))
    return planned


def booted(root: Path) -> bool:
    """Whether ``root`` is the running system and systemd is its init (sd_booted())."""
    return root == Path("/") and Path("/run/systemd/system").is_dir()


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """What install/uninstall did. ``kept``: files edited by hand since phobos wrote
    them, left in place. ``live``: systemd was running and was told (reload, start)."""

    written: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    enabled: tuple[str, ...] = ()
    live: bool = False


def install(config: Config, target: Target, root: Path = Path("/")) -> Report:
    """Write the files under ``root``; remove what a previous install wrote that the
    config no longer has; create the directories the units need; reload systemd, enable
    (and start) the timers, enable device-triggered drive services; record it all in the
    manifest. Without a running systemd (or with another root) units are only enabled,
    offline, with ``systemctl --root``."""
    planned = plan_files(config, target)
    keep = {item.path for item, _ in planned}
    stale = [f for f in read_manifest(config, root) or () if f.path not in keep]
    live = booted(root)
    _systemctl(root, live, "disable", *[f.unit for f in stale if f.unit and f.enable])
    removed, kept = _remove_files(root, stale)
    written: list[str] = []
    unchanged: list[str] = []
    for item, text in planned:
        dest = _under(root, Path(item.path))
        if dest.is_file() and dest.read_text(encoding="utf-8") == text:
            unchanged.append(item.path)
        else:
            write_atomic(dest, text, parents=True)
            written.append(item.path)
    for directory in required_directories(config):
        _under(root, directory).mkdir(parents=True, exist_ok=True)
    # Edited leftovers stay listed: uninstall reports them again.
    _write_manifest(config, root, [*(item for item, _ in planned),
                                   *(f for f in stale if f.path in kept)])
    _reload(live, udev=any(f.unit is None for f in [*stale, *(i for i, _ in planned)]))
    enabled = [item.unit for item, _ in planned if item.unit and item.enable]
    _systemctl(root, live, "enable", *enabled)
    return Report(written=tuple(written), unchanged=tuple(unchanged), removed=removed,
                  kept=kept, enabled=tuple(enabled), live=live)


def _remove_files(root: Path, files: Iterable[Installed]
                  ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Remove files phobos wrote: (removed, kept because edited since)."""
    removed: list[str] = []
    kept: list[str] = []
    for item in files:
        dest = _under(root, Path(item.path))
        try:
            if _sha(dest.read_text(encoding="utf-8")) != item.sha256:
                kept.append(item.path)
                continue
            dest.unlink()
        except FileNotFoundError:
            pass
        removed.append(item.path)
    return tuple(removed), tuple(kept)


def _systemctl(root: Path, live: bool, verb: str, *units: str) -> None:
    """``systemctl VERB UNITS``: timers with ``--now`` (started/stopped at once) when
    systemd runs; other units only (never start or stop a sync); offline with
    ``--root`` otherwise."""
    from phobos.core import proc

    if not live:
        if units:
            proc.run(["systemctl", f"--root={root}", verb, *units], timeout=120)
        return
    timers = [u for u in units if u.endswith(".timer")]
    others = [u for u in units if not u.endswith(".timer")]
    for group, extra in ((timers, ["--now"]), (others, [])):
        if group:
            proc.run(["systemctl", verb, *extra, *group], timeout=120)


def _reload(live: bool, udev: bool) -> None:
    from phobos.core import proc

    if not live:
        return
    proc.run(["systemctl", "daemon-reload"], timeout=120)
    if udev and Path("/run/udev/control").exists():
        proc.run(["udevadm", "control", "--reload"], timeout=60)


def uninstall(config: Config, root: Path = Path("/")) -> Report:
    """Disable (stopping timers) and remove exactly what the manifest lists, then clear
    the failed state of those units (a failed unit stays listed until reset); nothing
    else. Running job services are left to finish."""
    from phobos.core import proc

    files = read_manifest(config, root)
    live = booted(root)
    if files is None:
        return Report(live=live)
    _systemctl(root, live, "disable", *[f.unit for f in files if f.unit and f.enable])
    removed, kept = _remove_files(root, files)
    _reload(live, udev=any(f.unit is None for f in files))
    if live:
        patterns = [f.unit.replace("@.", "@*.") for f in files if f.unit]
        # Fails when none of them is loaded: nothing to reset then.
        proc.run(["systemctl", "reset-failed", *patterns], timeout=60, check=False)
    if kept:
        _write_manifest(config, root, [f for f in files if f.path in kept])
    else:
        manifest_path(config, root).unlink(missing_ok=True)
    return Report(removed=removed, kept=kept, live=live)


@dataclass(frozen=True, slots=True, kw_only=True)
class Listed:
    path: str
    unit: str | None
    state: str  # installed | outdated | modified | missing


def listing(config: Config, target: Target, root: Path = Path("/")) -> list[Listed]:
    """The installed files and whether each still matches what phobos would write now:
    ``outdated`` (the config changed: run install), ``modified`` (edited by hand),
    ``missing`` (deleted by hand)."""
    current = {item.path: item.sha256 for item, _ in plan_files(config, target)}
    rows = []
    for item in read_manifest(config, root) or ():
        dest = _under(root, Path(item.path))
        if not dest.is_file():
            state = "missing"
        elif _sha(dest.read_text(encoding="utf-8")) != item.sha256:
            state = "modified"
        elif current.get(item.path) != item.sha256:
            state = "outdated"
        else:
            state = "installed"
        rows.append(Listed(path=item.path, unit=item.unit, state=state))
    return rows
