"""``phobos repo``: init, info, list, key-export and drill of Borg repositories, and
trust (pin the host key of a repository's server, print its authorized_keys line).

Output only: the work is in :mod:`phobos.repos`. Each verb that runs Borg takes the
repository's phobos lock first. While a job holds it, ``info`` and ``list`` (they only read) wait,
saying which job it is and when it should end (``--no-wait``: exit 3 with that message);
the others fail at once with it, instead of letting Borg wait behind the job. With
``--json`` a failure prints a JSON error object on stdout too.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phobos.cli.common import (
    config_names,
    decide_pin,
    json_errors,
    json_flag,
    load_config,
    no_action,
    print_json,
    show_host_keys,
    verb,
    when,
)
from phobos.core import locks
from phobos.core.console import say
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    """Add ``repo`` and its actions to the top-level subparsers."""
    sub = verb(verbs, "repo", "Borg repositories: init, info, list, key-export, drill, "
               "trust", no_action)
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    _repo_action(actions, "init", "create the repository (encryption from the config)", cmd_init)
    info = _repo_action(actions, "info", "repository details, last archive, check coverage",
                        json_errors(cmd_info))
    json_flag(info)
    _no_wait_flag(info)
    listing = _repo_action(actions, "list", "configured repositories, or one's archives",
                           json_errors(cmd_list), name_optional=True)
    json_flag(listing)
    _no_wait_flag(listing)
    export = _repo_action(actions, "key-export", "export the repository key to FILE (keep it "
                          "off the NAS)", cmd_key_export)
    export.add_argument("file", type=Path, help="where to write the key")
    export.add_argument("--paper", action="store_true", help="printable text form")
    drill = _repo_action(actions, "drill", "restore a sample of files and compare with the "
                         "sources", cmd_drill)
    drill.add_argument("--sample", type=int, default=20, help="files to restore (default 20)")
    drill.add_argument("--max-bytes", type=int, default=256 * 1024 * 1024,
                       help="at most this many bytes restored (default 256 MiB)")
    config_names(drill.add_argument("--archives-of", metavar="JOB",
                                    help="drill the latest archive of this archive job"),
                 "jobs")
    json_flag(drill)
    trust = _repo_action(actions, "trust", "for a repository over SSH (url): create its "
                         "key, pin its server's host key after showing the fingerprint, "
                         "print the line for the server's authorized_keys", cmd_trust)
    trust.add_argument("--yes", action="store_true",
                       help="pin without asking (check the fingerprint first!)")
    trust.add_argument("--fingerprint", metavar="SHA256:...",
                       help="pin only if the server offers a key with this fingerprint")
    trust.add_argument("--rekey", action="store_true",
                       help="accept a CHANGED host key (after the same confirmation)")
    json_flag(trust)


def _repo_action(actions: Any, name: str, help_text: str, handler: Any,
                 name_optional: bool = False) -> argparse.ArgumentParser:
    parser = verb(actions, name, help_text, handler)
    config_names(parser.add_argument("name", nargs="?" if name_optional else None,
                                     help="repository name ([repos.NAME] in the config)"),
                 "repos")
    return parser


def _no_wait_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true",
                        help="while a job uses the repository, exit 3 (naming the job and "
                        "when it should end) instead of waiting for it")


def _open(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(config, Repo, runner) for the named repository."""
    from phobos import namespace
    from phobos.core.proc import direct_runner
    from phobos.repos.borg_locks import guarded
    from phobos.repos.repo import Repo, repo_config

    config = load_config(args)
    repo_config(config, args.name)
    # With [storage] device the repository exists only inside the backup namespace; this
    # process joins it, as `phobos run` does for jobs.
    namespace.enter_for_job(config, [locks.repo(args.name, write=True)], say)
    repo = Repo.open(config, args.name)
    return config, repo, guarded(direct_runner(say, announce=False), repo, say)


# --- verbs --------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> ExitCode:
    from phobos.repos.operations import init
    from phobos.repos.resources import cli_lock

    config, repo, run = _open(args)
    with cli_lock(config, args.name, write=True, what="init"):
        init(repo, run)
    print(f"repository {args.name} initialized at {repo.config.location} "
          f"({repo.config.encryption}); export its key now: "
          f"phobos repo key-export {args.name} FILE")
    return ExitCode.OK


def cmd_info(args: argparse.Namespace) -> ExitCode:
    from phobos.core.history import History
    from phobos.repos.operations import info
    from phobos.repos.resources import cli_lock
    from phobos.repos.summary import summary

    config, repo, run = _open(args)
    with cli_lock(config, args.name, write=False, what="info", wait=not args.no_wait,
                  tell=say):
        borg_info = info(repo, run)
    history = History.open(config.paths.state)
    try:
        known = summary(config, args.name, history)
    finally:
        history.close()
    if args.json:
        print_json({"repo": known, "borg": borg_info})
        return ExitCode.OK
    _print_info(known, borg_info)
    return ExitCode.OK


def _print_info(known: dict[str, Any], borg_info: dict[str, Any]) -> None:
    from phobos.jobs.archive import human_size

    stats = borg_info.get("cache", {}).get("stats", {})
    print(f"repository {known['name']}: {known['path']}")
    print(f"  encryption: {borg_info.get('encryption', {}).get('mode', '?')}, "
          f"id {borg_info.get('repository', {}).get('id', '?')[:16]}")
    if stats:
        print(f"  stored: {human_size(stats.get('unique_csize', 0))} "
              f"(all archives: {human_size(stats.get('total_size', 0))} original)")
    if known["segments"] is not None:
        print(f"  segments: {known['segments']}")
    for line in _summary_lines(known):
        print(f"  {line}")


def _summary_lines(known: dict[str, Any]) -> list[str]:
    from phobos.jobs.archive import human_size

    lines = []
    last = known.get("last_archive")
    if last:
        lines.append(f"last archive: {last.get('archive')} by job {last['job']} "
                     f"({when(last['started'])}, {last.get('nfiles', '?')} files, "
                     f"{human_size(last.get('deduplicated_size', 0))} new)")
    check = known.get("last_check")
    if known.get("check_position") is not None:
        done = ("" if known["pass_coverage"] is None
                else f"{100 * known['pass_coverage']:.1f}% ")
        lines.append(f"check pass in progress: {done}(up to segment "
                     f"{known['check_position']})")
    if check:
        full = check.get("last_full_pass")
        lines.append(f"last check: {when(check['started'])} by job {check['job']}; "
                     f"last full pass completed: {when(full) if full else 'never'}")
    lines += [f"Borg lock: {text}" for text in known.get("borg_locks", [])]
    return lines


def cmd_list(args: argparse.Namespace) -> ExitCode:
    if args.name is None:
        return _list_repos(args)
    from phobos.repos.operations import archives
    from phobos.repos.resources import cli_lock

    config, repo, run = _open(args)
    with cli_lock(config, args.name, write=False, what="list", wait=not args.no_wait,
                  tell=say):
        found = archives(repo, run)
    if args.json:
        print_json({"repo": args.name, "archives": found})
        return ExitCode.OK
    for archive in found:
        print(f"{archive['name']:<48} {archive['time']}  {archive['id'][:12]}")
    return ExitCode.OK


def _list_repos(args: argparse.Namespace) -> ExitCode:
    from phobos import namespace
    from phobos.core.history import History
    from phobos.repos.summary import summary

    config = load_config(args)
    namespace.enter_for_job(config, [locks.repo(name, write=True) for name in config.repos],
                            say)
    history = History.open(config.paths.state)
    try:
        known = [summary(config, name, history) for name in sorted(config.repos)]
    finally:
        history.close()
    if args.json:
        print_json({"repos": known})
        return ExitCode.OK
    for entry in known:
        state = " (not initialized: phobos repo init)" if entry["initialized"] is False else ""
        print(f"{entry['name']}: {entry['path']}{state}")
        for line in _summary_lines(entry):
            print(f"  {line}")
    return ExitCode.OK


def cmd_key_export(args: argparse.Namespace) -> ExitCode:
    from phobos.repos.key_exports import record_key_export
    from phobos.repos.operations import key_export
    from phobos.repos.resources import cli_lock

    config, repo, run = _open(args)
    with cli_lock(config, args.name, write=False, what="key-export"):
        key_export(repo, run, args.file.resolve(), paper=args.paper)
    record_key_export(config, args.name, args.file.resolve(), paper=args.paper)
    print(f"key of {args.name} written to {args.file}; keep it somewhere other than the NAS")
    return ExitCode.OK


def cmd_drill(args: argparse.Namespace) -> ExitCode:
    from phobos.errors import UsageError
    from phobos.jobs.drill import archives_glob
    from phobos.repos.drill import drill, drill_failure
    from phobos.repos.resources import cli_lock

    config, repo, run = _open(args)
    if args.archives_of is not None and args.archives_of not in config.jobs:
        raise UsageError(f"no job named {args.archives_of!r}", "see `phobos status`")
    with cli_lock(config, args.name, write=False, what="drill"):
        report = drill(repo, run, sample=args.sample, max_bytes=args.max_bytes,
                       glob=archives_glob(config, args.archives_of))
    if args.json:
        print_json(report.as_stats())
    else:
        print(f"drill of {report.archive}: {report.files_checked} files compared, "
              f"{len(report.mismatches)} mismatches, {report.skipped_changed} changed and "
              f"{report.skipped_missing} missing at the source, {report.bytes_read} bytes "
              "restored")
        for path in report.mismatches:
            print(f"  MISMATCH {path}")
    error = drill_failure(report)
    if error is not None:
        raise error
    return ExitCode.OK


def cmd_trust(args: argparse.Namespace) -> ExitCode:
    from phobos.repos.remote import trust
    from phobos.repos.repo import repo_config

    config = load_config(args)
    repo_config(config, args.name)

    def confirm(new: Any, old: Any) -> bool:
        show_host_keys(f"the server of repository {args.name}", new, old)
        return decide_pin(
            args, {k.fingerprint for k in new},
            missing=f"the server of {args.name} does not offer a key with fingerprint "
            f"{args.fingerprint}; nothing was pinned",
            missing_hint="compare with the server's own `ssh-keygen -lf` output",
            no_tty_hint="check the fingerprint on the server, then add --yes or "
            "--fingerprint SHA256:...", question=f"Pin this key for {args.name}?")

    result = trust(config, args.name, confirm, rekey=args.rekey)
    if args.json:
        print_json(result.as_json())
        return ExitCode.OK
    print(f"key: {result.key}" + (" (created)" if result.key_created else " (reused)"))
    state = "pinned" if result.newly_pinned else "already pinned"
    print(f"host key of {result.endpoint.where} {state} as repo:{args.name}:")
    for host_key in result.keys:
        print(f"  {host_key.describe()}")
    print(f"\nAdd this line to ~{result.endpoint.user}/.ssh/authorized_keys on the server "
          "(Borg on this one repository only, append-only: docs/offsite.md):\n")
    print(f"  {result.authorized_keys}\n")
    print(f"Then: phobos repo init {args.name}   (or phobos repo info {args.name})")
    return ExitCode.OK
