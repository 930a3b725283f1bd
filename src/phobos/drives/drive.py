"""Off-site drives: identity, unlocking, mounting inside the namespace, release, rotation
state, and preparing a new drive (``phobos drive init``).

A drive is named in the config (``[drives.NAME]``) and recognised by the UUID of its LUKS
header. Unlocking goes through the narrow :class:`Unlocker` interface, chosen by the
drive's ``unlock`` setting: :class:`CryptsetupUnlocker` (``cryptsetup open --key-file``,
needs device-mapper) or :class:`PlainUnlocker` for ``unlock = "none"``, where the device
holds the filesystem directly (drives encrypted elsewhere, and tests on hosts without
device-mapper).

Rotation state (when each drive was last synced, attach/ignore events) lives in
``STATE/drives.json``, updated under a flock by whichever phobos process needs to.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from phobos import namespace
from phobos.config.model import Config
from phobos.config.schema import suggest
from phobos.core import proc
from phobos.core.locks import LockSet, Resource
from phobos.core.model import BusyPolicy
from phobos.core.step import Step
from phobos.errors import Absent, PhobosError, StepFailed, UsageError
from phobos.namespace import Log, StepRunner, direct_runner
from phobos.tools import cryptsetup
from phobos.tools import mount as mnt

STATE_FILE = "drives.json"
MAX_EVENTS = 200
MAX_SYNCS = 50
UMOUNT_PATIENCE = 15.0  # seconds: killed writers need a moment to let go of the drive
KEY_BYTES = 4096
MIN_PASSPHRASE = 8


# --- identity --------------------------------------------------------------------------------


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
        return Resource(f"drive:{self.name}", write=True)


def default_keyfile(config: Config, name: str) -> Path:
    return config.paths.keys / f"{name}.key"


def default_header_backup(config: Config, name: str) -> Path:
    return config.paths.keys / f"{name}.luks-header"


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
    device = locate(drive.uuid)
    if device is None:
        raise Absent(f"drive {drive.name} (UUID {drive.uuid}) is not plugged in",
                     "plug it in, or see `phobos drive list`")
    return device


# --- unlocking ---------------------------------------------------------------------------------


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


# --- attaching and releasing --------------------------------------------------------------------


def probe(device: str) -> dict[str, str]:
    """``blkid -p`` of ``device`` (no cache): TYPE, LABEL, UUID...; empty if nothing found."""
    result = proc.run(mnt.blkid_probe(device), capture=True, check=False, ok_codes=(0, 2))
    values = mnt.parse_export(result.stdout) if result.returncode == 0 else {}
    values.pop("DEVNAME", None)
    return values


def check_filesystem(drive: Drive, device: str) -> None:
    """Refuse to mount anything but a filesystem labelled as the config says."""
    found = probe(device)
    if "TYPE" not in found:
        raise PhobosError(f"drive {drive.name}: no filesystem found on {device}",
                          "prepare the drive with `phobos drive init`")
    if found.get("LABEL", "") != drive.label:
        raise PhobosError(f"drive {drive.name}: the filesystem on {device} is labelled "
                          f"{found.get('LABEL', '')!r}, not {drive.label!r}; not mounting it",
                          f"if this is the right drive, set label in [drives.{drive.name}]")


def attach(drive: Drive, device: str, run: StepRunner, *, readonly: bool) -> Path:
    """Unlock and mount the drive at its mount point (inside the namespace: the caller
    has joined it). On failure the caller runs :func:`release`."""
    mapped = unlocker_for(drive).open(drive, device, run, readonly=readonly)
    check_filesystem(drive, mapped)
    drive.mountpoint.mkdir(parents=True, exist_ok=True)
    run(Step(name="mount", argv=mnt.mount(mapped, drive.mountpoint, readonly=readonly)))
    return drive.mountpoint


def is_mounted(drive: Drive) -> bool:
    return mnt.mounted_at(mnt.read_mountinfo(), drive.mountpoint) is not None


def release(drive: Drive, run: StepRunner, log: Log) -> list[str]:
    """Unmount (retrying while killed writers let go) and lock the drive. Idempotent;
    returns what it did."""
    done = []
    while is_mounted(drive):
        _umount_patiently(drive, run, log)
        done.append(f"unmounted {drive.mountpoint}")
    unlocker = unlocker_for(drive)
    if unlocker.is_open(drive):
        unlocker.close(drive, run)
        done.append(f"closed /dev/mapper/{drive.mapping}")
    return done


def _umount_patiently(drive: Drive, run: StepRunner, log: Log) -> None:
    deadline = time.monotonic() + UMOUNT_PATIENCE
    while True:
        try:
            run(Step(name="umount", argv=mnt.umount(drive.mountpoint)))
            return
        except StepFailed as exc:
            if not is_mounted(drive):
                return
            if time.monotonic() >= deadline:
                raise StepFailed(f"drive {drive.name} cannot be unmounted: {exc.message}",
                                 "something still uses it: see `phobos ns enter fuser -vm "
                                 f"{drive.mountpoint}`, stop it, then `phobos drive release "
                                 f"{drive.name}`") from None
            log(f"{drive.mountpoint} is busy; retrying")
            time.sleep(0.5)


@contextlib.contextmanager
def drive_lock(config: Config, drive: Drive, who: str) -> Iterator[None]:
    """Hold ``drive:NAME`` for a CLI verb; Busy (naming the holder) if a job has it."""
    locks = LockSet(config.paths.run / "locks", who, 0)
    locks.acquire([drive.resource], BusyPolicy.FAIL, 0.0)
    try:
        yield
    finally:
        locks.release()


def release_cli(config: Config, drive: Drive, log: Log) -> list[str]:
    """``phobos drive release``: after a run died (systemd's ExecStopPost=), stop what is
    left of it, then unmount and lock the drive. Refuses while a live run holds it."""
    from phobos.core.history import History

    history = History.open(config.paths.state)
    try:
        history.recover()  # kills leftover children (an orphaned rsync) of dead runs
    finally:
        history.close()
    run = direct_runner(log)
    with drive_lock(config, drive, "phobos drive release"):
        namespace.enter(config, run, create=False, mount_storage=False)
        done = release(drive, run, log)
    record_event(config, "released", drive.name, drive.uuid, "; ".join(done) or "nothing to do")
    return done


def mount_readonly(config: Config, drive: Drive, log: Log) -> Path:
    """``phobos drive mount``: unlock and mount read-only inside the namespace, to browse
    or restore. Left mounted until ``eject`` (or the next sync, which releases it)."""
    device = require_device(drive)
    run = direct_runner(log)
    with drive_lock(config, drive, "phobos drive mount"):
        namespace.enter(config, run)
        if is_mounted(drive):
            return drive.mountpoint
        try:
            attach(drive, device, run, readonly=True)
        except BaseException:
            release(drive, run, log)
            raise
    record_event(config, "mounted", drive.name, drive.uuid, "read-only")
    return drive.mountpoint


def eject(config: Config, drive: Drive, log: Log) -> list[str]:
    """Release the drive, then detach its disk from the kernel (as ``udisksctl power-off``
    does) so it can be pulled at once. Loop devices and the like are only released."""
    done = release_cli(config, drive, log)
    device = locate(drive.uuid)
    if device is not None:
        off = _power_off(device)
        if off:
            done.append(off)
    return done


def _power_off(device: str) -> str | None:
    st = os.stat(device)
    if not stat.S_ISBLK(st.st_mode):
        return None
    devno = _devno(st.st_rdev)
    real = _sysfs(devno).resolve()
    disk = real.parent if (real / "partition").exists() else real
    delete = disk / "device" / "delete"
    if not delete.exists():
        return None
    if _disks_under(devno) & system_disks():
        raise UsageError(f"{device} is on the system disk; not powering it off")
    os.sync()
    delete.write_text("1")
    return f"powered off {disk.name}"


def borg_key_exports(config: Config, drive: Drive, log: Log) -> dict[str, str]:
    """``borg key export --paper`` of every encrypted repo copied to ``drive``, for the
    recovery sheet (the export is itself encrypted by the Borg passphrase)."""
    from phobos.jobs.drive_sync import DriveSyncJob, borg_env

    if config.storage.device is not None:  # the repo lives on the hidden storage
        namespace.enter(config, direct_runner(log))
    exports = {}
    for job in config.jobs.values():
        if not isinstance(job, DriveSyncJob) or drive.name not in job.drives:
            continue
        repo = config.repos[job.repo]
        if repo.encryption == "none" or job.repo in exports:
            continue
        result = proc.run(("borg", "key", "export", "--paper", str(repo.path)),
                          env=borg_env(repo), capture=True, check=False)
        exports[job.repo] = (result.stdout if result.returncode == 0 else
                             f"(borg key export failed: {proc.describe_exit(result.returncode)})")
    return exports


# --- state ---------------------------------------------------------------------------------------


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
    with _updating(config) as data:
        entry = data["drives"].setdefault(name, {})
        entry.update(facts)
        entry["initialised"] = time.time()
        data["events"].append({"at": time.time(), "event": "initialised", "drive": name,
                               "uuid": facts.get("uuid"), "detail": str(facts.get("device"))})


# --- rotation --------------------------------------------------------------------------------


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

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "uuid": self.uuid, "unlock": self.unlock,
                "last_sync": self.last_sync, "age": self.age, "max_age": self.max_age,
                "overdue": self.overdue, "attached": self.attached, "device": self.device,
                "due_next": self.due_next, "jobs": list(self.jobs)}


def rotation_sets(config: Config) -> dict[str, tuple[str, ...]]:
    """Job name -> the drives it rotates through (its ``drives`` list)."""
    from phobos.jobs.drive_sync import DriveSyncJob

    return {name: job.drives for name, job in sorted(config.jobs.items())
            if isinstance(job, DriveSyncJob)}


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
            jobs=tuple(job for job, members in sets.items() if drive.name in members)))
    return statuses


def overdue_drives(config: Config, now: float | None = None) -> list[DriveStatus]:
    """Drives not synced within their ``max_age`` (or never): for ``phobos status`` and
    the overdue notifiers. Reads state only; probes no devices."""
    return [s for s in rotation(config, now=now, probe_devices=False) if s.overdue]


# --- preparing a new drive -------------------------------------------------------------------


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


def inspect_device(path: str) -> DeviceInfo:
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


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _disks_under(devno: str) -> set[str]:
    """The whole disks a device lives on (through partitions and dm/md slaves)."""
    sysfs = _sysfs(devno)
    if not sysfs.exists():
        return {devno}
    real = sysfs.resolve()
    slaves = [s for s in (real / "slaves").glob("*")] if (real / "slaves").is_dir() else []
    if slaves:
        return set().union(*(_disks_under(_read(s / "dev")) for s in slaves))
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
    return set().union(*(_disks_under(d) for d in devnos)) if devnos else set()


def _in_use(info: DeviceInfo, config: Config) -> str | None:
    """Where the device (or a partition of it) is mounted or held, or None."""
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


def refuse_unsafe(info: DeviceInfo, config: Config, *, force: bool) -> None:
    """Refuse the system disk and anything in use, always; anything holding data,
    unless ``force``. Reads only: it runs before anything is written."""
    if info.block:
        assert info.devno is not None
        if _disks_under(info.devno) & system_disks():
            raise UsageError(f"{info.path} is (on) the disk holding the running system; "
                             "refusing to touch it", "name the external drive, e.g. /dev/sdX")
        busy = _in_use(info, config)
        if busy:
            raise UsageError(f"{info.path} is {busy}; refusing to format it",
                             "unmount or close it first, and check it is the right device")
    if (info.signatures or info.children) and not force:
        raise UsageError(f"{info.path} holds data; refusing to destroy it\n  "
                         + "\n  ".join(info.describe()[1:]),
                         "check with `lsblk -f` that it is the right device, then add --force")


@dataclass(frozen=True, slots=True, kw_only=True)
class InitRequest:
    device: str
    name: str
    unlock: str = "luks"
    label: str = "extbackup"
    force: bool = False
    pbkdf_iterations: int | None = None  # None: cryptsetup's benchmarked Argon2id


@dataclass(frozen=True, slots=True, kw_only=True)
class InitResult:
    drive: Drive
    fs_uuid: str


def write_keyfile(path: Path, *, force: bool) -> None:
    """A fresh random keyfile, mode 0400, in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        if not force:
            raise UsageError(f"{path} already exists; refusing to replace a drive key",
                             "a drive with this name was prepared before: pick another name, "
                             "or add --force to re-create it")
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
    try:
        os.write(fd, os.urandom(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)


def check_passphrase(passphrase: str | None) -> str:
    """The recovery passphrase, or UsageError explaining why a drive needs one."""
    if not passphrase:
        raise UsageError(
            "refusing to prepare a drive without a recovery passphrase: the keyfile lives on "
            "the NAS, so if the NAS is lost (fire, theft, a dead disk) an off-site drive "
            "without a passphrase slot can never be opened again",
            "run again and enter a passphrase (keep it somewhere other than the NAS), "
            "or give --passphrase-file")
    if len(passphrase) < MIN_PASSPHRASE:
        raise UsageError(f"the recovery passphrase is shorter than {MIN_PASSPHRASE} characters",
                         "use a longer one: it alone protects the drive off-site")
    return passphrase


def init_luks(drive: Drive, device: str, passphrase: str, run: StepRunner, *,
              pbkdf: tuple[str, ...] = (), force: bool = False) -> str:
    """LUKS2 format with the keyfile, add and test the passphrase slot, test the keyfile,
    back up the header (off the drive). Returns the LUKS UUID. No device-mapper needed."""
    assert drive.keyfile is not None
    line = (passphrase + "\n").encode()
    run(Step(name="luks-format", argv=cryptsetup.luks_format(
        device, drive.keyfile, label=f"phobos-{drive.name}", pbkdf=pbkdf),
        explain=cryptsetup.explain))
    run(Step(name="add-passphrase", argv=cryptsetup.add_passphrase(device, drive.keyfile,
                                                                   pbkdf=pbkdf),
             stdin=line, secrets=(passphrase,), explain=cryptsetup.explain))
    run(Step(name="test-passphrase", argv=cryptsetup.test_passphrase(device), stdin=line,
             secrets=(passphrase,), explain=cryptsetup.explain))
    run(Step(name="test-keyfile", argv=cryptsetup.test_passphrase(device, drive.keyfile),
             explain=cryptsetup.explain))
    if drive.header_backup.exists() and force:
        drive.header_backup.chmod(0o600)
        drive.header_backup.unlink()
    run(Step(name="header-backup", argv=cryptsetup.header_backup(device, drive.header_backup),
             explain=cryptsetup.explain))
    drive.header_backup.chmod(0o400)
    result = run(Step(name="luks-uuid", argv=cryptsetup.luks_uuid(device), capture=True))
    return result.stdout.strip()


def make_filesystem(drive: Drive, device: str, run: StepRunner) -> str:
    """Unlock, ``mkfs.ext4 -L label``, lock again. Returns the filesystem UUID."""
    unlocker = unlocker_for(drive)
    mapped = unlocker.open(drive, device, run)
    try:
        run(Step(name="mkfs", argv=mnt.mkfs_ext4(mapped, drive.label, force=True)))
        return probe(mapped).get("UUID", "")
    finally:
        unlocker.close(drive, run)


def init_drive(config: Config, request: InitRequest, passphrase: str | None,
               run: StepRunner) -> InitResult:
    """The seed's preparation steps in one go (checks and confirmation are the caller's:
    :func:`inspect_device`, :func:`refuse_unsafe`). Registers the drive in the state."""
    drive = Drive(name=request.name, uuid="", label=request.label, unlock=request.unlock,
                  keyfile=None if request.unlock == "none" else
                  default_keyfile(config, request.name),
                  header_backup=default_header_backup(config, request.name),
                  mountpoint=default_mountpoint(config, request.name), max_age=35 * 86400.0)
    if drive.keyfile is None:
        fs_uuid = make_filesystem(drive, request.device, run)
        drive = _with_uuid(drive, fs_uuid)
    else:
        secret = check_passphrase(passphrase)
        write_keyfile(drive.keyfile, force=request.force)
        uuid = init_luks(drive, request.device, secret, run, force=request.force,
                         pbkdf=cryptsetup.pbkdf_options(request.pbkdf_iterations))
        drive = _with_uuid(drive, uuid)
        fs_uuid = _filesystem_or_explain(drive, request.device, run)
    record_init(config, drive.name, {
        "uuid": drive.uuid, "fs_uuid": fs_uuid, "unlock": drive.unlock, "label": drive.label,
        "keyfile": None if drive.keyfile is None else str(drive.keyfile),
        "header_backup": None if drive.keyfile is None else str(drive.header_backup),
        "device": request.device})
    return InitResult(drive=drive, fs_uuid=fs_uuid)


def _with_uuid(drive: Drive, uuid: str) -> Drive:
    from dataclasses import replace

    return replace(drive, uuid=uuid)


def _filesystem_or_explain(drive: Drive, device: str, run: StepRunner) -> str:
    try:
        return make_filesystem(drive, device, run)
    except PhobosError as exc:
        raise PhobosError(
            f"the LUKS header is written (UUID {drive.uuid}; keyfile {drive.keyfile}, header "
            f"backup {drive.header_backup}) but creating the filesystem inside failed: "
            f"{exc.message}", "fix the cause (cryptsetup open needs device-mapper: "
            "`modprobe dm_crypt`) and run the same `phobos drive init ... --force` again"
        ) from None


def snippet(drive: Drive) -> str:
    """The ``[drives.NAME]`` table to paste into the config."""
    lines = [f"[drives.{drive.name}]", f'luks_uuid = "{drive.uuid}"']
    if drive.keyfile is None:
        lines.append('unlock = "none"')
    else:
        lines.append(f'keyfile = "{drive.keyfile}"')
    lines.append(f'label = "{drive.label}"')
    return "\n".join(lines)

