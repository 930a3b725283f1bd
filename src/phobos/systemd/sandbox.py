"""The sandbox of each unit phobos installs, and the ``[Service]`` lines that enforce it.

Each unit gets the tightest sandbox its job allows, derived from the job's kind, resources
and the paths it names (:func:`job_sandbox`), never hand-listed: ``ProtectSystem=strict``
with writable paths only for phobos's own directories and what the job writes (holding
area, repository, storage), capabilities per kind, a system call allow-list, address
families (network only for pulls, commands and notifiers that need it), devices (the
BlinkStick's hidraw, block devices for drives). Units of jobs that use drives join the
backup mount namespace: they keep ``CAP_SYS_ADMIN`` and mount namespaces, and get no mount
namespace of their own, since systemd would copy it without the nsfs mount that holds the
backup namespace; so every mount-based option (``ProtectSystem=``, ``PrivateTmp=``,
``PrivateDevices=``, ``ProtectKernel*=``, ``ProtectProc=``) is left out of them. Jobs that
need only the hidden storage keep all of it and mount the storage in their unit's own
namespace (``PHOBOS_STORAGE_MOUNT``).

Pure, like the rendering: reads nothing but the config.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.core import locks
from phobos.core.model import JobKind
from phobos.systemd.names import Syntax, unit_value

HOME_DIRS = (Path("/home"), Path("/root"), Path("/run/user"))
BORG_HOME_DIRS = (Path("/root/.config/borg"), Path("/root/.cache/borg"))

INET = frozenset({"AF_INET", "AF_INET6"})
FILE_CAPS = frozenset({"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
                       "CAP_FSETID"})
# cryptsetup (device-mapper) and mount need CAP_SYS_ADMIN; setns() into a mount namespace
# needs CAP_SYS_ADMIN and CAP_SYS_CHROOT; cryptsetup locks the volume key in memory.
DRIVE_CAPS = frozenset({"CAP_SYS_ADMIN", "CAP_SYS_CHROOT", "CAP_IPC_LOCK"})
NAMESPACE_CAPS = frozenset({"CAP_SYS_ADMIN", "CAP_SYS_CHROOT"})
STORAGE_MOUNT_CAPS = frozenset({"CAP_SYS_ADMIN"})
KIND_CAPS: Mapping[JobKind, frozenset[str]] = {
    # rsync --archive recreates owners, modes, ACLs and file capabilities (xattrs).
    JobKind.PULL: FILE_CAPS | {"CAP_SETFCAP"},
    # borg create reads every file; O_NOATIME on files of other users needs CAP_FOWNER.
    JobKind.ARCHIVE: frozenset({"CAP_DAC_READ_SEARCH", "CAP_FOWNER"}),
    JobKind.CHECK: frozenset({"CAP_DAC_READ_SEARCH"}),
    JobKind.DRILL: FILE_CAPS,
    JobKind.DRIVE_SYNC: FILE_CAPS | DRIVE_CAPS,
    JobKind.CLOUD_SYNC: frozenset({"CAP_DAC_READ_SEARCH"}),
    JobKind.BORGMATIC: FILE_CAPS,
    JobKind.COMMAND: FILE_CAPS,
}
KIND_FAMILIES: Mapping[JobKind, frozenset[str]] = {
    # rsync talks to ssh over a socketpair(), which RestrictAddressFamilies= leaves alone.
    JobKind.PULL: INET,
    JobKind.BORGMATIC: INET | {"AF_UNIX"},  # hooks, remote repositories
    JobKind.DRIVE_SYNC: frozenset({"AF_UNIX"}),  # udevadm settle
    JobKind.CLOUD_SYNC: INET | {"AF_UNIX"},  # rclone to its remote; name resolution
}
# Kinds that change owners or identities (chown and setuid calls are @privileged).
PRIVILEGED_KINDS = frozenset({JobKind.PULL, JobKind.DRILL, JobKind.DRIVE_SYNC,
                              JobKind.BORGMATIC, JobKind.COMMAND})
# Kinds that recreate setuid/setgid files and directories (a pulled /usr/bin or a
# setgid group folder in /home, a restore drill).
SUID_KINDS = frozenset({JobKind.PULL, JobKind.DRILL})
# Kinds that read arbitrary local paths, /home included.
READ_ANYWHERE_KINDS = frozenset({JobKind.ARCHIVE, JobKind.DRILL, JobKind.BORGMATIC,
                                 JobKind.COMMAND})
DRIVE_KINDS = frozenset({JobKind.DRIVE_SYNC})
# cryptsetup needs the drive's block device, the device-mapper control node and the
# dm-N node it creates; block-* covers any bus the drive is plugged into.
DRIVE_DEVICES = frozenset({"block-* rw", "/dev/mapper/control rw"})
# The BlinkStick's hidraw node, bound into the unit's private /dev: its number depends
# on what else is plugged in, and a missing one ("-") is skipped.
HIDRAW_NODES = frozenset(f"/dev/hidraw{n}" for n in range(16))
_PLAIN_DIRECTORY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Sandbox:
    """What one unit's processes may do; :func:`hardening` renders it.

    ``write`` paths must exist when the unit starts (``install`` creates them);
    ``write_optional`` ones may be missing (storage mounted only in the backup namespace,
    a repository not initialized yet) and then stay read-only for that run.
    ``host_devices`` keeps the host's /dev (filtered by ``devices``, the DeviceAllow=
    list); otherwise /dev is private and ``bind_devices`` are bound into it.
    ``namespaces``: the unit's processes join the backup namespace; ``private_storage``:
    they mount the storage in the unit's own mount namespace instead
    (:func:`phobos.namespace.mount_storage_privately`).
    """

    write: frozenset[Path] = frozenset()
    write_optional: frozenset[Path] = frozenset()
    home_read: bool = False
    families: frozenset[str] = frozenset()
    capabilities: frozenset[str] = frozenset()
    privileged_calls: bool = False
    resource_calls: bool = False
    namespaces: bool = False
    private_storage: bool = False
    mounts: bool = False
    devices: frozenset[str] = frozenset()
    host_devices: bool = False
    bind_devices: frozenset[str] = frozenset()
    suid: bool = False
    new_privileges: bool = False

    def __or__(self, other: Sandbox) -> Sandbox:
        """The union: a unit running both needs what either needs."""
        merged: dict[str, Any] = {}
        for fld in fields(self):
            merged[fld.name] = getattr(self, fld.name) | getattr(other, fld.name)
        return Sandbox(**merged)


def _managed(config: Config) -> tuple[list[str], list[Path]]:
    """phobos's own directories: ``StateDirectory=``-style lines for those under the
    standard roots (systemd creates them, writable even under ProtectSystem=strict),
    the rest as paths that must exist (``phobos systemd install`` creates them)."""
    lines: list[str] = []
    paths: list[Path] = []
    roots = (("StateDirectory", Path("/var/lib"), config.paths.state),
             ("RuntimeDirectory", Path("/run"), config.paths.run),
             ("LogsDirectory", Path("/var/log"), config.paths.log))
    for key, root, path in roots:
        # These settings split on ":" even in quotes (SOURCE:SYMLINK): plain names only.
        if root in path.parents and _PLAIN_DIRECTORY.match(str(path.relative_to(root))):
            relative = str(path.relative_to(root))
            lines.append(f"{key}={unit_value(relative, Syntax.PATH, key='paths')}")
        else:
            paths.append(path)
    if any(line.startswith("RuntimeDirectory=") for line in lines):
        # Locks and the backup namespace outlive a single run.
        lines.append("RuntimeDirectoryPreserve=yes")
    return lines, paths


def _led_sandbox(config: Config) -> Sandbox:
    led = config.notify.led
    if led.driver == "blinkstick":
        return Sandbox(devices=frozenset({"char-hidraw rw"}), bind_devices=HIDRAW_NODES)
    if led.driver == "command":  # e.g. the blinkstick CLI, which talks USB directly
        return Sandbox(devices=frozenset({"char-hidraw rw", "char-usb_device rw"}),
                       host_devices=True)
    if led.driver == "file" and led.path is not None:
        return Sandbox(write_optional=frozenset({led.path.parent}))
    return Sandbox()


MTA_SANDBOX = Sandbox(
    # sendmail/postdrop/exim: setgid or setuid programs writing their spool.
    write_optional=frozenset({Path("/var/spool/postfix"), Path("/var/spool/exim4"),
                              Path("/var/spool/nullmailer")}),
    families=frozenset({"AF_UNIX"}) | INET, new_privileges=True, privileged_calls=True,
    capabilities=frozenset({"CAP_DAC_OVERRIDE", "CAP_SETUID", "CAP_SETGID"}))


def _channels_sandbox(config: Config, *, failure_hook: bool) -> Sandbox:
    """What the message channels (e-mail, Apprise, pings) need in a unit. Job units
    leave failure messages to the ``OnFailure=`` unit (``failure_hook``), so a channel
    wanting nothing but failures needs no network there."""
    sandbox = Sandbox()
    for fld in fields(config.notify):
        channel = getattr(config.notify, fld.name)
        if fld.name == "led" or channel is None:
            continue
        events = set(getattr(channel, "events", ("always",)))
        if not failure_hook and not events - {"failure"}:
            continue
        if getattr(channel, "transport", "smtp") == "sendmail":
            sandbox |= MTA_SANDBOX
        else:
            sandbox |= Sandbox(families=INET)
    return sandbox


def notify_sandbox(config: Config, *, failure_hook: bool = False) -> Sandbox:
    """What the notifiers running inside a unit need (LED device, SMTP, a local MTA)."""
    return _led_sandbox(config) | _channels_sandbox(config, failure_hook=failure_hook)


def resource_paths(config: Config, job: JobBase) -> tuple[set[Path], set[Path]]:
    """(must exist, may be missing) paths the job's resources write to: Borg's own
    directories must; repositories, the holding area and the storage may be missing
    (not initialized yet, or mounted only in a namespace)."""
    from phobos.namespace import written_paths

    resources = job.resources(config)
    must: set[Path] = set()
    for resource in resources:
        kind, _, name = resource.name.partition(":")
        if kind == "repo" and name in config.repos:
            repo = config.repos[name]
            must.update([repo.base_dir] if repo.base_dir is not None else BORG_HOME_DIRS)
    return must, written_paths(config, resources)


def _mentioned_paths(job: JobBase) -> list[Path]:
    """Absolute paths among the job's settings (sources, cwd, argv...)."""
    found: list[Path] = []
    for fld in fields(job):
        values = getattr(job, fld.name)
        if not isinstance(values, tuple | list):
            values = [values]
        for value in values:
            if isinstance(value, Path) or (isinstance(value, str) and value.startswith("/")):
                found.append(Path(value))
    return found


def in_home(path: Path) -> bool:
    """Whether ``path`` is in a home directory (what ``ProtectHome=`` hides)."""
    return any(path == home or home in path.parents for home in HOME_DIRS)


def _uses_namespace(config: Config, job: JobBase) -> bool:
    """Whether the job needs what only the backup namespace shows: drives, or the storage
    when ``[storage] device`` hides it (see :mod:`phobos.namespace`)."""
    from phobos.namespace import needs_namespace

    return needs_namespace(config, job.resources(config))


def job_sandbox(config: Config, name: str) -> Sandbox:
    """The sandbox for the unit running job ``name``, without notifiers. A kind this
    module does not know is treated as ``command``: an opaque program."""
    job = config.jobs[name]
    kind = job.kind if job.kind in KIND_CAPS else JobKind.COMMAND
    must, optional = resource_paths(config, job)
    extra = config.systemd.sandbox.get(name)
    if extra is not None:
        optional.update(extra.read_write_paths)
    if kind is JobKind.CLOUD_SYNC:  # rclone saves refreshed OAuth tokens next to its config
        optional.add(rclone_config_of(config, job).parent)
    drive = kind in DRIVE_KINDS
    hidden = _uses_namespace(config, job)
    # Drives are mounted in the backup namespace, so their users join it; a job that
    # only needs the hidden storage mounts it in its unit's own namespace and keeps the
    # mount-based sandbox that joining would cost (see _kernel_lines).
    joins = drive or (hidden and _uses_drive(config, job))
    private = hidden and not joins
    touched = [*_mentioned_paths(job), *optional]
    return Sandbox(
        write=frozenset(must), write_optional=frozenset(optional),
        home_read=kind in READ_ANYWHERE_KINDS or any(in_home(p) for p in touched),
        families=KIND_FAMILIES.get(kind, frozenset()) | (
            INET if (extra is not None and extra.network) or _uses_net(config, job)
            else frozenset()),
        capabilities=KIND_CAPS[kind] | (NAMESPACE_CAPS if joins else frozenset())
        | (STORAGE_MOUNT_CAPS if private else frozenset()),
        privileged_calls=kind in PRIVILEGED_KINDS, resource_calls=drive,
        namespaces=joins, private_storage=private, mounts=drive or private,
        devices=(DRIVE_DEVICES if drive else _storage_devices(config) if private
                 else frozenset()),
        host_devices=drive or private,
        suid=kind in SUID_KINDS or (extra is not None and extra.setuid))


def rclone_config_of(config: Config, job: JobBase) -> Path:
    """rclone's config file of a cloud-sync job (its own, or the default in KEYS)."""
    from phobos.tools.rclone import config_path

    return config_path(config.paths.keys, getattr(job, "rclone_config", None))


def _uses_net(config: Config, job: JobBase) -> bool:
    """A job reaching over the network by its resources: a repository over SSH."""
    return any(r.kind == locks.NET for r in job.resources(config))


def _uses_drive(config: Config, job: JobBase) -> bool:
    return any(r.kind == locks.DRIVE for r in job.resources(config))


DEVICE_TAGS = (("UUID=", "/dev/disk/by-uuid/"), ("LABEL=", "/dev/disk/by-label/"),
               ("PARTUUID=", "/dev/disk/by-partuuid/"))


def _storage_devices(config: Config) -> frozenset[str]:
    """DeviceAllow= for mounting ``[storage] device``: its node where the config names
    one (systemd resolves the link when the unit starts), else any block device."""
    device = config.storage.device or ""
    for tag, directory in DEVICE_TAGS:
        if device.startswith(tag):
            return frozenset({_device_rule(f"{directory}{device.removeprefix(tag)}")})
    return frozenset({_device_rule(device) if device.startswith("/dev/") else "block-* rw"})


def _device_rule(node: str) -> str:
    return f"{unit_value(node, Syntax.PATH, key='storage.device')} rw"


def drive_sandbox(config: Config, drive: str) -> Sandbox:
    """The sandbox for a drive's unit: opening and mounting the drive, plus whatever the
    jobs using the drive (resource ``drive:NAME``) need."""
    sandbox = Sandbox(capabilities=FILE_CAPS | DRIVE_CAPS, privileged_calls=True,
                      resource_calls=True, namespaces=True, mounts=True,
                      families=KIND_FAMILIES[JobKind.DRIVE_SYNC], devices=DRIVE_DEVICES,
                      host_devices=True)
    for name, job in config.jobs.items():
        if locks.drive(drive) in job.resources(config):
            sandbox |= job_sandbox(config, name)
    return sandbox


def hardening(config: Config, sandbox: Sandbox) -> list[str]:
    """The [Service] lines confining a unit to ``sandbox`` (systemd.exec(5))."""
    lines, own_paths = _managed(config)
    if not sandbox.namespaces:  # no mount namespace of its own: see _kernel_lines
        lines += ["ProtectSystem=strict", *_path_lines(sandbox, own_paths), "PrivateTmp=yes"]
    lines += _device_lines(sandbox)
    lines += _privilege_lines(sandbox)
    lines += _kernel_lines(sandbox)
    lines += _network_lines(sandbox)
    return lines


def _path_lines(sandbox: Sandbox, own_paths: Sequence[Path]) -> list[str]:
    """ReadWritePaths= and ProtectHome=. Writable paths inside a hidden /home or /root
    (Borg's default cache) are bound into a tmpfs there instead."""
    required = {*own_paths, *sandbox.write}
    hidden_home = not sandbox.home_read
    bound = sorted(p for p in required if hidden_home and in_home(p))
    writable = sorted(required - set(bound))
    optional = sorted(p for p in sandbox.write_optional - required
                      if not (hidden_home and in_home(p)))
    lines = []
    if writable or optional:
        lines.append("ReadWritePaths=" + _path_list(
            [*map(str, writable), *(f"-{p}" for p in optional)]))
    if sandbox.home_read:
        lines.append("ProtectHome=read-only")
    elif bound:
        lines += ["ProtectHome=tmpfs", "BindPaths=" + _path_list(map(str, bound))]
    else:
        lines.append("ProtectHome=yes")
    return lines


def _path_list(paths: Iterable[str]) -> str:
    return " ".join(unit_value(path, Syntax.PATH, key="a path the unit writes")
                    for path in paths)


def _device_lines(sandbox: Sandbox) -> list[str]:
    # A private /dev is a mount namespace too, which namespace units must not have.
    host = sandbox.host_devices or sandbox.namespaces
    lines = [f"PrivateDevices={'no' if host else 'yes'}"]
    if host:
        lines.append("DevicePolicy=closed")
    lines += [f"DeviceAllow={d}" for d in sorted(sandbox.devices)]
    if sandbox.bind_devices and not host:
        nodes = sorted(sandbox.bind_devices, key=lambda p: (len(p), p))
        lines.append("BindPaths=" + " ".join(f"-{p}" for p in nodes))
    return lines


def _privilege_lines(sandbox: Sandbox) -> list[str]:
    caps = " ".join(sorted(sandbox.capabilities))
    lines = [f"CapabilityBoundingSet={caps}",
             f"NoNewPrivileges={'no' if sandbox.new_privileges else 'yes'}"]
    if not sandbox.suid:
        lines.append("RestrictSUIDSGID=yes")
    lines.append("SystemCallFilter=@system-service" + (" @mount" if sandbox.mounts else ""))
    denied = [group for group, allowed in (("@privileged", sandbox.privileged_calls),
                                           ("@resources", sandbox.resource_calls))
              if not allowed]
    if denied:
        lines.append("SystemCallFilter=~" + " ".join(denied))
    # EPERM rather than SIGSYS: a tool probing an optional call degrades gracefully.
    lines += ["SystemCallErrorNumber=EPERM", "SystemCallArchitectures=native"]
    return lines


def _kernel_lines(sandbox: Sandbox) -> list[str]:
    if sandbox.namespaces:
        # A unit that joins the backup namespace must not get a mount namespace of its
        # own (systemd 252, seen in the QEMU test): copies of a mount namespace leave out
        # nsfs mounts, so RUN/ns/mnt is an empty file there and setns() has nothing to
        # join. Every option systemd implements with mounts therefore goes; after setns()
        # the namespace's own view would replace it anyway. PrivateMounts=no also keeps
        # PrivateNetwork= from implying a mount namespace.
        mounts = ["PrivateMounts=no"]
    else:
        mounts = ["ProtectKernelTunables=yes", "ProtectKernelModules=yes",
                  "ProtectKernelLogs=yes", "ProtectControlGroups=yes", "ProtectProc=invisible",
                  "ProcSubset=pid", "PrivateMounts=yes"]
    return [
        *mounts, "ProtectClock=yes", "ProtectHostname=yes", "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes", "RestrictRealtime=yes",
        "RestrictNamespaces=" + ("mnt" if sandbox.namespaces else "yes"),
        "KeyringMode=private", "UMask=0077",
    ]


def _network_lines(sandbox: Sandbox) -> list[str]:
    families = " ".join(sorted(sandbox.families)) or "none"
    lines = [f"RestrictAddressFamilies={families}"]
    if not sandbox.families & INET:
        lines += ["PrivateNetwork=yes", "IPAddressDeny=any"]
    return lines


# `systemctl status` talks to systemd over its private socket and reads the journal.
FAILURE_SANDBOX = Sandbox(families=frozenset({"AF_UNIX"}))


def required_directories(config: Config) -> list[Path]:
    """Directories that must exist for the units to start (their ``ReadWritePaths=``
    without ``-``, and the storage's mount point for units that mount it themselves
    under ``ProtectSystem=strict``), created by :func:`phobos.systemd.install.install`."""
    _, own = _managed(config)
    needed = set(own)
    for name in config.jobs:
        sandbox = job_sandbox(config, name)
        needed |= sandbox.write
        if sandbox.private_storage:
            needed.add(config.storage.root)
    for drive in config.drives:
        needed |= drive_sandbox(config, drive).write
    return sorted(needed)
