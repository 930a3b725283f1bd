"""systemd units for a config: pure rendering, plus install/uninstall with a manifest.

:func:`render` turns a config into ``{filename: text}``; nothing else in the rendering
touches the system, so golden files pin it down. Every unit ends in ``phobos run JOB``
(or ``phobos drive attached``), the single code path behind every trigger.

Units (docs/systemd.md shows them whole): ``phobos-job-NAME.service`` per job
(``Type=oneshot``, ``SuccessExitStatus=3``: "skipped because busy" is no failure,
``OnFailure=phobos-failure@%n.service``), ``phobos-job-NAME.timer`` per scheduled job
(``Persistent=true``, ``RandomizedDelaySec=`` from ``randomized_delay``), the
``phobos-failure@.service`` template running ``phobos notify unit-failure %i`` (``%i``:
the failed unit's name as written; ``%I`` would turn its ``-`` into ``/``), and per drive
``phobos-drive-NAME.service`` (``ExecStopPost=phobos drive release``: it runs even when
the start failed, unlike ``ExecStop=``) plus the udev rules alternative.

**Drive trigger.** By default (``[systemd] drive_trigger = "device"``) a drive service is
``WantedBy=`` the device unit of the drive's LUKS header UUID,
``dev-disk-by\\x2duuid-<UUID escaped>.device``, exactly as the seed does. It is
systemd's own mechanism: ``systemctl enable`` wires it up and ``disable`` removes it, like
the timers; no udev reload is needed; ``systemctl list-dependencies`` shows it; and it
also fires for a drive already plugged in at boot. The udev rule (``drive_trigger =
"udev"``) sets ``SYSTEMD_WANTS`` on the block device whose ``ID_FS_UUID`` is the LUKS
UUID; use it where the ``/dev/disk/by-uuid`` link is not created for the drive, or to
match on further udev properties by editing a copy.

**Sandbox.** Each unit gets the tightest sandbox its job allows, derived from the job's
kind, resources and the paths it names (:func:`job_sandbox`), never hand-listed:
``ProtectSystem=strict`` with writable paths only for phobos's own directories and what
the job writes (holding area, repository, storage), capabilities per kind, a system
call allow-list, address families (network only for pulls, commands and notifiers that
need it), devices (the BlinkStick's hidraw, block devices for drives). Units of jobs
that use drives join the backup mount namespace: they keep ``CAP_SYS_ADMIN`` and mount
namespaces, and get no mount namespace of their own, since systemd would copy it without
the nsfs mount that holds the backup namespace; so every mount-based option
(``ProtectSystem=``, ``PrivateTmp=``, ``PrivateDevices=``, ``ProtectKernel*=``,
``ProtectProc=``) is left out of them. Jobs that need only the hidden storage keep all
of it and mount the storage in their unit's own namespace (``PHOBOS_STORAGE_MOUNT``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from phobos.config.model import Config, JobBase
from phobos.config.schema import suggest
from phobos.core.model import JobKind
from phobos.errors import PhobosError

UNIT_DIR = Path("/etc/systemd/system")
UDEV_DIR = Path("/etc/udev/rules.d")
FAILURE_UNIT = "phobos-failure@.service"
UDEV_RULES = "90-phobos-drives.rules"
OVERDUE_SERVICE = "phobos-overdue.service"
OVERDUE_TIMER = "phobos-overdue.timer"
MANIFEST = "systemd-installed.json"
FAILURE_HOOK = "phobos-failure@%n.service"
ON_FAILURE = f"OnFailure={FAILURE_HOOK}"
SKIPPED_EXIT = 3  # ExitCode.SKIPPED: busy or absent, not a failure
HOME_DIRS = (Path("/home"), Path("/root"), Path("/run/user"))
BORG_HOME_DIRS = (Path("/root/.config/borg"), Path("/root/.cache/borg"))
_UUID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]*$")


class SystemdError(PhobosError):
    """The config cannot be turned into units, or installing them failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """What the units run: the phobos program and the config it reads (absolute)."""

    executable: Path
    config: Path


# --- names and escaping ------------------------------------------------------------------


def job_service(name: str) -> str:
    return f"phobos-job-{name}.service"


def job_timer(name: str) -> str:
    return f"phobos-job-{name}.timer"


def drive_service(name: str) -> str:
    return f"phobos-drive-{name}.service"


def escape_path(path: str) -> str:
    """``systemd-escape --path PATH``: ``/`` becomes ``-``, other bytes outside
    ``[A-Za-z0-9:_.]`` (and a leading ``.``) become ``\\xHH``."""
    trimmed = "/".join(part for part in path.split("/") if part and part != ".")
    if not trimmed:
        return "-"
    out = []
    for index, char in enumerate(trimmed):
        if char == "/":
            out.append("-")
        elif (char.isascii() and (char.isalnum() or char in ":_.")
              and not (index == 0 and char == ".")):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


def device_unit(luks_uuid: str) -> str:
    """The device unit of ``/dev/disk/by-uuid/UUID`` (``dev-disk-by\\x2duuid-….device``)."""
    return escape_path(f"/dev/disk/by-uuid/{luks_uuid}") + ".device"


def _specifiers(text: str) -> str:
    # systemd expands %X specifiers in almost every setting; a literal % is %%.
    return text.replace("%", "%%")


def quote_arg(arg: str) -> str:
    """One command-line word for ``Exec*=``: specifiers and ``$`` escaped, quoted when
    it holds whitespace, quotes or backslashes (systemd.service(5), COMMAND LINES)."""
    text = _specifiers(arg).replace("$", "$$")
    if text and not re.search(r"[\s\"'\\;]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_path(path: str) -> str:
    """One entry of a path list (``ReadWritePaths=``): like :func:`quote_arg` without
    ``$`` (path lists expand no variables)."""
    text = _specifiers(path)
    if text and not re.search(r"[\s\"'\\]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _one_line(text: str) -> str:
    return " ".join(text.split())


def timespan(seconds: float) -> str:
    """A systemd time span: ``1h 30min``, ``45s``, ``1d 2h``."""
    whole = round(seconds)
    if whole <= 0:
        return "0"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


# --- the sandbox -------------------------------------------------------------------------

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
    JobKind.BORGMATIC: FILE_CAPS,
    JobKind.COMMAND: FILE_CAPS,
}
KIND_FAMILIES: Mapping[JobKind, frozenset[str]] = {
    # rsync talks to ssh over a socketpair(), which RestrictAddressFamilies= leaves alone.
    JobKind.PULL: INET,
    JobKind.BORGMATIC: INET | {"AF_UNIX"},  # hooks, remote repositories
    JobKind.DRIVE_SYNC: frozenset({"AF_UNIX"}),  # udevadm settle
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
        if root in path.parents:
            lines.append(f"{key}={quote_path(str(path.relative_to(root)))}")
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


def _resource_paths(config: Config, job: JobBase) -> tuple[set[Path], set[Path]]:
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
    return any(path == home or home in path.parents for home in HOME_DIRS)


def _uses_namespace(config: Config, job: JobBase) -> bool:
    """Whether the job needs what only the backup namespace shows: drives, or the storage
    when ``[storage] device`` hides it (see :mod:`.namespace`)."""
    from phobos.namespace import needs_namespace

    return needs_namespace(config, job.resources(config))


def job_sandbox(config: Config, name: str) -> Sandbox:
    """The sandbox for the unit running job ``name``, without notifiers. A kind this
    module does not know is treated as ``command``: an opaque program."""
    job = config.jobs[name]
    kind = job.kind if job.kind in KIND_CAPS else JobKind.COMMAND
    must, optional = _resource_paths(config, job)
    extra = config.systemd.sandbox.get(name)
    if extra is not None:
        optional.update(extra.read_write_paths)
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
            INET if extra is not None and extra.network else frozenset()),
        capabilities=KIND_CAPS[kind] | (NAMESPACE_CAPS if joins else frozenset())
        | (STORAGE_MOUNT_CAPS if private else frozenset()),
        privileged_calls=kind in PRIVILEGED_KINDS, resource_calls=drive,
        namespaces=joins, private_storage=private, mounts=drive or private,
        devices=(DRIVE_DEVICES if drive else _storage_devices(config) if private
                 else frozenset()),
        host_devices=drive or private,
        suid=kind in SUID_KINDS or (extra is not None and extra.setuid))


def _uses_drive(config: Config, job: JobBase) -> bool:
    return any(r.name.startswith("drive:") for r in job.resources(config))


DEVICE_TAGS = (("UUID=", "/dev/disk/by-uuid/"), ("LABEL=", "/dev/disk/by-label/"),
               ("PARTUUID=", "/dev/disk/by-partuuid/"))


def _storage_devices(config: Config) -> frozenset[str]:
    """DeviceAllow= for mounting ``[storage] device``: its node where the config names
    one (systemd resolves the link when the unit starts), else any block device."""
    device = config.storage.device or ""
    for tag, directory in DEVICE_TAGS:
        if device.startswith(tag):
            return frozenset({f"{directory}{device.removeprefix(tag)} rw"})
    return frozenset({f"{device} rw" if device.startswith("/dev/") else "block-* rw"})


def drive_sandbox(config: Config, drive: str) -> Sandbox:
    """The sandbox for a drive's unit: opening and mounting the drive, plus whatever the
    jobs using the drive (resource ``drive:NAME``) need."""
    sandbox = Sandbox(capabilities=FILE_CAPS | DRIVE_CAPS, privileged_calls=True,
                      resource_calls=True, namespaces=True, mounts=True,
                      families=KIND_FAMILIES[JobKind.DRIVE_SYNC], devices=DRIVE_DEVICES,
                      host_devices=True)
    for name, job in config.jobs.items():
        if any(r.name == f"drive:{drive}" for r in job.resources(config)):
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
        lines.append("ReadWritePaths=" + " ".join(
            [quote_path(str(p)) for p in writable] + [quote_path(f"-{p}") for p in optional]))
    if sandbox.home_read:
        lines.append("ProtectHome=read-only")
    elif bound:
        lines += ["ProtectHome=tmpfs", "BindPaths=" + " ".join(quote_path(str(p)) for p in bound)]
    else:
        lines.append("ProtectHome=yes")
    return lines


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


# --- units -------------------------------------------------------------------------------


def _section(name: str, lines: Iterable[str]) -> str:
    return f"[{name}]\n" + "".join(f"{line}\n" for line in lines)


def _unit(target: Target, sections: Sequence[tuple[str, Iterable[str]]]) -> str:
    header = (f"# Generated by phobos from {target.config}.\n"
              "# Change the config and run `phobos systemd install`: edits here are lost.\n")
    return header + "\n".join(_section(name, lines) for name, lines in sections)


def _exec(target: Target, *args: str) -> str:
    argv = [str(target.executable), "-c", str(target.config), *args]
    return " ".join(quote_arg(a) for a in argv)


def _description(text: str) -> str:
    return f"Description={_specifiers(_one_line(text))}"


def _service_common() -> list[str]:
    return [
        "Type=oneshot",
        # Channels may leave failure messages to the OnFailure= unit (no network here).
        f"Environment=PHOBOS_FAILURE_HOOK={FAILURE_HOOK}",
        f"SuccessExitStatus={SKIPPED_EXIT}",
        # phobos stops its own steps on SIGTERM and records the run; KillMode=mixed lets
        # it do that before systemd kills what is left.
        "KillMode=mixed",
        "TimeoutStartSec=infinity",  # phobos enforces each job's own `timeout`
        "TimeoutStopSec=90s",
    ]


def _namespace_lines(target: Target, sandbox: Sandbox) -> list[str]:
    """The backup namespace is created by a bind mount that must happen in the host's
    mount namespace, not in the unit's private one (it would vanish with the unit):
    "+" runs ``phobos ns create`` outside the sandbox, as the seed's ExecStartPre= ran
    mkbackupns. The job then joins it with setns(), so the unit has no mount namespace of
    its own (see _kernel_lines): only the capability, system call, device and network
    limits apply to it."""
    if not sandbox.namespaces:
        return []
    return [f"ExecStartPre=+{_exec(target, 'ns', 'create')}"]


def _private_storage_lines(sandbox: Sandbox) -> list[str]:
    if not sandbox.private_storage:
        return []
    from phobos.namespace import STORAGE_MOUNT_ENV

    return [f"Environment={STORAGE_MOUNT_ENV}=private"]


def render_job_service(config: Config, target: Target, name: str) -> str:
    job = config.jobs[name]
    sandbox = job_sandbox(config, name)
    what = job.description or f"{job.kind} job {name}"
    unit = [_description(f"phobos: {what}"), "Documentation=man:phobos(1)", ON_FAILURE]
    if sandbox.families & INET:
        unit += ["Wants=network-online.target", "After=network-online.target"]
    storage = sorted(_resource_paths(config, job)[1])
    if storage and config.storage.device is None:
        unit.append("RequiresMountsFor=" + " ".join(quote_path(str(p)) for p in storage))
    trigger = "timer" if job.schedule else "manual"
    service = [*_service_common(), *_namespace_lines(target, sandbox),
               *_private_storage_lines(sandbox),
               f"ExecStart={_exec(target, 'run', name, '--trigger', trigger)}",
               f"SyslogIdentifier=phobos-{name}",
               *hardening(config, sandbox | notify_sandbox(config))]
    return _unit(target, [("Unit", unit), ("Service", service)])


def render_job_timer(config: Config, target: Target, name: str) -> str:
    job = config.jobs[name]
    assert job.schedule is not None
    timer = [f"OnCalendar={_calendar(name, job.schedule)}",
             "Persistent=true",
             # The schedule view promises the configured time; systemd's default
             # AccuracySec=1min would shift starts by up to a minute.
             "AccuracySec=1s"]
    if job.randomized_delay:
        timer.append(f"RandomizedDelaySec={timespan(job.randomized_delay)}")
    timer.append(f"Unit={job_service(name)}")
    return _unit(target, [("Unit", [_description(f"phobos: schedule of job {name}")]),
                          ("Timer", timer), ("Install", ["WantedBy=timers.target"])])


def _calendar(name: str, schedule: str) -> str:
    """The schedule, checked with phobos's calendar parser when it is there."""
    text = _one_line(schedule)
    if text != schedule.strip() or not text:
        raise SystemdError(f"jobs.{name}.schedule: {schedule!r} is not one line",
                           "write the OnCalendar expression on one line")
    try:
        from phobos.oncalendar.spec import CalendarError, parse_calendar
    except ImportError:  # pragma: no cover - the calendar module ships with phobos
        return text
    try:
        parse_calendar(text)
    except CalendarError as exc:
        raise SystemdError(f"jobs.{name}.schedule: {exc.message}", exc.hint) from None
    return _specifiers(text)


# `systemctl status` talks to systemd over its private socket and reads the journal.
FAILURE_SANDBOX = Sandbox(families=frozenset({"AF_UNIX"}))


def render_failure_unit(config: Config, target: Target) -> str:
    # %i: the failed unit's name as systemd wrote it into OnFailure=; %I would
    # unescape its "-" into "/". No OnFailure= here: a failing notice must not loop.
    unit = ["Description=phobos: failure notice for %i", "Documentation=man:phobos(1)"]
    service = ["Type=oneshot",
               f"ExecStart={_exec(target, 'notify', 'unit-failure')} %i",
               "SyslogIdentifier=phobos-failure",
               *hardening(config, FAILURE_SANDBOX | notify_sandbox(config, failure_hook=True))]
    return _unit(target, [("Unit", unit), ("Service", service)])


def render_overdue_service(config: Config, target: Target) -> str:
    """Hourly `phobos overdue --notify`: a missed slot or an old drive is told once."""
    unit = [_description("phobos: tell about overdue jobs and drives"),
            "Documentation=man:phobos(1)", ON_FAILURE]
    service = ["Type=oneshot",
               f"ExecStart={_exec(target, 'overdue', '--notify')}",
               # exit 1 means "something is overdue" and was reported: not a failure
               "SuccessExitStatus=1",
               "SyslogIdentifier=phobos-overdue",
               *hardening(config, notify_sandbox(config))]
    return _unit(target, [("Unit", unit), ("Service", service)])


def render_overdue_timer(config: Config, target: Target) -> str:
    timer = ["OnCalendar=hourly", "Persistent=true", f"Unit={OVERDUE_SERVICE}"]
    return _unit(target, [("Unit", [_description("phobos: hourly overdue check")]),
                          ("Timer", timer), ("Install", ["WantedBy=timers.target"])])


def _checked_uuid(name: str, uuid: str) -> str:
    if not _UUID.match(uuid):
        raise SystemdError(f"drives.{name}.luks_uuid: {uuid!r} is not a UUID",
                           "copy it from `cryptsetup luksUUID DEVICE`")
    return uuid


def render_drive_service(config: Config, target: Target, name: str) -> str:
    uuid = _checked_uuid(name, config.drives[name].luks_uuid)
    device = device_unit(uuid)
    unit = [_description(f"phobos: drive {name} plugged in (LUKS {uuid})"),
            "Documentation=man:phobos(1)",
            ON_FAILURE,
            # Pulling the drive out stops the service, and ExecStopPost= cleans up.
            f"BindsTo={device}", f"After={device}"]
    sandbox = drive_sandbox(config, name)
    service = [*_service_common(), *_namespace_lines(target, sandbox),
               f"ExecStart={_exec(target, 'drive', 'attached', '--uuid', uuid)}",
               f"ExecStopPost={_exec(target, 'drive', 'release', '--uuid', uuid)}",
               f"SyslogIdentifier=phobos-drive-{name}",
               *hardening(config, sandbox | notify_sandbox(config))]
    sections: list[tuple[str, Iterable[str]]] = [("Unit", unit), ("Service", service)]
    if config.systemd.drive_trigger == "device":
        sections.append(("Install", [f"WantedBy={device}"]))
    return _unit(target, sections)


def render_udev_rules(config: Config, target: Target) -> str:
    lines = [f"# Generated by phobos from {target.config}.",
             "# Alternative drive trigger ([systemd] drive_trigger = \"udev\"): start a",
             "# drive's service when the block device with its LUKS header UUID appears."]
    for name, drive in sorted(config.drives.items()):
        uuid = _checked_uuid(name, drive.luks_uuid)
        lines.append(f'ACTION!="remove", SUBSYSTEM=="block", ENV{{ID_FS_TYPE}}=="crypto_LUKS", '
                     f'ENV{{ID_FS_UUID}}=="{uuid}", TAG+="systemd", '
                     f'ENV{{SYSTEMD_WANTS}}+="{drive_service(name)}"')
    return "\n".join(lines) + "\n"


WEB_UNIT = "phobos-web.service"


def _web_hidden_paths(config: Config) -> list[Path]:
    """Key material the dashboard must not see: the keys directory, keyfiles, passphrase
    and password files, Borg base directories, absolute paths among the arguments of
    pass/password commands. Paths holding something the dashboard reads stay visible."""
    import shlex

    found: set[Path] = {config.paths.keys}
    found.update(d.keyfile for d in config.drives.values() if d.keyfile is not None)
    commands: list[str] = []
    for repo in config.repos.values():
        found.update(p for p in (repo.passphrase_file, repo.base_dir) if p is not None)
        commands += [repo.passcommand] if repo.passcommand else []
    email = config.notify.email
    if email is not None:
        found.update([email.password_file] if email.password_file else [])
        commands += [email.password_command] if email.password_command else []
    for command in commands:
        with contextlib.suppress(ValueError):
            found.update(Path(w) for w in shlex.split(command)[1:] if w.startswith("/"))
    web = config.web
    needed = [config.paths.state, config.paths.run, config.source,
              *([web.token_file] if web is not None and web.token_file else [])]
    return sorted(p for p in found if p.is_absolute() and not any(
        n == p or p in n.parents for n in needed))


def render_web_service(config: Config, target: Target) -> str:
    """``phobos-web.service``: the read-only dashboard. A dynamic user that can read
    (CAP_DAC_READ_SEARCH: job units write the state as root with UMask=0077) but write
    nothing; key material hidden; loopback-only traffic when it listens on loopback."""
    from phobos.web.address import parse_listen

    assert config.web is not None
    listen = parse_listen(config.web.listen)
    caps = ["CAP_DAC_READ_SEARCH"] + (["CAP_NET_BIND_SERVICE"] if listen.port < 1024 else [])
    unit = [_description("phobos: read-only web dashboard"), "Documentation=man:phobos(1)",
            "After=network.target"]
    hidden = _web_hidden_paths(config)
    service = [
        "Type=exec", f"ExecStart={_exec(target, 'web')}", "SyslogIdentifier=phobos-web",
        "Restart=on-failure", "RestartSec=5s",
        "DynamicUser=yes", f"AmbientCapabilities={' '.join(caps)}",
        f"CapabilityBoundingSet={' '.join(caps)}", "NoNewPrivileges=yes",
        "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
        *(["InaccessiblePaths=" + " ".join(quote_path(f"-{p}") for p in hidden)]
          if hidden else []),
        "RestrictSUIDSGID=yes", "RemoveIPC=yes",
        "SystemCallFilter=@system-service", "SystemCallFilter=~@privileged @resources",
        "SystemCallErrorNumber=EPERM", "SystemCallArchitectures=native",
        # ProtectProc= stays default: the dashboard tells running jobs from dead ones by
        # their /proc/PID/stat, which "invisible" would hide (they run as root).
        "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes", "ProtectClock=yes", "ProtectHostname=yes",
        "ProcSubset=pid", "PrivateMounts=yes", "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes", "RestrictRealtime=yes", "RestrictNamespaces=yes",
        "KeyringMode=private", "UMask=0077",
        # asyncio's self-pipe is an AF_UNIX socketpair.
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        *(["IPAddressDeny=any", "IPAddressAllow=localhost"] if listen.loopback else []),
    ]
    return _unit(target, [("Unit", unit), ("Service", service),
                          ("Install", ["WantedBy=multi-user.target"])])


def render(config: Config, target: Target) -> dict[str, str]:
    """Every file for ``config``: ``{filename: text}``, units first, sorted by name.

    Pure: reads nothing but its arguments. Raises SystemdError for a schedule systemd
    would reject or a malformed drive UUID.
    """
    for name in config.systemd.sandbox:
        if name not in config.jobs:
            raise SystemdError(f"systemd.sandbox.{name}: no job named {name!r}"
                               + suggest(name, config.jobs), "name a [jobs.NAME] table")
    files: dict[str, str] = {FAILURE_UNIT: render_failure_unit(config, target)}
    for name, job in config.jobs.items():
        files[job_service(name)] = render_job_service(config, target, name)
        if job.schedule:
            files[job_timer(name)] = render_job_timer(config, target, name)
    for name in config.drives:
        files[drive_service(name)] = render_drive_service(config, target, name)
    if config.drives:
        files[UDEV_RULES] = render_udev_rules(config, target)
    if config.web is not None:
        files[WEB_UNIT] = render_web_service(config, target)
    if config.drives or any(job.schedule for job in config.jobs.values()):
        files[OVERDUE_SERVICE] = render_overdue_service(config, target)
        files[OVERDUE_TIMER] = render_overdue_timer(config, target)
    return dict(sorted(files.items()))


def required_directories(config: Config) -> list[Path]:
    """Directories that must exist for the units to start (their ``ReadWritePaths=``
    without ``-``, and the storage's mount point for units that mount it themselves
    under ``ProtectSystem=strict``), created by :func:`install`."""
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
