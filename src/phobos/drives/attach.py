"""Attaching and releasing a drive: unlock and mount it inside the backup namespace, and
unmount (patiently) and lock it again; the ``phobos drive release``, ``mount`` and
``eject`` operations, each under the drive's lock."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from phobos import namespace
from phobos.config.model import Config
from phobos.core.locks import LockSet
from phobos.core.model import BusyPolicy
from phobos.core.proc import Log, StepRunner, direct_runner
from phobos.core.step import Step
from phobos.drives.devices import locate, power_off, probe, require_device
from phobos.drives.identity import Drive
from phobos.drives.state import record_event
from phobos.drives.unlockers import unlocker_for
from phobos.errors import PhobosError, StepFailed
from phobos.tools import mount as mnt

UMOUNT_PATIENCE = 15.0  # seconds: killed writers need a moment to let go of the drive


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


def _stop_leftovers_of_dead_runs(config: Config, log: Log) -> None:
    """Kill what dead runs left running (an orphaned rsync on the drive), as the history
    knows them; a history that cannot be used must not keep the drive from its release."""
    import sqlite3

    from phobos.core.history import History

    try:
        history = History.open(config.paths.state)
    except PhobosError as exc:
        log(f"warning: leftovers of dead runs not looked for: {exc.message}")
        return
    try:
        history.recover()
    except sqlite3.Error as exc:
        log(f"warning: leftovers of dead runs not looked for: {exc}")
    finally:
        history.close()


def release_cli(config: Config, drive: Drive, log: Log) -> list[str]:
    """``phobos drive release``: after a run died (systemd's ExecStopPost=), stop what is
    left of it, then unmount and lock the drive. Refuses while a live run holds it."""
    _stop_leftovers_of_dead_runs(config, log)
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


@contextlib.contextmanager
def mounted_readonly(config: Config, drive: Drive, log: Log) -> Iterator[Path]:
    """The drive unlocked and mounted read-only for the ``with`` block, then unmounted
    and locked again on every way out (an error, a signal). A drive already mounted
    (``phobos drive mount``) is used as it is and left mounted. The caller holds
    ``drive:NAME`` (a job's resources, or :func:`drive_lock`) and is inside the
    backup namespace; Absent if the drive is not plugged in."""
    device = require_device(drive)
    if is_mounted(drive):
        log(f"drive {drive.name} is mounted at {drive.mountpoint} already: using it")
        yield drive.mountpoint
        return
    cleanup = direct_runner(log)
    release(drive, cleanup, log)  # what a dead run left unlocked
    try:
        attach(drive, device, direct_runner(log), readonly=True)
        log(f"drive {drive.name} ({device}) is mounted read-only at {drive.mountpoint}")
        record_event(config, "mounted", drive.name, drive.uuid, "read-only")
        yield drive.mountpoint
    except BaseException:
        try:
            done = release(drive, cleanup, log)
            log(f"drive {drive.name}: {'; '.join(done) or 'released'}")
        except Exception as exc:  # the block's own error is what must be reported
            log(f"cleanup failed: {exc}; run `phobos drive release {drive.name}`")
        raise
    done = release(drive, cleanup, log)
    log(f"drive {drive.name}: {'; '.join(done) or 'released'}")
    record_event(config, "released", drive.name, drive.uuid, "; ".join(done))


def eject(config: Config, drive: Drive, log: Log) -> list[str]:
    """Release the drive, then detach its disk from the kernel (as ``udisksctl power-off``
    does) so it can be pulled at once. Loop devices and the like are only released."""
    done = release_cli(config, drive, log)
    device = locate(drive.uuid)
    if device is not None:
        off = power_off(device)
        if off:
            done.append(off)
    return done
