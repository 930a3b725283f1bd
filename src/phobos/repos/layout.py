"""Where a file is inside an archive, and back: paths as the person knows them.

Borg stores an archived path without its leading slash: ``/etc/fstab`` of the NAS is
``etc/fstab`` in the archive. A pulled host lands in the holding area below its own
folder, mirroring the host's absolute paths (:mod:`phobos.jobs.pull`): ``/etc/fstab``
of host ``luv`` is ``HOLDING/luv/etc/fstab`` on the NAS, so with ``[storage] holding =
"/backup/holding"`` it is ``backup/holding/luv/etc/fstab`` in the archive, whichever
``rrsync_root`` the host has. phobos names it ``luv:/etc/fstab``.

A restore keeps the path below the target directory: ``/etc/fstab`` lands in
``DIR/etc/fstab`` and ``luv:/etc/fstab`` in ``DIR/luv/etc/fstab`` (Borg's
``--strip-components`` drops the holding area's own components).

Find patterns (:class:`Pattern`) are shell globs (``*``, ``?``, ``[...]``; ``*`` also
matches ``/``): without a ``/`` they match a file's name (``fstab``, ``*.tex``), from
a leading ``/`` the whole path (``/etc/*``), otherwise the end of the path
(``alice/thesis.tex``). ``HOST:`` in front limits them to one pulled host.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from phobos.config.model import Config
from phobos.config.schema import suggest
from phobos.errors import UsageError

_HOST_PREFIX = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*):(.*)$")
_BRACKETS = re.compile(r"\[[^\]]*\]")


@dataclass(frozen=True, slots=True)
class KnownPath:
    """A path as the person knows it: ``host`` is None for the NAS's own files."""

    host: str | None
    path: str  # absolute and normalized: "/etc/fstab", "/" for everything

    def __str__(self) -> str:
        return f"{self.host}:{self.path}" if self.host else self.path


@dataclass(frozen=True, slots=True)
class Layout:
    """The holding area's place in the archives, and the hosts pulled into it."""

    holding: str  # the holding area as an archive path: "backup/holding"
    hosts: tuple[str, ...]

    @classmethod
    def of(cls, config: Config) -> Layout:
        return cls(holding=str(config.storage.holding).strip("/"),
                   hosts=tuple(sorted(config.hosts)))

    def archive_path(self, known: KnownPath) -> str:
        """Where ``known`` is in an archive ("" for the NAS's whole "/")."""
        if known.host is None:
            return known.path.lstrip("/")
        return f"{self.holding}/{known.host}{known.path.rstrip('/')}"

    def known(self, archive_path: str) -> KnownPath:
        """The path as the person knows it, for a path found in an archive."""
        prefix = self.holding + "/"
        if archive_path.startswith(prefix):
            host, _, rest = archive_path[len(prefix):].partition("/")
            if host in self.hosts:
                return KnownPath(host, "/" + rest)
        return KnownPath(None, "/" + archive_path)

    def strip_components(self, known: KnownPath) -> int:
        """How many leading components a restore drops, so that ``luv:/etc/fstab``
        lands in ``DIR/luv/etc/fstab`` (the holding area's own components)."""
        return 0 if known.host is None else len(PurePosixPath(self.holding).parts)

    def restored_path(self, known: KnownPath) -> str:
        """Where ``known`` lands below a restore's target directory (relative)."""
        if known.host is None:
            return known.path.lstrip("/")
        return f"{known.host}{known.path.rstrip('/')}"


def parse_known(text: str, config: Config) -> KnownPath:
    """``/etc/fstab`` or ``HOST:/etc/fstab``; UsageError for anything else (a relative
    path, ``..``, a host that is not in the config)."""
    host, path = None, text
    match = _HOST_PREFIX.match(text)
    if match and not text.startswith("/"):
        host, path = match.group(1), match.group(2)
        if host not in config.hosts:
            known = ", ".join(sorted(config.hosts)) or "none"
            raise UsageError(f"{text!r}: no host named {host!r}{suggest(host, config.hosts)}",
                             f"hosts in {config.source}: {known}; a host no longer in the "
                             "config is still in old archives under its holding folder: "
                             f"{config.storage.holding}/{host}/...")
    if not path.startswith("/"):
        raise UsageError(f"{text!r} is not an absolute path",
                         "give the path as on the machine it came from: /etc/fstab, or "
                         "HOST:/etc/fstab for a pulled host")
    if ".." in path.split("/"):
        raise UsageError(f"{text!r} contains '..'", "give the path without '..'")
    return KnownPath(host, posixpath.normpath(path).replace("//", "/"))


@dataclass(frozen=True, slots=True)
class Pattern:
    """A find pattern (see the module doc), limited to ``host`` if given."""

    glob: str
    host: str | None

    @property
    def by_name(self) -> bool:
        return "/" not in self.glob

    @property
    def path_glob(self) -> str:
        """The glob for the whole path (a relative one matches the end of the path)."""
        return self.glob if self.glob.startswith("/") else "*/" + self.glob

    def matches(self, layout: Layout, archive_path: str) -> bool:
        """Whether an archived path matches: by the path as the person knows it, or
        (searching every host) by its path on the NAS."""
        known = layout.known(archive_path)
        if self.host is not None and known.host != self.host:
            return False
        if self.by_name:
            return fnmatch.fnmatchcase(posixpath.basename(archive_path), self.glob)
        if fnmatch.fnmatchcase(known.path, self.path_glob):
            return True
        return self.host is None and fnmatch.fnmatchcase("/" + archive_path, self.path_glob)

    def sql_globs(self, layout: Layout) -> tuple[str, list[str]]:
        """A prefilter for SQLite's GLOB: ("name" or "path", globs). It matches at least
        what :meth:`matches` accepts (bracket sets are widened to ``?``, because SQLite
        spells negation ``[^...]`` where the shell says ``[!...]``)."""
        wide = _BRACKETS.sub("?", self.glob)
        if self.by_name:
            return "name", [wide]
        whole = wide if wide.startswith("/") else "*/" + wide
        hosts = layout.hosts if self.host is None else (self.host,)
        globs = [f"{_sql_literal(layout.holding)}/{_sql_literal(host)}{whole}"
                 for host in hosts]
        if self.host is None:
            globs.append(whole[1:] if whole.startswith("/") else whole)
        return "path", globs


def _sql_literal(text: str) -> str:
    """``text`` matched literally by GLOB: its wildcard characters in brackets."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def parse_pattern(text: str, host: str | None, config: Config) -> Pattern:
    """A find pattern from the command line; ``HOST:`` in front is the same as ``host``."""
    match = _HOST_PREFIX.match(text)
    if match and not text.startswith("/") and match.group(1) in config.hosts:
        if host is not None and host != match.group(1):
            raise UsageError(f"{text!r} names host {match.group(1)}, --host says {host}")
        host, text = match.group(1), match.group(2)
    if host is not None and host not in config.hosts:
        known = ", ".join(sorted(config.hosts)) or "none"
        raise UsageError(f"no host named {host!r}{suggest(host, config.hosts)}",
                         f"hosts in {config.source}: {known}")
    if not text or text in ("/", "*/"):
        raise UsageError(f"{text!r} would match everything",
                         "name a file (fstab, '*.tex') or a path ('/etc/*')")
    return Pattern(glob=text.rstrip("/") or "/", host=host)
