"""Putting restored files in place without ever writing outside the target directory.

Borg extracts into an empty staging directory made inside the target (same
filesystem: moving out of it is a rename). Nothing there existed before, so nothing
Borg writes can follow a symbolic link that was already there. The result is then
moved into place component by component, looking at each existing entry with
``lstat``: a symbolic link in the target is never followed, only replaced (with
``--overwrite``) or refused. The staging directory is removed whatever happens.

Rules, checked before anything is extracted (:func:`check_target`):

- never into ``/`` (restoring over the running system);
- every directory between the target and the restored path that exists must be a
  real directory (not a symbolic link, not a file);
- an existing restored path (a non-empty directory, anything else) is replaced only
  with ``--overwrite``: files are replaced, directories merged (what the archive has
  replaces what is there; what only the target has stays).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from phobos.errors import PhobosError, UsageError

STAGING_PREFIX = ".phobos-restore-"


def _is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _occupied(path: Path) -> bool:
    """Something is there (an empty directory does not count)."""
    if not os.path.lexists(path):
        return False
    return not _is_real_dir(path) or any(os.scandir(path))


def check_target(target: Path, relpath: str, *, overwrite: bool) -> Path:
    """Where ``relpath`` will land below ``target`` (see the module doc for the rules);
    UsageError naming the problem otherwise."""
    if not target.is_absolute():
        raise ValueError(f"{target} is not absolute")
    if os.path.realpath(target) == "/":
        raise UsageError(f"refusing to restore into {target}: that is the running system's "
                         "root", "restore into an empty directory (--to /srv/restore) and "
                         "copy what you need from there")
    if os.path.lexists(target) and not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory", "give a directory")
    here = target
    parts = [p for p in relpath.split("/") if p]
    for index, part in enumerate(parts[:-1] if parts else []):
        here = here / part
        if os.path.islink(here):
            raise UsageError(f"{here} is a symbolic link: phobos never restores through "
                             "one", "restore into another directory, or remove the link")
        if os.path.lexists(here) and not _is_real_dir(here):
            raise UsageError(f"{here} is in the way: the restore needs a directory there "
                             f"for {'/'.join(parts[index + 1:])}", "move it away")
    destination = target / relpath if relpath else target
    if _occupied(destination) and not overwrite:
        raise UsageError(f"{destination} exists" + (" and is not empty" if
                                                     _is_real_dir(destination) else ""),
                         "restore into another directory, or add --overwrite to replace "
                         "what the archive has")
    return destination


@dataclass(frozen=True, slots=True)
class Anchor:
    """The nearest existing directory of a target, as seen now: to notice if joining
    the backup namespace shows another filesystem there (mounted after the namespace
    was made, so invisible inside it)."""

    path: Path
    device: int
    inode: int

    @classmethod
    def of(cls, target: Path) -> Anchor:
        here = target
        while not here.exists():
            here = here.parent
        st = os.stat(here)
        return cls(here, st.st_dev, st.st_ino)

    def check(self) -> None:
        st = os.stat(self.path)
        if (st.st_dev, st.st_ino) != (self.device, self.inode):
            raise PhobosError(f"{self.path} is another directory inside the backup mount "
                              "namespace (its filesystem was mounted after the namespace "
                              "was made)", "restore into a directory on the root "
                              "filesystem, or recreate the namespace: phobos ns destroy")


@contextlib.contextmanager
def staging(target: Path) -> Iterator[Path]:
    """An empty directory inside ``target`` (created if missing), removed afterwards."""
    target.mkdir(parents=True, exist_ok=True)
    place = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target))
    try:
        yield place
    finally:
        shutil.rmtree(place, ignore_errors=True)


def place(staged: Path, relpath: str, target: Path) -> None:
    """Move ``staged/relpath`` to ``target/relpath`` (see the module doc)."""
    parts = [p for p in relpath.split("/") if p]
    source, dest = staged, target
    for part in parts[:-1]:
        source, dest = source / part, dest / part
        if not os.path.lexists(dest):
            os.rename(source, dest)  # the rest of the path is new: move it whole
            return
        if not _is_real_dir(dest):
            raise PhobosError(f"{dest} changed during the restore: not a directory now")
    if parts:
        merge(source / parts[-1], dest / parts[-1])
    else:
        merge(source, dest)


def merge(source: Path, dest: Path) -> None:
    """Put ``source`` where ``dest`` is: directories are merged, anything else replaces
    what is at ``dest`` (a symbolic link there is replaced, never followed)."""
    if _is_real_dir(source) and _is_real_dir(dest):
        for entry in os.scandir(source):
            merge(source / entry.name, dest / entry.name)
        _copy_metadata(source, dest)
        if source.name.startswith(STAGING_PREFIX):
            return  # the staging directory itself: removed by staging()
        os.rmdir(source)
        return
    if _is_real_dir(dest):
        shutil.rmtree(dest)
    elif os.path.lexists(dest):
        os.unlink(dest)
    os.rename(source, dest)


def _copy_metadata(source: Path, dest: Path) -> None:
    """Owner, mode and times of a merged directory, as the archive has them."""
    if source.name.startswith(STAGING_PREFIX):
        return  # the staging directory's own mode and times mean nothing
    st = os.lstat(source)
    with contextlib.suppress(PermissionError):
        os.chown(dest, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(dest, stat.S_IMODE(st.st_mode))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
