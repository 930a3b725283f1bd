"""Block devices as the kernel shows them: finding a drive's device by UUID (low-level
probes only), what a device holds (``blkid -p``, sysfs), which disks hold the running
system, whether a device is in use, and powering a disk off. Reads only, but for
:func:`power_off`."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from phobos import namespace
from phobos.config.model import Config
from phobos.core import proc
from phobos.drives.identity import Drive
from phobos.errors import Absent, UsageError
from phobos.tools import mount as mnt

# --- finding a drive --------------------------------------------------------------------------


def probe(device: str) -> dict[str, str]:
    """``blkid -p`` of ``device`` (no cache): TYPE, LABEL, UUID...; empty if nothing found."""
    result = proc.run(mnt.blkid_probe(device), capture=True, check=False, ok_codes=(0, 2))
    values = mnt.parse_export(result.stdout) if result.returncode == 0 else {}
    values.pop("DEVNAME", None)
    return values


def locate(uuid: str) -> str | None:
    """The block device holding ``uuid`` now, or None.

    Only a low-level probe (``blkid -p``) of the device itself is trusted: a udev by-uuid
    link may lag behind a swap of drives, and ``blkid -U`` was seen answering with the
    previous occupant of a re-used loop device. Phobos must never take one drive for
    another."""
    link = Path("/dev/disk/by-uuid") / uuid
    if link.exists() and _uuid_of(str(link.resolve())) == uuid.lower():
        return str(link.resolve())
    return scan_devices().get(uuid.lower())


def block_devices() -> list[str]:
    """Every block device with a medium (size > 0): disks, partitions, loop, dm..."""
    found = []
    for entry in sorted(Path("/sys/class/block").iterdir()):
        node = Path("/dev") / entry.name
        if _read(entry / "size") not in ("", "0") and node.exists():
            found.append(str(node))
    return found


def scan_devices() -> dict[str, str]:
    """UUID (lower case) -> device, from probing every block device."""
    found: dict[str, str] = {}
    for device in block_devices():
        uuid = _uuid_of(device)
        if uuid:
            found.setdefault(uuid, device)
    return found


def _uuid_of(device: str) -> str:
    return probe(device).get("UUID", "").lower()


def require_device(drive: Drive) -> str:
    """The device of ``drive``; Absent if it is not plugged in."""
    device = locate(drive.uuid)
    if device is None:
        raise Absent(f"drive {drive.name} (UUID {drive.uuid}) is not plugged in",
                     "plug it in, or see `phobos drive list`")
    return device


# --- what a device is and holds -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """What ``drive init`` is about to destroy."""

    path: str
    block: bool
    devno: str | None
    size: int
    model: str
    signatures: Mapping[str, str]
    children: tuple[str, ...]

    def describe(self) -> list[str]:
        kind = "block device" if self.block else "image file"
        lines = [f"{self.path}: {kind}, {self.size / 1e9:.1f} GB"
                 + (f", model {self.model}" if self.model else "")]
        if self.signatures:
            shown = " ".join(f"{k}={v}" for k, v in sorted(self.signatures.items())
                             if k in ("TYPE", "LABEL", "UUID", "PTTYPE", "VERSION"))
            lines.append(f"  holds: {shown}")
        lines += [f"  partition: {child}" for child in self.children]
        if not self.signatures and not self.children:
            lines.append("  holds: nothing phobos can recognise (no filesystem, no LUKS)")
        return lines


def _sysfs(devno: str) -> Path:
    return Path("/sys/dev/block") / devno


def _devno(rdev: int) -> str:
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def inspect_device(path: str) -> DeviceInfo:
    """What ``path`` (a block device or an image file) is and holds; UsageError for
    anything else."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}", "name the drive's device, e.g. /dev/sdX"
                         ) from None
    if stat.S_ISBLK(st.st_mode):
        devno = _devno(st.st_rdev)
        sysfs = _sysfs(devno)
        size = int(_read(sysfs / "size") or 0) * 512
        children = tuple(sorted(p.name for p in sysfs.resolve().iterdir()
                                if (p / "partition").exists()))
        model = _read(sysfs / "device" / "model")
        return DeviceInfo(path=path, block=True, devno=devno, size=size, model=model,
                          signatures=probe(path), children=children)
    if stat.S_ISREG(st.st_mode):
        return DeviceInfo(path=path, block=False, devno=None, size=st.st_size, model="",
                          signatures=probe(path), children=())
    raise UsageError(f"{path} is neither a block device nor an image file")


# --- the running system's disks, and devices in use -------------------------------------------


def disks_under(devno: str) -> set[str]:
    """The whole disks (``MAJOR:MINOR``) a device lives on (through partitions and dm/md
    slaves)."""
    sysfs = _sysfs(devno)
    if not sysfs.exists():
        return {devno}
    real = sysfs.resolve()
    slaves = [s for s in (real / "slaves").glob("*")] if (real / "slaves").is_dir() else []
    if slaves:
        return set().union(*(disks_under(_read(s / "dev")) for s in slaves))
    if (real / "partition").exists():
        return {_read(real.parent / "dev")}
    return {devno}


def system_disks() -> set[str]:
    """Disks holding the running system: /, /boot, /usr, /var, /etc and swap."""
    devnos = set()
    entries = mnt.read_mountinfo()
    for point in ("/", "/boot", "/boot/efi", "/usr", "/var", "/etc"):
        with contextlib.suppress(OSError):
            devnos.add(_devno(os.stat(point).st_dev))
        entry = mnt.mounted_at(entries, point)
        if entry is not None and entry.source.startswith("/dev/"):
            with contextlib.suppress(OSError):
                devnos.add(_devno(os.stat(entry.source).st_rdev))
    for line in _read(Path("/proc/swaps")).splitlines()[1:]:
        with contextlib.suppress(OSError, IndexError):
            devnos.add(_devno(os.stat(line.split()[0]).st_rdev))
    return set().union(*(disks_under(d) for d in devnos)) if devnos else set()


def in_use(info: DeviceInfo, config: Config) -> str | None:
    """Where the block device ``info`` (or a partition of it) is mounted, here or inside
    the backup namespace, or what holds it open; None if nothing does."""
    assert info.devno is not None
    real = _sysfs(info.devno).resolve()
    devnos = {info.devno} | {_read(real / c / "dev") for c in info.children}
    views = [("", mnt.read_mountinfo())]
    ns = namespace.of(config)
    if namespace.is_alive(ns):
        with namespace.visiting(ns):
            views.append((" inside the backup namespace", mnt.read_mountinfo()))
    for where, entries in views:
        for entry in entries:
            if entry.devno in devnos:
                return f"mounted at {entry.mountpoint}{where}"
    for sysdir in [real, *(real / c for c in info.children)]:
        holders = sorted(p.name for p in (sysdir / "holders").glob("*"))
        if holders:
            return f"in use by {', '.join(holders)} (an open LUKS mapping, LVM or RAID)"
    return None


def power_off(device: str) -> str | None:
    """Detach the disk holding ``device`` from the kernel (as ``udisksctl power-off``
    does), so it can be pulled at once; returns what it did, or None for devices that
    cannot be detached (loop devices, image files). Refuses the system disk."""
    st = os.stat(device)
    if not stat.S_ISBLK(st.st_mode):
        return None
    devno = _devno(st.st_rdev)
    real = _sysfs(devno).resolve()
    disk = real.parent if (real / "partition").exists() else real
    delete = disk / "device" / "delete"
    if not delete.exists():
        return None
    if disks_under(devno) & system_disks():
        raise UsageError(f"{device} is on the system disk; not powering it off")
    os.sync()
    delete.write_text("1")
    return f"powered off {disk.name}"
