"""Preparing a new drive (``phobos drive init``): refusing devices that are unsafe to
format, a fresh keyfile, LUKS2 with a recovery passphrase slot and a header backup, the
labelled filesystem inside, and the ``[drives.NAME]`` table to paste into the config."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from phobos.config.model import Config
from phobos.core.proc import StepRunner
from phobos.core.step import Step
from phobos.drives.devices import DeviceInfo, disks_under, in_use, probe, system_disks
from phobos.drives.identity import (
    Drive,
    default_header_backup,
    default_keyfile,
    default_mountpoint,
)
from phobos.drives.state import record_init
from phobos.drives.unlockers import unlocker_for
from phobos.errors import PhobosError, UsageError
from phobos.tools import cryptsetup
from phobos.tools import mount as mnt

KEY_BYTES = 4096
MIN_PASSPHRASE = 8


def refuse_unsafe(info: DeviceInfo, config: Config, *, force: bool) -> None:
    """Refuse the system disk and anything in use, always; anything holding data,
    unless ``force``. Reads only: it runs before anything is written."""
    if info.block:
        assert info.devno is not None
        if disks_under(info.devno) & system_disks():
            raise UsageError(f"{info.path} is (on) the disk holding the running system; "
                             "refusing to touch it", "name the external drive, e.g. /dev/sdX")
        busy = in_use(info, config)
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
    """Every preparation step of a new drive in one go (checks and confirmation are the
    caller's: :func:`phobos.drives.devices.inspect_device`, :func:`refuse_unsafe`).
    Registers the drive in the state."""
    drive = Drive(name=request.name, uuid="", label=request.label, unlock=request.unlock,
                  keyfile=None if request.unlock == "none" else
                  default_keyfile(config, request.name),
                  header_backup=default_header_backup(config, request.name),
                  mountpoint=default_mountpoint(config, request.name), max_age=35 * 86400.0)
    if drive.keyfile is None:
        fs_uuid = make_filesystem(drive, request.device, run)
        drive = replace(drive, uuid=fs_uuid)
    else:
        secret = check_passphrase(passphrase)
        write_keyfile(drive.keyfile, force=request.force)
        uuid = init_luks(drive, request.device, secret, run, force=request.force,
                         pbkdf=cryptsetup.pbkdf_options(request.pbkdf_iterations))
        drive = replace(drive, uuid=uuid)
        fs_uuid = _filesystem_or_explain(drive, request.device, run)
    record_init(config, drive.name, {
        "uuid": drive.uuid, "fs_uuid": fs_uuid, "unlock": drive.unlock, "label": drive.label,
        "keyfile": None if drive.keyfile is None else str(drive.keyfile),
        "header_backup": None if drive.keyfile is None else str(drive.header_backup),
        "device": request.device})
    return InitResult(drive=drive, fs_uuid=fs_uuid)


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
