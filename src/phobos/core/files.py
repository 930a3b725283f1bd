"""Small file helpers shared by every module that keeps state on disk."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, *, mode: int = 0o644,
                 durable: bool = False, parents: bool = False) -> None:
    """Replace ``path`` by ``data``: readers see the old or the new content, never a mix.

    The temporary file is unique in the same directory, so concurrent writers (parallel
    jobs) never collide; ``durable`` also fsyncs before the rename (state that must
    survive a power cut, like the latched LED colour); ``parents`` creates missing
    parent directories (otherwise a missing directory is the caller's error to report).
    """
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # mkstemp's 0600 would hide it from readers
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def exclusive_lock(lock_file: Path, *, mode: int = 0o644) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_file`` (created with ``mode`` if missing) for the
    with-block: phobos processes take turns on what it guards. A lock file beside the
    guarded file, never the file itself: an atomic rename swaps the file's inode, and a
    lock on the old inode would not exclude a process opening the new one. Closing the
    descriptor releases the lock, also when the process dies."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def private_dir(path: Path) -> None:
    """Make sure ``path`` exists as a directory that only its owner can list or write
    (0711), whatever the umask; an existing one of ours that is more open is closed.

    Others keep the search bit and nothing else: the dashboard's dynamic user reads the
    history with CAP_DAC_READ_SEARCH, but SQLite's access(2) checks of the -wal and -shm
    files ignore capabilities and need it (see :mod:`phobos.web.readonly`). Every file
    in it that holds logs is 0600 (:func:`private_file`), so search alone reads nothing."""
    path.mkdir(mode=0o711, parents=True, exist_ok=True)
    _close(path, 0o711)


def private_file(path: Path) -> None:
    """Make sure ``path`` exists as a file only its owner can read (0600), whatever the
    umask (created empty if missing; an existing one of ours is closed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)
    _close(path, 0o600)


def _close(path: Path, mode: int) -> None:
    st = path.stat()
    # Only what we own: root's phobos must not take over a directory it was pointed at.
    if st.st_uid == os.geteuid() and st.st_mode & 0o777 & ~mode:
        os.chmod(path, mode)
