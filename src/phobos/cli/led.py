"""`phobos led show|set|ack|test`: the status LED's colour and why, set it by hand,
acknowledge failures, try the driver. Output only; the work is in :mod:`phobos.notify.led`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from phobos.cli.common import json_flag, load_config, no_action, print_json, verb
from phobos.core.model import LedState
from phobos.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from phobos.config.tables import LedConfig

TEST_SEQUENCE = (LedState.RED, LedState.YELLOW, LedState.GREEN, LedState.BLUE, LedState.OFF)


def register(verbs: Any) -> None:
    """Add the `led` verb and its actions to the top-level parser's ``verbs``."""
    led = verb(verbs, "led", "show, set, acknowledge and test the status LED", no_action)
    actions = led.add_subparsers(dest="action", metavar="ACTION", required=True)
    json_flag(verb(actions, "show", "the LED's colour, why, and the runs and failures "
                    "behind it", cmd_led_show))
    colour = verb(actions, "set", "show COLOR on the LED now (until the next job event)",
                  cmd_led_set)
    colour.add_argument("color", choices=[str(state) for state in LedState])
    verb(actions, "ack", "acknowledge the failures that keep the LED red", cmd_led_ack)
    test = verb(actions, "test", "cycle the LED through its colours, then show the "
                "tracked colour again; says whether the driver worked", cmd_led_test)
    test.add_argument("--delay", type=float, default=1.0, metavar="SECONDS",
                      help="how long each colour shows (default 1)")


def _driver_text(led: LedConfig) -> str:
    limit = led.limit if isinstance(led.limit, int) else ", ".join(
        f"{colour} {value}" for colour, value in led.limit.items())
    details = {"blinkstick": f"index {led.index}, limit {limit}",
               "file": str(led.path), "command": " ".join(led.command)}.get(led.driver)
    return led.driver + (f" ({details})" if details else "")


def cmd_led_show(args: argparse.Namespace) -> ExitCode:
    from phobos.notify.led.tracker import LedTracker

    config = load_config(args)
    snapshot = LedTracker(config.paths.state).snapshot()  # reading needs no driver
    if args.json:
        print_json({**snapshot.to_json(), "driver": config.notify.led.driver})
        return ExitCode.OK
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
    return ExitCode.OK


def _configured_driver(config: Any) -> Any:
    from phobos.notify.setup import led_driver

    driver = led_driver(config.notify.led)
    if driver is None:
        raise UsageError("no LED driver is configured ([notify.led] driver = \"none\")",
                         hint="set driver to blinkstick, command or file in [notify.led]")
    return driver


def cmd_led_set(args: argparse.Namespace) -> ExitCode:
    from phobos.notify.led.tracker import LedTracker

    config = load_config(args)
    _configured_driver(config).set(LedState(args.color))
    tracked = LedTracker(config.paths.state).current_state()
    print(f"LED set to {args.color}; the next job event shows the tracked state again "
          f"({tracked}; `phobos led show` says why)")
    return ExitCode.OK


def cmd_led_ack(args: argparse.Namespace) -> ExitCode:
    from phobos.errors import ConfigError
    from phobos.notify.errors import LedUnavailable
    from phobos.notify.led.tracker import LedTracker
    from phobos.notify.setup import led_tracker

    config = load_config(args)
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
    return ExitCode.OK


def _acked_text(failures: Sequence[Any], state: LedState) -> str:
    if not failures:
        return f"no failures to acknowledge; LED: {state}"
    jobs = ", ".join(f"{f.job} (run {f.run_id})" for f in failures)
    return f"acknowledged {len(failures)} failure{'s' if len(failures) != 1 else ''}: " \
           f"{jobs}; LED: {state}"


def cmd_led_test(args: argparse.Namespace) -> ExitCode:
    from phobos.notify.errors import LedUnavailable
    from phobos.notify.led.tracker import LedTracker

    config = load_config(args)
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
            return ExitCode.FAILED
        print(f"{state}: ok", flush=True)
        time.sleep(max(0.0, args.delay))
    restored = LedTracker(config.paths.state, driver=driver).refresh()
    print(f"LED test passed: the driver took every colour; the LED shows the tracked state "
          f"again ({restored})")
    return ExitCode.OK
