"""`phobos host ...`: add (pin a host key, print the authorized_keys line and config
table), test (reachability, key, paths, read-only), rekey (accept a changed host key).
Output only; the work is in :mod:`phobos.hosts`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from phobos.cli.common import (
    config_names,
    decide_pin,
    json_flag,
    load_config,
    print_json,
    show_host_keys,
    table,
    verb,
)
from phobos.errors import ExitCode


def register(verbs: Any) -> None:
    """Add the `host` verb and its actions to the top-level parser's ``verbs``."""
    sub = verb(verbs, "host", "add, test and re-key the remote hosts phobos pulls",
               cmd_host_help)
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    _add_add(actions)
    _add_test(actions)
    _add_rekey(actions)


def _confirm_flags(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--yes", action="store_true",
                     help="pin without asking (check the fingerprint first!)")
    sub.add_argument("--fingerprint", metavar="SHA256:...",
                     help="pin only if the host offers a key with this fingerprint "
                     "(checked on the host: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub)")


def _add_add(actions: Any) -> None:
    sub = verb(actions, "add", "create/reuse the pull key, pin NAME's host key after "
               "showing its fingerprint, print the authorized_keys line and the "
               "[hosts.NAME] table to add (the config file is not edited)", cmd_host_add)
    sub.add_argument("name", help="the host's name in phobos (its [hosts.NAME] table)")
    sub.add_argument("address", help="DNS name or IP address")
    sub.add_argument("--port", type=int, default=22, help="SSH port (default 22)")
    sub.add_argument("--user", default="root", help="remote user (default root)")
    sub.add_argument("--path", dest="paths", action="append", default=[], metavar="PATH",
                     help="remote path to pull (repeatable)")
    sub.add_argument("--root", default="/",
                     help="rrsync root on the host: the key may read only below it "
                     "(default /)")
    _confirm_flags(sub)
    json_flag(sub)


def _add_test(actions: Any) -> None:
    sub = verb(actions, "test", "check that NAME is reachable, its host key matches, "
               "phobos's key logs in, every path is readable and the key cannot write",
               cmd_host_test)
    config_names(sub.add_argument("name", help="host name from the config"), "hosts")
    json_flag(sub)


def _add_rekey(actions: Any) -> None:
    sub = verb(actions, "rekey", "accept NAME's new host key after showing the old "
               "and new fingerprints (never automatic)", cmd_host_rekey)
    config_names(sub.add_argument("name", help="host name from the config"), "hosts")
    _confirm_flags(sub)
    json_flag(sub)


# --- confirmation -------------------------------------------------------------------------


def _confirmer(args: argparse.Namespace) -> Any:
    """The Confirm callback for hosts.add/rekey: fingerprint match, --yes, or a prompt
    on a terminal. Everything it shows goes to stderr (stdout may be --json)."""
    from phobos.tools.ssh import HostKey

    def confirm(new: Sequence[HostKey], old: Sequence[HostKey]) -> bool:
        show_host_keys(args.name, new, old)
        return decide_pin(
            args, {k.fingerprint for k in new},
            missing=f"{args.name} does not offer a key with fingerprint "
            f"{args.fingerprint}; nothing was pinned",
            missing_hint="compare with the host's own `ssh-keygen -lf` output",
            no_tty_hint="check the fingerprint on the host, then add --yes or "
            "--fingerprint SHA256:...",
            question=f"Pin this key for {args.name}?")

    return confirm


# --- verbs ----------------------------------------------------------------------------------


def cmd_host_help(args: argparse.Namespace) -> ExitCode:  # pragma: no cover - argparse requires
    return ExitCode.USAGE


def cmd_host_add(args: argparse.Namespace) -> ExitCode:
    from phobos import hosts
    config = load_config(args)
    request = hosts.AddRequest(name=args.name, address=args.address, port=args.port,
                               user=args.user, paths=tuple(args.paths), root=args.root)
    result = hosts.add(config, request, _confirmer(args))
    if args.json:
        print_json(result.as_json())
        return ExitCode.OK
    key = result.pull_key
    print(f"pull key: {key.path}" + (" (created)" if key.created else " (reused)"))
    pinned = "pinned" if result.newly_pinned else "already pinned"
    print(f"host key of {args.name} {pinned} in {result.known_hosts}:")
    for host_key in result.keys:
        print(f"  {host_key.describe()}")
    print(f"\nAdd this line to ~{args.user}/.ssh/authorized_keys on {args.name} "
          "(read-only access below the root):\n")
    print(f"  {result.authorized_keys}\n")
    print(f"Add this to {config.source} (phobos does not edit it):\n")
    print(result.snippet)
    print(f"Then check with: phobos host test {args.name}")
    return ExitCode.OK


def cmd_host_test(args: argparse.Namespace) -> ExitCode:
    from phobos import hosts
    config = load_config(args)
    checks = hosts.check_host(config, args.name)
    ok = all(c.ok for c in checks)
    if args.json:
        print_json({"host": args.name, "ok": ok, "checks": [c.as_json() for c in checks]})
    else:
        rows = [[c.name, "ok" if c.ok else "FAIL", c.detail] for c in checks]
        print(table(["CHECK", "RESULT", "DETAIL"], rows))
        for check in checks:
            if not check.ok and check.hint:
                print(f"hint ({check.name}): {check.hint}")
    return ExitCode.OK if ok else ExitCode.FAILED


def cmd_host_rekey(args: argparse.Namespace) -> ExitCode:
    from phobos import hosts
    config = load_config(args)
    result = hosts.rekey(config, args.name, _confirmer(args))
    if args.json:
        print_json(result.as_json())
    elif result.changed:
        shown = ", ".join(k.describe() for k in result.new)
        print(f"{args.name}: pinned the new host key {shown}")
    else:
        print(f"{args.name}: the host key still matches the pinned one; nothing changed")
    return ExitCode.OK
