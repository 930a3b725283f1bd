"""The catalog: what Borg listed of each archive, kept so that each archive is listed
only once (an archive never changes) and ``phobos find`` answers in a moment.

One SQLite file per repository, ``STATE/catalog/NAME.sqlite`` (mode 0600: it names
every backed-up file). It stores *versions*, not archive listings: a version is a path
with its type, size and mtime, and a bit set of the archives holding it, so a file
that did not change costs one row however many archives hold it, and "every version
of every matching file, newest first" is one query. Bits are archive *slots*; a slot
is freed (its bit cleared everywhere) when its archive is dropped, so the sets stay
as small as the number of archives kept.

Tables: ``archives`` (slot, Borg's archive id, name, time, items, when listed),
``paths`` (each path once, with its name for name patterns), ``versions`` and
``meta`` (the repository id; when the catalog was last compared with a listing).
A catalog whose repository id differs from the repository's (a new repository at the
same path) is emptied. Drive copies of the repository share its catalog: same
repository, same archive ids.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from phobos.core.files import exclusive_lock
from phobos.tools.borg_contents import Item

SCHEMA = """
CREATE TABLE IF NOT EXISTS archives (
    slot INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, name TEXT NOT NULL,
    time TEXT NOT NULL, items INTEGER NOT NULL, listed REAL NOT NULL);
CREATE TABLE IF NOT EXISTS paths (
    pid INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, name TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS paths_by_name ON paths (name);
CREATE TABLE IF NOT EXISTS versions (
    vid INTEGER PRIMARY KEY, pid INTEGER NOT NULL, type TEXT NOT NULL,
    size INTEGER NOT NULL, mtime TEXT NOT NULL, holders BLOB NOT NULL,
    UNIQUE (pid, type, size, mtime));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_ADD_VERSION = """
INSERT INTO versions (pid, type, size, mtime, holders)
    SELECT pid, ?2, ?3, ?4, set_bit(x'', ?5) FROM paths WHERE path = ?1
    ON CONFLICT (pid, type, size, mtime) DO UPDATE SET holders = set_bit(holders, ?5)
"""


def _bits(blob: bytes) -> int:
    return int.from_bytes(blob, "little")


def _blob(bits: int) -> bytes:
    return bits.to_bytes((bits.bit_length() + 7) // 8, "little")


def _set_bit(blob: bytes, slot: int) -> bytes:
    return _blob(_bits(blob) | (1 << slot))


def _clear_bit(blob: bytes, slot: int) -> bytes:
    return _blob(_bits(blob) & ~(1 << slot))


def _has_bit(blob: bytes, slot: int) -> bool:
    return bool(_bits(blob) >> slot & 1)


def slots_of(blob: bytes) -> list[int]:
    """The archive slots set in a version's ``holders``."""
    bits, slots, slot = _bits(blob), [], 0
    while bits:
        if bits & 1:
            slots.append(slot)
        bits >>= 1
        slot += 1
    return slots


@dataclass(frozen=True, slots=True)
class CatalogArchive:
    slot: int
    id: str
    name: str
    time: str  # Borg's ISO local time of the archive's start
    items: int
    listed: float


@dataclass(frozen=True, slots=True)
class Row:
    """One version of one path: in the archives whose slots are set in ``holders``."""

    path: str
    type: str
    size: int
    mtime: str
    holders: bytes


def _glob_literal(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


class Catalog:
    """One repository's catalog (see the module doc). Not shared between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.close(fd)
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        for name, func, args in (("set_bit", _set_bit, 2), ("clear_bit", _clear_bit, 2),
                                 ("has_bit", _has_bit, 2)):
            self.db.create_function(name, args, func, deterministic=True)
        self.db.executescript(SCHEMA)

    @classmethod
    def open(cls, state_dir: Path, repo_name: str) -> Catalog:
        return cls(state_dir / "catalog" / f"{repo_name}.sqlite")

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextlib.contextmanager
    def refreshing(self) -> Iterator[None]:
        """One refresh at a time per catalog (a second phobos waits, then finds the
        archives the first listed already in the catalog)."""
        with exclusive_lock(self.path.with_suffix(".lock"), mode=0o600):
            yield

    # --- meta --------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def refreshed(self) -> float | None:
        """When the catalog was last compared with a listing of the repository."""
        value = self._meta("refreshed")
        return None if value is None else float(value)

    def mark_refreshed(self, when: float | None = None) -> None:
        with self._write():
            self._set_meta("refreshed", repr(time.time() if when is None else when))

    def use_repository(self, repo_id: str) -> bool:
        """Bind the catalog to repository ``repo_id``; empties it (and returns True) if
        it described another repository."""
        known = self._meta("repository")
        if known == repo_id:
            return False
        with self._write():
            for table in ("archives", "paths", "versions", "meta"):
                self.db.execute(f"DELETE FROM {table}")  # fixed names, not input
            self._set_meta("repository", repo_id)
        return known is not None

    # --- archives ----------------------------------------------------------------------

    def archives(self) -> dict[str, CatalogArchive]:
        """The archives listed into the catalog, by Borg's archive id."""
        rows = self.db.execute("SELECT slot, id, name, time, items, listed FROM archives")
        return {row[1]: CatalogArchive(*row) for row in rows}

    def add(self, archive_id: str, name: str, when: str, items: Sequence[Item]) -> None:
        """Record what archive ``archive_id`` holds (nothing if it is there already)."""
        with self._write():
            if self.db.execute("SELECT 1 FROM archives WHERE id = ?",
                               (archive_id,)).fetchone():
                return
            slot = self._free_slot()
            self.db.execute("INSERT INTO archives VALUES (?, ?, ?, ?, ?, ?)",
                            (slot, archive_id, name, when, len(items), time.time()))
            self.db.executemany("INSERT OR IGNORE INTO paths (path, name) VALUES (?, ?)",
                                ((i.path, posixpath.basename(i.path)) for i in items))
            self.db.executemany(_ADD_VERSION, ((i.path, i.type, i.size, i.mtime, slot)
                                               for i in items))

    def _free_slot(self) -> int:
        used = [row[0] for row in self.db.execute("SELECT slot FROM archives ORDER BY slot")]
        return next((slot for slot, taken in enumerate(used) if slot != taken), len(used))

    def drop(self, archive_ids: Iterable[str]) -> int:
        """Forget archives (pruned from the repository); returns how many."""
        known = self.archives()
        gone = [known[i] for i in archive_ids if i in known]
        with self._write():
            for archive in gone:
                self.db.execute("UPDATE versions SET holders = clear_bit(holders, ?1) "
                                "WHERE has_bit(holders, ?1)", (archive.slot,))
                self.db.execute("DELETE FROM archives WHERE slot = ?", (archive.slot,))
            if gone:
                self.db.execute("DELETE FROM versions WHERE length(holders) = 0")
                self.db.execute("DELETE FROM paths WHERE pid NOT IN "
                                "(SELECT pid FROM versions)")
        return len(gone)

    # --- queries -----------------------------------------------------------------------

    def search(self, column: str, globs: Sequence[str]) -> list[Row]:
        """Versions whose path (``column`` "path") or name ("name") matches any glob."""
        if column not in ("path", "name") or not globs:
            raise ValueError(f"cannot search by {column!r}")
        where = " OR ".join(f"p.{column} GLOB ?" for _ in globs)
        return self._rows(where, globs)

    def versions_of(self, path: str) -> list[Row]:
        """Every version of the archive path ``path``."""
        return self._rows("p.path = ?", [path])

    def _rows(self, where: str, args: Sequence[str]) -> list[Row]:
        query = ("SELECT p.path, v.type, v.size, v.mtime, v.holders FROM paths p "
                 f"JOIN versions v ON v.pid = p.pid WHERE {where}")
        return [Row(*row) for row in self.db.execute(query, list(args))]

    def size_below(self, slot: int, path: str) -> tuple[int, int]:
        """(items, bytes) of ``path`` and everything below it in the archive in
        ``slot`` ("" is the whole archive)."""
        if path:
            where, args = "(p.path = ? OR p.path GLOB ?)", [path, _glob_literal(path) + "/*"]
        else:
            where, args = "1", []
        row = self.db.execute(
            "SELECT count(*), coalesce(sum(v.size), 0) FROM paths p JOIN versions v "
            f"ON v.pid = p.pid WHERE {where} AND has_bit(v.holders, ?)",
            [*args, slot]).fetchone()
        return int(row[0]), int(row[1])
