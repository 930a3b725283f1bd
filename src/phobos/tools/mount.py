"""argv builders for mount, umount, blkid, mkfs.ext4 and util-linux's unshare and taskset,
and parsers for their output and for ``/proc/PID/mountinfo``.

Mountinfo is read rather than ``findmnt`` run because it is what the kernel says for
exactly one mount namespace: the namespace code compares the file inside and outside.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Options for every drive mount: a backup copy holds no devices or programs to run.
DRIVE_OPTIONS = ("nodev", "nosuid", "noexec", "noatime")


@dataclass(frozen=True, slots=True, kw_only=True)
class MountEntry:
    """One line of ``/proc/PID/mountinfo`` (proc(5))."""

    mount_id: int
    parent_id: int
    devno: str  # "major:minor" of the filesystem
    root: str  # the path inside the filesystem that is mounted (bind mounts)
    mountpoint: str
    options: str
    fstype: str
    source: str
    propagation: tuple[str, ...] = ()  # optional fields: "shared:N", "master:N", ...

    @property
    def reaches_other_namespaces(self) -> bool:
        """A mount made below this one would show in other mount namespaces: it is
        shared and no slave, as mounts of the host's own namespace are. (A systemd
        unit's namespace is a slave of the host's, shared again only within itself.)"""
        tags = [tag.partition(":")[0] for tag in self.propagation]
        return "shared" in tags and "master" not in tags

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies a mount across namespaces (mount ids differ between copies)."""
        return (self.mountpoint, self.devno, self.root)


_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """Mountinfo escapes space, tab, newline and backslash as ``\\ooo``."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """All entries of a mountinfo file, in the kernel's order (parents first)."""
    entries = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        tail = right.split()
        if len(fields) < 6 or len(tail) < 2:
            continue
        entries.append(MountEntry(
            mount_id=int(fields[0]), parent_id=int(fields[1]), devno=fields[2],
            root=unescape(fields[3]), mountpoint=unescape(fields[4]), options=fields[5],
            fstype=tail[0], source=unescape(tail[1]), propagation=tuple(fields[6:])))
    return entries


def read_mountinfo(pid: str = "self") -> list[MountEntry]:
    return parse_mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())


def mounted_at(entries: Iterable[MountEntry], path: Path | str) -> MountEntry | None:
    """The topmost mount whose mount point is ``path``, or None."""
    found = None
    for entry in entries:
        if entry.mountpoint == str(path):
            found = entry
    return found


def containing(entries: Iterable[MountEntry], path: Path) -> MountEntry | None:
    """The mount that ``path`` (absolute, normalized) lies on: the topmost one at the
    longest mount point that is ``path`` or one of its parents."""
    candidates = {str(path), *(str(parent) for parent in path.parents)}
    found = None
    for entry in entries:
        if entry.mountpoint in candidates and (
                found is None or len(entry.mountpoint) >= len(found.mountpoint)):
            found = entry
    return found


def mount(device: str, mountpoint: Path, *, readonly: bool = False,
          options: Iterable[str] = DRIVE_OPTIONS) -> tuple[str, ...]:
    opts = [*options, "ro" if readonly else "rw"]
    return ("mount", "-o", ",".join(opts), "--", device, str(mountpoint))


def umount(mountpoint: Path) -> tuple[str, ...]:
    return ("umount", "--", str(mountpoint))


def bind(source: Path, target: Path) -> tuple[str, ...]:
    return ("mount", "--bind", "--", str(source), str(target))


def remount_readonly(target: Path) -> tuple[str, ...]:
    """Make the mount at ``target`` read-only; bind mounts below it keep their own flags."""
    return ("mount", "-o", "remount,bind,ro", "--", str(target))


def make_private(target: Path) -> tuple[str, ...]:
    return ("mount", "--make-private", "--", str(target))


def persist_new_namespace(file: Path) -> tuple[str, ...]:
    """``unshare``: a new mount namespace (private propagation), kept alive by a bind
    mount of its nsfs file onto ``file``."""
    return ("unshare", f"--mount={file}", "--propagation", "private", "true")


#: How unshare says the kernel refused to bind the new namespace's file (EINVAL).
BIND_REFUSED = "Invalid argument"


def on_cpu(cpu: int, argv: tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` run pinned to CPU ``cpu`` (``taskset``)."""
    return ("taskset", "--cpu-list", str(cpu), *argv)


def sync_fs(path: Path) -> tuple[str, ...]:
    """Flush the filesystem holding ``path`` (syncfs(2) of that filesystem only)."""
    return ("sync", "--file-system", "--", str(path))


def mkfs_ext4(device: str, label: str, *, force: bool = False) -> tuple[str, ...]:
    """ext4 without reserved blocks (nobody but phobos writes a backup drive)."""
    return ("mkfs.ext4", "-q", "-m", "0", "-L", label, *(("-F",) if force else ()), "--",
            device)


def blkid_probe(device: str) -> tuple[str, ...]:
    """Low-level probe of ``device`` (no cache): exit 2 when nothing is found on it."""
    return ("blkid", "-p", "-o", "export", "--", device)


def find_device(spec: str) -> tuple[str, ...]:
    """The device node of ``spec`` (``UUID=...``, ``LABEL=...``, ``PARTUUID=...``,
    ``PARTLABEL=...`` or ``/dev/...``) on stdout, from blkid's probe (no udev needed);
    exit 2 when there is none."""
    if spec.startswith("/dev/"):
        return ("blkid", "-o", "device", "--", spec)
    return ("blkid", "-o", "device", "-t", spec)


def parse_export(text: str) -> dict[str, str]:
    """``KEY=value`` lines of ``blkid -o export``."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values
