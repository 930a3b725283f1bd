"""``phobos find PATTERN``: which archives hold the matching paths, every version of each,
newest first. Output only; the work is in :mod:`phobos.repos.find`."""

from __future__ import annotations

import argparse
import time
from typing import Any

from phobos.cli.common import config_names, json_flag, load_config, print_json, verb
from phobos.core.console import say
from phobos.errors import ExitCode, UsageError


def register(verbs: Any) -> None:
    sub = verb(verbs, "find", "which archives hold a file: every version (archive, time, "
               "size, mtime), newest first", cmd_find)
    sub.add_argument("pattern", help="a file name (fstab, '*.tex'), a path from / "
                     "('/etc/*'), or the end of one ('alice/thesis.tex'); HOST:PATTERN "
                     "for a pulled host; * matches / too")
    config_names(sub.add_argument("--repo", metavar="NAME",
                                  help="the repository (default: the only one)"), "repos")
    config_names(sub.add_argument("--host", metavar="HOST",
                                  help="only the files pulled from this host"), "hosts")
    sub.add_argument("--cached", action="store_true",
                     help="answer from the catalog alone, without asking Borg (fast; it "
                     "says how old the catalog is)")
    sub.add_argument("--limit", type=int, default=100, metavar="N",
                     help="at most N paths (default 100; 0: all)")
    json_flag(sub)


def only_repo(config: Any, name: str | None) -> str:
    """``--repo``, or the one repository of the config."""
    from phobos.repos.repo import repo_config

    if name is not None:
        repo_config(config, name)
        return name
    if len(config.repos) == 1:
        return str(next(iter(config.repos)))
    if not config.repos:
        raise UsageError(f"no repositories in {config.source}", "add a [repos.NAME] table")
    raise UsageError("several repositories: " + ", ".join(sorted(config.repos)),
                     "pick one with --repo NAME")


def cmd_find(args: argparse.Namespace) -> ExitCode:
    from phobos.repos.find import find
    from phobos.repos.layout import parse_pattern

    config = load_config(args)
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or more")
    pattern = parse_pattern(args.pattern, args.host, config)
    found = find(config, only_repo(config, args.repo), pattern, cached=args.cached,
                 limit=args.limit, log=say)
    if args.json:
        print_json({"pattern": args.pattern, "host": pattern.host, **found.as_json()})
    else:
        _print(found)
    return ExitCode.OK


def short_time(iso: str) -> str:
    """``2026-11-29 03:00`` from Borg's ``2026-11-29T03:00:01.000000``."""
    return iso.replace("T", " ")[:16]


def _print(found: Any) -> None:
    from phobos.jobs.archive import human_size
    from phobos.tools.borg_contents import TYPE_WORDS

    for match in found.matches:
        print(f"{match.known}")
        for v in match.versions:
            kind = "" if v.type == "-" else f"  ({TYPE_WORDS.get(v.type, v.type)})"
            span = (f"in {v.archives} archives since {short_time(v.first)}"
                    if v.archives > 1 else "in this archive only")
            print(f"  {short_time(v.time)}  {v.archive}  {human_size(v.size):>9}  "
                  f"modified {short_time(v.mtime)}  {span}{kind}")
    versions = sum(len(m.versions) for m in found.matches)
    more = f" (and {found.more} more paths: narrow the pattern or use --limit)" \
        if found.more else ""
    if not found.matches:
        print(f"no archive of repository {found.repo} holds a matching path")
    else:
        print(f"{len(found.matches)} paths{more}, {versions} versions")
    print(catalog_line(found))
    if found.note:
        print(f"note: {found.note}")


def catalog_line(found: Any) -> str:
    """How fresh the answer is: compared with the repository now, or how long ago."""
    from phobos.core.model import format_duration

    head = f"searched {found.archives} archives of repository {found.repo}"
    if found.fresh:
        return f"{head} (catalog up to date; {found.listed_now} archives listed now)"
    if found.refreshed is None:
        return f"{head} (catalog never compared with the repository)"
    age = format_duration(max(0.0, time.time() - found.refreshed))
    return f"{head} (catalog as of {age} ago: not compared with the repository now)"
