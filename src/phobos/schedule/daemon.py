"""``phobos daemon``: the scheduler for machines without systemd.

It does what the generated timers do, through the same path: at each job's calendar
time it starts ``phobos run JOB --trigger daemon`` as a separate process (so a crash
of one job never takes the daemon down, and locks, history and notifications are the
runner's). Like ``Persistent=true``, a slot missed while the daemon was not running is
caught up once at start. Every hour it runs the overdue check. Plugged-in drives are
handed to ``phobos drive attached`` by :mod:`phobos.schedule.devwatch` when pyudev is available.

SIGTERM/SIGINT stop it cleanly: no new runs start, running ones get SIGTERM (the
runner records them as interrupted) and are reaped before the daemon exits.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType

from phobos.config.model import Config
from phobos.core import proc
from phobos.core.files import write_atomic
from phobos.oncalendar.elapse import next_elapse
from phobos.schedule.plan import calendar_of

OVERDUE_EVERY = timedelta(hours=1)
MAX_SLEEP_SECONDS = 30.0  # re-plan regularly: clock changes, suspend, config reloads


@dataclass(slots=True)
class DaemonState:
    """Last slot fired per job, persisted so a restart neither repeats nor misses one."""

    path: Path
    fired: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> DaemonState:
        try:
            data = json.loads(path.read_text())
            return cls(path, {str(k): float(v) for k, v in data.get("fired", {}).items()})
        except (FileNotFoundError, ValueError, AttributeError):
            return cls(path)

    def save(self) -> None:
        write_atomic(self.path, json.dumps({"fired": self.fired}, sort_keys=True),
                     parents=True)


def due_jobs(config: Config, state: DaemonState, now: datetime,
             started_at: datetime) -> dict[str, datetime]:
    """Jobs whose next slot after their last fired one is not in the future.

    A job never fired by this daemon counts from the daemon's start, so adding a job
    does not fire it at once; a slot missed while the daemon was down fires once.
    """
    due = {}
    for name, job in config.jobs.items():
        spec = calendar_of(job)
        if spec is None:
            continue
        last = state.fired.get(name)
        since = datetime.fromtimestamp(last).astimezone() if last else started_at
        slot = next_elapse(spec, since)
        if slot is not None and slot <= now:
            due[name] = slot
    return due


def next_wakeup(config: Config, state: DaemonState, now: datetime,
                started_at: datetime) -> float:
    """Seconds until the earliest next slot (capped, so the plan is refreshed)."""
    soonest = MAX_SLEEP_SECONDS
    for name, job in config.jobs.items():
        spec = calendar_of(job)
        if spec is None:
            continue
        last = state.fired.get(name)
        since = max(now, datetime.fromtimestamp(last).astimezone() if last else started_at)
        slot = next_elapse(spec, since)
        if slot is not None:
            soonest = min(soonest, max(0.0, (slot - now).total_seconds()))
    return soonest


class Daemon:
    def __init__(self, config: Config, config_path: Path,
                 say: Callable[[str], None]) -> None:
        self.config = config
        self.config_path = config_path
        self.say = say
        self.state = DaemonState.load(config.paths.state / "daemon.json")
        self.children: dict[str, proc.Child] = {}
        self.stopping = threading.Event()
        self.started_at = datetime.now().astimezone()
        self.last_overdue = 0.0

    def phobos(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "phobos", "-c", str(self.config_path), *args]

    def launch(self, name: str, argv: list[str]) -> None:
        """Start a child unless one with this name still runs (never two at once)."""
        running = self.children.get(name)
        if running is not None and running.poll() is None:
            self.say(f"{name}: previous run (pid {running.pid}) still going; slot skipped")
            return
        child = proc.start(argv, sink=lambda _stream, line: self.say(line))
        self.children[name] = child
        self.say(f"{name}: started pid {child.pid}")

    def tick(self) -> None:
        now = datetime.now().astimezone()
        for name, slot in sorted(due_jobs(self.config, self.state, now,
                                          self.started_at).items()):
            self.say(f"{name}: slot {slot:%Y-%m-%d %H:%M:%S} is due")
            self.launch(name, self.phobos("run", name, "--trigger", "daemon"))
            self.state.fired[name] = now.timestamp()
        self.state.save()
        if time.monotonic() - self.last_overdue >= OVERDUE_EVERY.total_seconds():
            self.last_overdue = time.monotonic()
            self.launch("(overdue check)", self.phobos("overdue", "--notify", "--json"))
        self._reap()

    def _reap(self) -> None:
        for name, child in list(self.children.items()):
            code = child.poll()
            if code is not None:
                self.say(f"{name}: pid {child.pid} exited with {code}")
                del self.children[name]

    def serve(self) -> int:
        self.say(f"phobos daemon: {len(self.config.jobs)} jobs, config {self.config_path}")
        while not self.stopping.is_set():
            self.tick()
            wait = next_wakeup(self.config, self.state, datetime.now().astimezone(),
                               self.started_at)
            self.stopping.wait(min(max(wait, 0.05), MAX_SLEEP_SECONDS))
        return self.shutdown()

    def shutdown(self) -> int:
        running = [c for c in self.children.values() if c.poll() is None]
        self.say(f"phobos daemon: stopping; interrupting {len(running)} running job(s)")
        for child in running:
            child.stop()
        self._reap()
        self.state.save()
        return 0


def run_daemon(config: Config, config_path: Path) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    daemon = Daemon(config, config_path, say=lambda text: print(text, flush=True))

    def stop(signum: int, _frame: FrameType | None) -> None:
        daemon.say(f"phobos daemon: got {signal.Signals(signum).name}")
        daemon.stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    from phobos.schedule.devwatch import watch_drives

    watcher = watch_drives(config, lambda uuid: daemon.launch(
        f"drive {uuid}", daemon.phobos("drive", "attached", "--uuid", uuid)), daemon.say)
    try:
        return daemon.serve()
    finally:
        if watcher is not None:
            watcher.stop()
