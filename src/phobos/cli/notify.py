"""`phobos led show|set|ack|test` and `phobos notify test|unit-failure`: output only; the
work is in :mod:`phobos.notify`."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from phobos.cli.common import load_config as _load
from phobos.cli.common import no_action as _need_action
from phobos.cli.common import print_json as _print_json
from phobos.cli.common import verb as _action
from phobos.core.model import LedState
from phobos.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from phobos.config.tables import LedConfig

EVENTS = ("failure", "warning", "success", "skipped", "overdue")
TEST_SEQUENCE = (LedState.RED, LedState.YELLOW, LedState.GREEN, LedState.BLUE, LedState.OFF)


def register(verbs: Any) -> None:
    """Add the `led` and `notify` verbs and their actions to the top-level ``verbs``."""
    from phobos.cli.common import json_flag as _json_flag
    from phobos.cli.common import verb as _verb

    led = _verb(verbs, "led", "show, set, acknowledge and test the status LED", _need_action)
    actions = led.add_subparsers(dest="action", metavar="ACTION", required=True)
    _json_flag(_action(actions, "show", "the LED's colour, why, and the runs and failures "
                       "behind it", cmd_led_show))
    colour = _action(actions, "set", "show COLOR on the LED now (until the next job event)",
                     cmd_led_set)
    colour.add_argument("color", choices=[str(state) for state in LedState])
    _action(actions, "ack", "acknowledge the failures that keep the LED red", cmd_led_ack)
    test = _action(actions, "test", "cycle the LED through its colours, then show the "
                   "tracked colour again; says whether the driver worked", cmd_led_test)
    test.add_argument("--delay", type=float, default=1.0, metavar="SECONDS",
                      help="how long each colour shows (default 1)")

    notify = _verb(verbs, "notify", "test the notification channels; systemd's OnFailure= "
                   "hook", _need_action)
    actions = notify.add_subparsers(dest="action", metavar="ACTION", required=True)
    trial = _action(actions, "test", "send a test event through every configured channel "
                    "(e-mail, Apprise, pings) and say which worked; exit 1 if any failed",
                    cmd_notify_test)
    trial.add_argument("--event", choices=EVENTS, default="failure",
                       help="which kind of event to send (default failure)")
    _json_flag(trial)
    unit = _action(actions, "unit-failure", "for OnFailure=: latch the LED red and mail "
                   "UNIT's `systemctl status` (unless the runner already mailed this "
                   "failure)", cmd_notify_unit_failure)
    unit.add_argument("unit", help="the failed unit's name (%%i in phobos-failure@.service)")
    _json_flag(unit)


# --- led -------------------------------------------------------------------------------------


def _driver_text(led: LedConfig) -> str:
    details = {"blinkstick": f"index {led.index}, limit {led.limit}",
               "file": str(led.path), "command": " ".join(led.command)}.get(led.driver)
    return led.driver + (f" ({details})" if details else "")


def cmd_led_show(args: argparse.Namespace) -> int:
    from phobos.notify.led.tracker import LedTracker

    config = _load(args)
    snapshot = LedTracker(config.paths.state).snapshot()  # reading needs no driver
    if args.json:
        _print_json({**snapshot.to_json(), "driver": config.notify.led.driver})
        return 0
    print(f"LED: {snapshot.state} ({snapshot.reason})")
    print(f"driver: {_driver_text(config.notify.led)}")
    for run in snapshot.active:
        print(f"running: {run.job} (run {run.run_id}, {run.trigger}, pid {run.pid}, "
              f"since {run.started.isoformat(timespec='seconds')})")
    for failure in snapshot.failures:
        print(f"failed: {failure.job} {failure.outcome} (run {failure.run_id}) at "
              f"{failure.at.isoformat(timespec='seconds')}")
    if snapshot.safe_drive is not None:
        safe = snapshot.safe_drive
        print(f"safe to remove: drive {safe.drive} ({safe.job}, run {safe.run_id})")
    return 0


def _configured_driver(config: Any) -> Any:
    from phobos.notify.setup import led_driver

    driver = led_driver(config.notify.led)
    if driver is None:
        raise UsageError("no LED driver is configured ([notify.led] driver = \"none\")",
                         hint="set driver to blinkstick, command or file in [notify.led]")
    return driver


def cmd_led_set(args: argparse.Namespace) -> int:
    from phobos.notify.led.tracker import LedTracker

    config = _load(args)
    _configured_driver(config).set(LedState(args.color))
    tracked = LedTracker(config.paths.state).current_state()
    print(f"LED set to {args.color}; the next job event shows the tracked state again "
          f"({tracked}; `phobos led show` says why)")
    return 0


def cmd_led_ack(args: argparse.Namespace) -> int:
    from phobos.errors import ConfigError
    from phobos.notify.errors import LedUnavailable
    from phobos.notify.led.tracker import LedTracker
    from phobos.notify.setup import led_tracker

    config = _load(args)
    try:
        tracker = led_tracker(config)
    except ConfigError as exc:  # a broken driver setting must not keep the failures latched
        print(f"phobos: the LED cannot show it ({exc.message}); acknowledging anyway",
              file=sys.stderr)
        tracker = LedTracker(config.paths.state,
                             clear_on_success=config.notify.led.clear_on_success)
    failures = tracker.snapshot().failures
    try:
        state = tracker.ack()
    except LedUnavailable as exc:
        print(_acked_text(failures, tracker.current_state()))
        raise LedUnavailable(f"acknowledged, but the LED could not show it: {exc.message}",
                             hint=exc.hint) from None
    print(_acked_text(failures, state))
    return 0


def _acked_text(failures: Sequence[Any], state: LedState) -> str:
    if not failures:
        return f"no failures to acknowledge; LED: {state}"
    jobs = ", ".join(f"{f.job} (run {f.run_id})" for f in failures)
    return f"acknowledged {len(failures)} failure{'s' if len(failures) != 1 else ''}: " \
           f"{jobs}; LED: {state}"


def cmd_led_test(args: argparse.Namespace) -> int:
    from phobos.notify.errors import LedUnavailable
    from phobos.notify.led.tracker import LedTracker

    config = _load(args)
    driver = _configured_driver(config)
    print(f"testing the {_driver_text(config.notify.led)} driver")
    for state in TEST_SEQUENCE:
        try:
            driver.set(state)
        except LedUnavailable as exc:
            print(f"{state}: FAILED: {exc.message}")
            if exc.hint:
                print(f"hint: {exc.hint}")
            print("LED test failed: the driver did not take every colour")
            return int(ExitCode.FAILED)
        print(f"{state}: ok", flush=True)
        time.sleep(max(0.0, args.delay))
    restored = LedTracker(config.paths.state, driver=driver).refresh()
    print(f"LED test passed: the driver took every colour; the LED shows the tracked state "
          f"again ({restored})")
    return 0


# --- notify ----------------------------------------------------------------------------------


def cmd_notify_test(args: argparse.Namespace) -> int:
    from phobos.notify.channel import attempt, render, sample_event
    from phobos.notify.ping import PingNotifier
    from phobos.notify.setup import message_channels

    config = _load(args)
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


def cmd_notify_unit_failure(args: argparse.Namespace) -> int:
    from phobos.notify.unit import deliver, inspect

    config = _load(args)
    failure = inspect(config, args.unit)
    return _report(args, deliver(config, failure), none_configured=False)


def _report(args: argparse.Namespace, results: Sequence[Any], *, none_configured: bool) -> int:
    failed = any(result.status == "failed" for result in results)
    if args.json:
        _print_json({"channels": [result.to_json() for result in results],
                     "ok": not failed and not none_configured})
    if none_configured:
        print("no notification channel is configured: add [notify.email], [notify.apprise] "
              "or [notify.ping] (the LED has `phobos led test`)", file=sys.stderr)
    for result in [] if args.json else results:
        print(f"{result.channel}: {result.status}: {result.detail}")
        if result.hint and result.status == "failed":
            print(f"{result.channel}: hint: {result.hint}")
    return int(ExitCode.FAILED if failed or none_configured else ExitCode.OK)
