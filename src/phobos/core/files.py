"""Small file helpers shared by every module that keeps state on disk."""

from __future__ import annotations

import contextlib
import os
import tempfile
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
