"""Build the configured notifiers from the config (lazily imported by the runner).

Each notifier is built on its own: one that cannot be built (a bad LED driver setting, an
e-mail table that cannot work) becomes a :class:`BrokenNotifier` whose every event is a
warning in the run log, and never takes the LED, e-mail or pings of the others with it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from phobos.config.model import Config
from phobos.config.tables import LedConfig
from phobos.core.model import LedState, Outcome
from phobos.errors import ConfigError, PhobosError
from phobos.notify.base import EventKind, Notifier, RunEvent
from phobos.notify.channel import Channel, MessageNotifier, SentLedger
from phobos.notify.led.blinkstick import BlinkStickDriver
from phobos.notify.led.drivers import CommandDriver, FileDriver, LedDriver
from phobos.notify.led.tracker import LedTracker

T = TypeVar("T")

# Set by phobos's systemd job units: an OnFailure= unit sends the failure messages.
FAILURE_HOOK_ENV = "PHOBOS_FAILURE_HOOK"


@dataclass(frozen=True, slots=True)
class LedNotifier:
    """Feeds run events to the persisted LED state machine. With ``problem`` (the driver
    could not be built) the state is still tracked, and each event then reports it."""

    tracker: LedTracker
    name: str = "led"
    problem: PhobosError | None = None

    def notify(self, event: RunEvent) -> None:
        if event.run_id is None:
            return
        run_id = str(event.run_id)
        if event.kind is EventKind.STARTED:
            self.tracker.job_started(run_id, event.job, event.trigger, pid=event.pid)
        elif event.kind is EventKind.FINISHED and event.outcome is not None:
            if event.by_user and event.outcome is Outcome.INTERRUPTED:
                self.tracker.job_ended_quietly(run_id)
            else:
                # Recorded fine: the history's red (if any) may clear (clear_on_success).
                trouble = True if event.trouble else (False if event.recorded else None)
                self.tracker.job_finished(run_id, event.job, str(event.outcome),
                                          drive=event.drive, history_trouble=trouble)
        if self.problem is not None:
            raise self.problem



@dataclass(frozen=True, slots=True)
class BrokenNotifier:
    """Stands for a notifier that could not be built: every event reports ``error``."""

    name: str
    error: PhobosError

    def notify(self, event: RunEvent) -> None:
        raise self.error


def led_driver(led: LedConfig) -> LedDriver | None:
    """The driver the config names; None for ``none`` (state is still tracked)."""
    if led.driver == "none":
        return None
    limits: dict[LedState, int] = {state: led.limit_of(str(state)) for state in LedState
                                   if state != LedState.OFF}
    if led.driver == "blinkstick":
        return BlinkStickDriver(index=led.index, limits=limits)
    if led.driver == "file":
        if led.path is None:
            raise ConfigError("notify.led: the file driver needs `path`")
        return FileDriver(led.path)
    if led.driver == "command":
        if not led.command:
            raise ConfigError("notify.led: the command driver needs `command`",
                              hint='e.g. command = ["blinkstick", "--index", "1", "--limit", '
                              '"50", "--set-color", "{color}"]')
        return CommandDriver(led.command, limits=limits)
    raise ConfigError(f"notify.led.driver: {led.driver!r} is not available",
                      hint="use blinkstick, command, file or none")


def led_tracker(config: Config) -> LedTracker:
    """The tracker with the configured driver; ConfigError if the driver cannot be built."""
    led = config.notify.led
    return LedTracker(config.paths.state, clear_on_success=led.clear_on_success,
                      driver=led_driver(led))


def led_notifier(config: Config) -> LedNotifier:
    """The LED notifier; a driver that cannot be built still leaves the state tracked (so
    `phobos led show` and a fixed driver later see the truth)."""
    driver = _attempt(lambda: led_driver(config.notify.led))
    if not isinstance(driver, PhobosError):
        return LedNotifier(led_tracker(config))
    tracker = LedTracker(config.paths.state,
                         clear_on_success=config.notify.led.clear_on_success)
    return LedNotifier(tracker, problem=driver)


def message_channels(config: Config) -> dict[str, Channel | PhobosError]:
    """Each configured message channel (e-mail, Apprise) by name, or why it cannot work."""
    notify = config.notify
    factories: dict[str, Callable[[], Channel]] = {}
    if notify.email is not None:
        from phobos.notify.email import EmailChannel

        email = notify.email
        factories["email"] = lambda: EmailChannel.from_config(email)
    if notify.apprise is not None:
        from phobos.notify.apprise import AppriseChannel

        apprise = notify.apprise
        factories["apprise"] = lambda: AppriseChannel(apprise)
    return {name: _attempt(factory) for name, factory in factories.items()}


def ping_notifier(config: Config) -> Notifier | None:
    """The ping notifier if ``[notify.ping]`` is configured (a BrokenNotifier if unusable)."""
    if config.notify.ping is None:
        return None
    from phobos.notify.ping import PingNotifier

    ping = config.notify.ping
    built = _attempt(lambda: PingNotifier.from_config(ping))
    return BrokenNotifier("ping", built) if isinstance(built, PhobosError) else built


def _attempt(factory: Callable[[], T]) -> T | PhobosError:
    try:
        return factory()
    except PhobosError as exc:
        return exc
    except ValueError as exc:  # a driver refusing its settings (e.g. an LED index of 300)
        return ConfigError(str(exc))


def build_notifiers(config: Config, *, defer: bool | None = None) -> list[Notifier]:
    """Every notifier the config enables, in the order they are told about events: the LED
    first (it is instant), then e-mail, Apprise and pings. ``defer``: leave failure
    messages to systemd's OnFailure= hook (default: when the unit says it has one)."""
    notifiers: list[Notifier] = [led_notifier(config)]
    ledger = SentLedger(config.paths.state)
    if defer is None:
        defer = bool(os.environ.get(FAILURE_HOOK_ENV))
    for name, channel in message_channels(config).items():
        if isinstance(channel, PhobosError):
            notifiers.append(BrokenNotifier(name, channel))
        else:
            notifiers.append(MessageNotifier(channel=channel, ledger=ledger,
                                             config_source=config.source,
                                             defer_failures=defer))
    ping = ping_notifier(config)
    if ping is not None:
        notifiers.append(ping)
    return notifiers
