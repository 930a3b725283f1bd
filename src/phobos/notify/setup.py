"""Build the configured notifiers from the config (lazily imported by the runner)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, LedConfig
from ..errors import ConfigError
from .base import EventKind, Notifier, RunEvent
from .led import BlinkStickDriver, FileDriver, LedDriver, LedTracker


@dataclass(frozen=True, slots=True)
class LedNotifier:
    """Feeds run events to the persisted LED state machine."""

    tracker: LedTracker
    name: str = "led"

    def notify(self, event: RunEvent) -> None:
        if event.run_id is None:
            return
        if event.kind is EventKind.STARTED:
            self.tracker.job_started(str(event.run_id), event.job, event.trigger,
                                     pid=event.pid)
        elif event.kind is EventKind.FINISHED and event.outcome is not None:
            self.tracker.job_finished(str(event.run_id), event.job, str(event.outcome),
                                      drive=event.drive)


def led_driver(led: LedConfig) -> LedDriver | None:
    """The driver the config names; None for ``none`` (state is still tracked)."""
    if led.driver == "none":
        return None
    if led.driver == "blinkstick":
        return BlinkStickDriver(index=led.index, limit=led.limit)
    if led.driver == "file":
        if led.path is None:
            raise ConfigError("notify.led: the file driver needs `path`")
        return FileDriver(led.path)
    raise ConfigError(f"notify.led.driver: {led.driver!r} is not available",
                      hint="use blinkstick, file or none")


def led_tracker(config: Config) -> LedTracker:
    led = config.notify.led
    return LedTracker(config.paths.state, clear_on_success=led.clear_on_success,
                      driver=led_driver(led))


def build_notifiers(config: Config) -> list[Notifier]:
    """Every notifier the config enables, in the order they are told about events."""
    notifiers: list[Notifier] = [LedNotifier(led_tracker(config))]
    return notifiers
