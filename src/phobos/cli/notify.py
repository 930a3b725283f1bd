"""`phobos notify test|unit-failure`: try every notification channel, and the hook
systemd's OnFailure= calls. Output only; the work is in :mod:`phobos.notify`."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from phobos.cli.common import json_flag, load_config, no_action, print_json, verb
from phobos.errors import ExitCode

if TYPE_CHECKING:
    pass

EVENTS = ("failure", "warning", "success", "skipped", "overdue")


def register(verbs: Any) -> None:
    """Add the `notify` verb and its actions to the top-level parser's ``verbs``."""
    notify = verb(verbs, "notify", "test the notification channels; systemd's OnFailure= "
                  "hook", no_action)
    actions = notify.add_subparsers(dest="action", metavar="ACTION", required=True)
    trial = verb(actions, "test", "send a test event through every configured channel "
                 "(e-mail, Apprise, pings) and say which worked; exit 1 if any failed",
                 cmd_notify_test)
    trial.add_argument("--event", choices=EVENTS, default="failure",
                       help="which kind of event to send (default failure)")
    json_flag(trial)
    unit = verb(actions, "unit-failure", "for OnFailure=: latch the LED red and mail "
                "UNIT's `systemctl status` (unless the runner already mailed this "
                "failure)", cmd_notify_unit_failure)
    unit.add_argument("unit", help="the failed unit's name (%%i in phobos-failure@.service)")
    json_flag(unit)


def cmd_notify_test(args: argparse.Namespace) -> ExitCode:
    from phobos.notify.channel import attempt, render, sample_event
    from phobos.notify.ping import PingNotifier
    from phobos.notify.setup import message_channels

    config = load_config(args)
    event = sample_event(args.event)
    note = render(event, config.source, test=True)
    results = []
    for name, channel in message_channels(config).items():
        if isinstance(channel, Exception):
            results.append(attempt(name, _raiser(channel)))
        else:
            results.append(attempt(name, functools.partial(channel.send, note)))
    if config.notify.ping is not None:
        ping = config.notify.ping
        results.append(attempt("ping", lambda: PingNotifier.from_config(ping).test(config.jobs)))
    return _report(args, results, none_configured=not results)


def _raiser(error: Exception) -> Any:
    def send() -> str:
        raise error
    return send


def cmd_notify_unit_failure(args: argparse.Namespace) -> ExitCode:
    from phobos.notify.unit import deliver, inspect

    config = load_config(args)
    failure = inspect(config, args.unit)
    return _report(args, deliver(config, failure), none_configured=False)


def _report(args: argparse.Namespace, results: Sequence[Any], *, none_configured: bool) -> ExitCode:
    failed = any(result.status == "failed" for result in results)
    if args.json:
        print_json({"channels": [result.to_json() for result in results],
                    "ok": not failed and not none_configured})
    if none_configured:
        print("no notification channel is configured: add [notify.email], [notify.apprise] "
              "or [notify.ping] (the LED has `phobos led test`)", file=sys.stderr)
    for result in [] if args.json else results:
        print(f"{result.channel}: {result.status}: {result.detail}")
        if result.hint and result.status == "failed":
            print(f"{result.channel}: hint: {result.hint}")
    return ExitCode.FAILED if failed or none_configured else ExitCode.OK
