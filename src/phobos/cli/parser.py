"""The command line: the top-level parser and the list of verbs. Each verb lives in
``cli/<verb>.py`` and adds itself with ``register``; nothing else is decided here."""

from __future__ import annotations

import argparse

from phobos import __version__
from phobos.cli import (
    calendar,
    completion,
    config,
    daemon,
    demo,
    doctor,
    drive,
    find,
    history,
    host,
    led,
    locks,
    log,
    notify,
    ns,
    overdue,
    repo,
    restore,
    run,
    schedule,
    status,
    systemd,
    unlock,
    web,
)

EXIT_CODES_HELP = """exit codes:
  0   success (also a job that finished with warnings)
  1   a job or operation failed
  2   bad command line or configuration; nothing was run
  3   skipped: a resource was busy or a drive/host was absent
  4   interrupted by a signal; cleanup ran
  5   the job ran, but its history could not be recorded as usual (said on stderr)
  70  internal error in phobos (a bug: please report it)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phobos", description="Backup orchestrator for a home NAS: pulls hosts with "
        "rsync, archives with Borg, syncs off-site LUKS drives.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="config file (default: $PHOBOS_CONFIG or /etc/phobos/phobos.toml)")
    parser.add_argument("--version", action="version", version=f"phobos {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    # The order of --help's list of commands.
    for module in (run, status, history, log, locks, config, schedule, overdue, daemon,
                   calendar, demo):
        module.register(verbs)
    completion.register(verbs, root=parser)
    for module in (find, restore, host, ns, drive, repo, led, notify, systemd, web, doctor,
                   unlock):
        module.register(verbs)
    return parser
