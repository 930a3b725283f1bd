"""``phobos find``: which archives hold the paths matching a pattern, every version of
each (archive, time, size, mtime), newest first, a file that did not change between
archives (same type, size and mtime) shown once with the span of archives holding it.

The answer comes from the repository's catalog (:mod:`phobos.repos.catalog`). Keeping
it current costs one ``borg list`` of the archives, plus one ``borg list`` of the
contents of each archive the catalog has not seen (the first time: every archive);
archives gone from the repository (pruned) are dropped. With the repository busy (a
job holds it) or ``--cached``, the catalog answers alone and says how old it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from phobos.config.model import Config
from phobos.core.proc import Log, StepRunner, direct_runner
from phobos.errors import Busy
from phobos.repos.borg_locks import guarded
from phobos.repos.catalog import Catalog, CatalogArchive, Row, slots_of
from phobos.repos.layout import KnownPath, Layout, Pattern
from phobos.repos.repo import Repo
from phobos.repos.resources import cli_lock, repo_resources
from phobos.tools import borg as borgtool
from phobos.tools.borg_contents import TYPE_WORDS, parse_items, parse_repository_id

PROGRESS_EVERY = 2.0  # seconds between "listed N of M archives" lines


@dataclass(frozen=True, slots=True, kw_only=True)
class Listed:
    """What a refresh found: the archives the repository (or copy) holds now, by id,
    and how many of them Borg had to list because the catalog had not seen them."""

    live: dict[str, dict[str, Any]]
    listed_now: int
    dropped: int


def refresh(catalog: Catalog, repo: Repo, run: StepRunner, log: Log, *,
            drop_missing: bool = True,
            wanted: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None
            ) -> Listed:
    """Compare the catalog with the repository's archives: list into it the archives it
    lacks (all of them, or those ``wanted`` picks), drop those the repository no longer
    has (unless ``drop_missing`` is off: a drive's copy holds another set)."""
    listing = run(repo.step("list", borgtool.list_argv(repo.borg, repo.access),
                            capture=True)).stdout
    if catalog.use_repository(parse_repository_id(listing)):
        log(f"the catalog of {repo.name} described another repository: starting afresh")
    archives = borgtool.parse_archives(listing)
    known = catalog.archives()
    missing = [a for a in archives if a["id"] not in known]
    if wanted is not None:
        missing = wanted(missing)
    list_archives(catalog, repo, run, log, missing)
    dropped = 0
    if drop_missing:
        dropped = catalog.drop(set(known) - {a["id"] for a in archives})
        catalog.mark_refreshed()
    return Listed(live={a["id"]: a for a in archives}, listed_now=len(missing),
                  dropped=dropped)


def list_archives(catalog: Catalog, repo: Repo, run: StepRunner, log: Log,
                  archives: Iterable[dict[str, Any]]) -> None:
    """``borg list`` the contents of ``archives`` into the catalog, saying how far it
    got every few seconds: the first listing of a big repository takes a while.

    One Borg at a time: concurrent Borgs contend for the mutex guarding the lock
    roster, and a Borg that finds it taken sleeps a tenth of ``--lock-wait`` (a
    minute, with phobos's long lock waits) before it tries again."""
    todo = list(archives)
    started = last = time.monotonic()
    for done, archive in enumerate(todo, start=1):
        result = run(repo.step("list-files", borgtool.list_files_argv(
            repo.borg, repo.access, archive["name"]), capture=True))
        catalog.add(archive["id"], archive["name"], archive["time"], parse_items(result.stdout))
        if time.monotonic() - last >= PROGRESS_EVERY and done < len(todo):
            last = time.monotonic()
            rate = done / (last - started)
            log(f"listed {done} of {len(todo)} archives into the catalog; about "
                f"{(len(todo) - done) / rate:.0f}s left")


# --- searching --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Version:
    """One version of a path: the newest archive holding it, and how many do."""

    type: str
    size: int
    mtime: str
    archive: str
    time: str
    archives: int
    first: str  # the time of the oldest archive holding this version

    def as_json(self) -> dict[str, Any]:
        return {"type": TYPE_WORDS.get(self.type, self.type), "size": self.size,
                "mtime": self.mtime, "archive": self.archive, "time": self.time,
                "archives": self.archives, "first": self.first}


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """A path that matched, as the person knows it, with its versions (newest first)."""

    known: KnownPath
    archive_path: str
    versions: tuple[Version, ...]

    def as_json(self) -> dict[str, Any]:
        return {"path": str(self.known), "host": self.known.host,
                "archive_path": self.archive_path,
                "versions": [v.as_json() for v in self.versions]}


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """The answer of ``phobos find``, and how fresh the catalog behind it is."""

    repo: str
    matches: list[Match]
    more: int  # matching paths left out by the limit
    archives: int  # archives searched
    listed_now: int
    refreshed: float | None  # when the catalog was last compared with the repository
    fresh: bool  # compared now (False: the catalog alone answered)
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        age = None if self.refreshed is None else max(0.0, time.time() - self.refreshed)
        return {"repo": self.repo, "matches": [m.as_json() for m in self.matches],
                "more": self.more, **self.extra,
                "catalog": {"archives": self.archives, "listed_now": self.listed_now,
                            "refreshed": self.refreshed, "age": age, "fresh": self.fresh,
                            "note": self.note}}


def versions(rows: Iterable[Row], archives: dict[int, CatalogArchive]) -> list[Version]:
    """Versions of one path from its catalog rows, counting only ``archives`` (by
    slot: those the repository holds now), newest first."""
    found = []
    for row in rows:
        holding = sorted((archives[s] for s in slots_of(row.holders) if s in archives),
                         key=lambda a: a.time)
        if holding:
            found.append(Version(type=row.type, size=row.size, mtime=row.mtime,
                                 archive=holding[-1].name, time=holding[-1].time,
                                 archives=len(holding), first=holding[0].time))
    found.sort(key=lambda v: (v.time, v.mtime), reverse=True)
    return found


def search(catalog: Catalog, layout: Layout, pattern: Pattern,
           live: Collection[str] | None, limit: int = 0) -> tuple[list[Match], int]:
    """The matching paths in the archives ``live`` (ids; None: every archive in the
    catalog), sorted by path; at most ``limit`` of them (0: all) and how many more."""
    archives = {a.slot: a for a in catalog.archives().values() if live is None or a.id in live}
    column, globs = pattern.sql_globs(layout)
    by_path: dict[str, list[Row]] = {}
    for row in catalog.search(column, globs):
        if pattern.matches(layout, row.path):
            by_path.setdefault(row.path, []).append(row)
    matches = []
    for path, rows in by_path.items():
        found = versions(rows, archives)
        if found:
            matches.append(Match(known=layout.known(path), archive_path=path,
                                 versions=tuple(found)))
    matches.sort(key=lambda m: (m.known.host or "", m.known.path))
    if limit and len(matches) > limit:
        return matches[:limit], len(matches) - limit
    return matches, 0


# --- the whole of `phobos find` ---------------------------------------------------------


def find(config: Config, name: str, pattern: Pattern, *, cached: bool, limit: int,
         log: Log) -> Found:
    """Refresh the catalog of repository ``name`` (unless ``cached``, or the repository
    is busy: then the catalog answers alone, and says so), then search it."""
    catalog = Catalog.open(config.paths.state, name)
    try:
        listed, note = None, None
        if not cached:
            try:
                listed = _refresh_repo(config, name, catalog, log)
            except Busy as exc:
                note = f"{exc.message}: answered from the catalog alone"
        elif not catalog.archives():
            note = "the catalog is empty: run `phobos find` once without --cached"
        matches, more = search(catalog, Layout.of(config), pattern,
                               None if listed is None else listed.live, limit)
        return Found(repo=name, matches=matches, more=more,
                     archives=len(listed.live) if listed else len(catalog.archives()),
                     listed_now=listed.listed_now if listed else 0,
                     refreshed=catalog.refreshed, fresh=listed is not None, note=note)
    finally:
        catalog.close()


def _refresh_repo(config: Config, name: str, catalog: Catalog, log: Log) -> Listed:
    from phobos import namespace

    namespace.enter_for_job(config, repo_resources(config, name, write=False), log)
    repo = Repo.open(config, name)
    with cli_lock(config, name, write=False, what="find"), catalog.refreshing():
        return refresh(catalog, repo, guarded(direct_runner(log, announce=False), repo, log),
                       log)
