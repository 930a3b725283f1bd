"""Doctor check area ``namespace``: the backup mount namespace hides what it should."""

from __future__ import annotations

import os

from phobos.config.model import Config
from phobos.doctor.findings import Finding, error, ok, warning


def uses_namespace(config: Config) -> bool:
    """Whether jobs of ``config`` work in the backup mount namespace (drives, or a
    storage device mounted only inside)."""
    return bool(config.drives) or config.storage.device is not None


def namespace_findings(config: Config) -> list[Finding]:
    """The backup mount namespace: alive (or created on demand), nothing it hides is
    visible outside, the storage device mounted only inside."""
    from phobos import namespace
    from phobos.tools import mount as mnt

    if not uses_namespace(config):
        return [ok("namespace", "backup namespace", "not used (no drives, no [storage] "
                   "device)")]
    if os.geteuid() != 0:
        return [warning("namespace", "backup namespace", "cannot look inside as non-root",
                        "run `phobos doctor` as root")]
    findings = []
    device = config.storage.device
    outside = not namespace.is_inside(namespace.of(config))
    if device is not None and outside and mnt.mounted_at(mnt.read_mountinfo(),
                                                          config.storage.root):
        findings.append(error("namespace", "storage", f"{config.storage.root} is mounted "
                              "outside the backup namespace: every process can see the "
                              "backups", f"umount {config.storage.root} (jobs mount "
                              f"{device} inside the namespace)"))
    status = namespace.status(config)
    if not status.alive:
        findings.append(ok("namespace", "backup namespace", f"{status.file} does not exist "
                           "yet: the first job that needs it creates it"))
        return findings
    if status.leaked:
        shown = ", ".join(e.mountpoint for e in status.leaked)
        findings.append(error("namespace", "backup namespace", f"mounted inside AND visible "
                              f"outside: {shown}", "unmount them outside the namespace"))
    else:
        findings.append(ok("namespace", "backup namespace", f"alive ({status.file}), "
                           f"{len(status.hidden)} mounts hidden from the rest of the system"))
    return findings
