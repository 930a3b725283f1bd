"""The LED: one colour for all jobs on this host, and the drivers that show it.

Every phobos process (timer runs, device runs, the CLI, the daemon) reports its events to a
`LedTracker`. The tracker keeps *facts* in ``<state_dir>/led.json`` — which runs are active, which
jobs failed, which drive is safe to remove — and derives the colour from them with one rule,
`PRIORITY`. Keeping facts rather than a colour is what lets jobs overlap: when a timer job ends
while a manual one still runs, the LED goes back to blue, not off.

Drivers turn a `LedState` into light. `BlinkStickDriver` speaks the BlinkStick's HID protocol
itself (the PyPI package is unmaintained) through a `LedTransport`, normally `HidrawTransport`.
`FileDriver` writes the state's name to a file, for other tools and for tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from phobos.core.files import write_atomic
from phobos.core.model import LedState, Outcome, Trigger
from phobos.errors import PhobosError


class LedUnavailable(PhobosError):
    """The LED cannot be driven or its state cannot be recorded (absent, no permission...).

    A notifier failure: the runner reports it and never lets it change the job's own result.
    """


# --------------------------------------------------------------------------------------------
# The rule

#: Which colour shows when several conditions hold at once, highest first. This tuple is the
#: only statement of the rule; `_decide` just walks it.
#:
#: * RED (a latched failure) beats everything: a failure that later activity could paint over
#:   would go unnoticed, and noticing failures is what the LED is for.
#: * BLUE (an interactive run: started by hand, or by plugging in a drive) beats YELLOW: a human
#:   is waiting for that job, and a timer job running beside it must not make them think theirs
#:   has ended or turned into background work.
#: * YELLOW (a scheduled run) beats GREEN: green must mean "nothing left to wait for".
#: * GREEN (a drive job succeeded and its drive is still in) beats OFF.
PRIORITY: Final = (LedState.RED, LedState.BLUE, LedState.YELLOW, LedState.GREEN, LedState.OFF)

#: Triggers with a human waiting for the result (blue); every other trigger is scheduled (yellow).
INTERACTIVE: Final = frozenset({Trigger.MANUAL, Trigger.DEVICE})

# Warning counts as success and interrupted as failure; skipped leaves no mark at all.
_SUCCESSES: Final = frozenset({Outcome.SUCCESS, Outcome.WARNING})
_FAILURES: Final = frozenset({Outcome.FAILED, Outcome.INTERRUPTED})


# --------------------------------------------------------------------------------------------
# Facts


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveRun:
    """A run that has started and not finished. It ends early if process ``pid`` dies."""

    run_id: str
    job: str
    trigger: Trigger
    pid: int
    # The process's start time (/proc clock ticks) when the run began: a later process that
    # reuses the PID has another start time, so a dead run cannot stay "running" through it.
    pid_start: int | None
    started: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class LatchedFailure:
    """The latest failure of ``job``; it keeps the LED red until acknowledged."""

    job: str
    run_id: str
    outcome: Outcome
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SafeDrive:
    """``drive`` was written successfully by ``run_id`` and may be unplugged."""

    drive: str
    job: str
    run_id: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class LedBook:
    """Everything the colour is derived from; what ``led.json`` holds."""

    active: tuple[ActiveRun, ...] = ()
    failures: tuple[LatchedFailure, ...] = ()  # at most one per job, oldest first
    safe_drive: SafeDrive | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LedSnapshot:
    """The colour, why, and the facts behind it: what ``phobos led show [--json]`` prints."""

    state: LedState
    reason: str
    active: tuple[ActiveRun, ...]
    failures: tuple[LatchedFailure, ...]
    safe_drive: SafeDrive | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; times are ISO 8601 strings in UTC."""
        return {
            "state": str(self.state),
            "reason": self.reason,
            "active": [_record_json(run) for run in self.active],
            "failures": [_record_json(failure) for failure in self.failures],
            "safe_drive": None if self.safe_drive is None else _record_json(self.safe_drive),
        }


# --------------------------------------------------------------------------------------------
# Transitions and the decision: pure functions of a LedBook


def _started(book: LedBook, run: ActiveRun) -> LedBook:
    # A new job makes "safe to remove" stale: the drive may be about to be used again.
    others = tuple(r for r in book.active if r.run_id != run.run_id)
    return replace(book, active=(*others, run), safe_drive=None)


def _finished(book: LedBook, *, run_id: str, job: str, outcome: Outcome, drive: str | None,
              at: datetime, clear_on_success: bool) -> LedBook:
    book = replace(book, active=tuple(r for r in book.active if r.run_id != run_id))
    others = tuple(f for f in book.failures if f.job != job)
    if outcome in _FAILURES:
        failure = LatchedFailure(job=job, run_id=run_id, outcome=outcome, at=at)
        return replace(book, failures=(*others, failure))
    if outcome not in _SUCCESSES:
        return book
    if clear_on_success:
        book = replace(book, failures=others)
    if drive is not None:
        book = replace(book, safe_drive=SafeDrive(drive=drive, job=job, run_id=run_id, at=at))
    return book


def _detached(book: LedBook, drive: str) -> LedBook:
    if book.safe_drive is None or book.safe_drive.drive != drive:
        return book
    return replace(book, safe_drive=None)


def _acked(book: LedBook) -> LedBook:
    return replace(book, failures=())


def _pruned(book: LedBook, alive: Callable[[ActiveRun], bool]) -> LedBook:
    return replace(book, active=tuple(run for run in book.active if alive(run)))


def _decide(book: LedBook) -> tuple[LedState, str]:
    """The colour for ``book`` (dead runs already dropped) and the reason: first of PRIORITY."""
    holds = _conditions(book)
    return next((state, holds[state]) for state in PRIORITY if state in holds)


def _conditions(book: LedBook) -> dict[LedState, str]:
    """Every colour whose condition holds in ``book``, with why. OFF always holds."""
    holds = {LedState.OFF: "idle"}
    if book.failures:
        holds[LedState.RED] = _failure_reason(book.failures)
    interactive = [run for run in book.active if run.trigger in INTERACTIVE]
    scheduled = [run for run in book.active if run.trigger not in INTERACTIVE]
    if interactive:
        holds[LedState.BLUE] = _running_reason(interactive)
    if scheduled:
        holds[LedState.YELLOW] = _running_reason(scheduled)
    if book.safe_drive is not None:
        safe = book.safe_drive
        holds[LedState.GREEN] = f"drive {safe.drive} is safe to remove ({safe.job} succeeded)"
    return holds


def _failure_reason(failures: tuple[LatchedFailure, ...]) -> str:
    latest = max(failures, key=lambda failure: failure.at)
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    when = latest.at.isoformat(timespec="seconds")
    return f"{latest.job} {latest.outcome} at {when}{more}; `phobos led ack` clears it"


def _running_reason(runs: list[ActiveRun]) -> str:
    return ", ".join(f"{run.job} ({run.trigger})" for run in runs) + " running"


# --------------------------------------------------------------------------------------------
# Is the process behind a run still there?


def run_is_alive(run: ActiveRun) -> bool:
    """Whether the process that started ``run`` still exists as the same process.

    A zombie counts as dead: it has finished, only its parent has not reaped it yet. Linux only
    (reads /proc).
    """
    start = _process_start(run.pid)
    if start is None:
        return False
    return run.pid_start is None or start == run.pid_start


def _process_start(pid: int) -> int | None:
    """Start time of live process ``pid`` in clock ticks since boot; None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    rest = stat[stat.rindex(")") + 2:].split()
    if rest[0] in {"Z", "X", "x"}:
        return None
    return int(rest[19])  # field 22, starttime


# --------------------------------------------------------------------------------------------
# The tracker: locked read-modify-write of led.json


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LedTracker:
    """The LED state of every job on this host, shared by all phobos processes via ``state_dir``.

    Each event takes an exclusive ``flock`` on ``led.lock``, reads ``led.json``, applies the
    event, drops runs whose process died, writes the file atomically and, still under the lock,
    shows the new colour on ``driver`` (so the device always ends on the latest committed state,
    never on an older one raced in by another process). Events return the new colour.

    Driver errors (`LedUnavailable`) propagate *after* the event is recorded. Reading
    (`snapshot`, `current_state`) takes no lock: the file is only ever replaced whole.
    """

    state_dir: Path
    _: KW_ONLY
    clear_on_success: bool = False  # a success of a job clears that job's latched failure
    driver: LedDriver | None = None
    clock: Callable[[], datetime] = _utcnow
    alive: Callable[[ActiveRun], bool] = run_is_alive

    @property
    def path(self) -> Path:
        """The state file, ``<state_dir>/led.json``."""
        return self.state_dir / "led.json"

    def job_started(self, run_id: str, job: str, trigger: str, *,
                    pid: int | None = None) -> LedState:
        """``run_id`` of ``job`` began; it counts as running while process ``pid`` (default:
        this one) lives. Any green ends. ``trigger`` is a `Trigger` value."""
        owner = os.getpid() if pid is None else pid
        run = ActiveRun(run_id=run_id, job=job, trigger=Trigger(trigger), pid=owner,
                        pid_start=_process_start(owner), started=self.clock())
        return self._update(lambda book: _started(book, run))

    def job_finished(self, run_id: str, job: str, outcome: str,
                     drive: str | None = None) -> LedState:
        """``run_id`` of ``job`` ended with ``outcome`` (an `Outcome` value other than running).

        Failed/interrupted latch red for ``job``. Success/warning turns green if ``drive`` is
        given, and clears ``job``'s latched failure if ``clear_on_success``. Skipped marks nothing.
        """
        final = Outcome(outcome)
        if final is Outcome.RUNNING:
            raise ValueError("job_finished needs a final outcome, not 'running'")
        at = self.clock()
        return self._update(lambda book: _finished(
            book, run_id=run_id, job=job, outcome=final, drive=drive, at=at,
            clear_on_success=self.clear_on_success))

    def drive_detached(self, drive: str) -> LedState:
        """``drive`` was unplugged: green for it ends (another drive's green stays)."""
        return self._update(lambda book: _detached(book, drive))

    def ack(self) -> LedState:
        """Someone has seen the failures: clear every latched failure."""
        return self._update(_acked)

    def refresh(self) -> LedState:
        """Drop runs whose process died, persist that, and show the colour again on the driver."""
        return self._update(lambda book: book)

    def snapshot(self) -> LedSnapshot:
        """The current colour, its reason and the facts behind it (dead runs left out)."""
        book = _pruned(self._load(), self.alive)
        state, reason = _decide(book)
        return LedSnapshot(state=state, reason=reason, active=book.active,
                           failures=book.failures, safe_drive=book.safe_drive)

    def current_state(self) -> LedState:
        """The colour the LED should show now."""
        return self.snapshot().state

    def _update(self, change: Callable[[LedBook], LedBook]) -> LedState:
        with self._locked():
            book = _pruned(change(self._load()), self.alive)
            self._save(book)
            state, _ = _decide(book)
            if self.driver is not None:
                self.driver.set(state)
        return state

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # A sibling lock file, not led.json itself: the rename that writes led.json swaps its
        # inode, so a lock held on the old inode would not exclude a process opening the new one.
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.state_dir / "led.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise _state_error(self.state_dir, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _load(self) -> LedBook:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return LedBook()
        except OSError as exc:
            raise _state_error(self.path, exc) from exc
        try:
            return _parse(raw)
        except ValueError as exc:
            return _unreadable(self.path, exc, self.clock())

    def _save(self, book: LedBook) -> None:
        try:
            write_atomic(self.path, _dump(book), durable=True)  # a latched red survives
        except OSError as exc:
            raise _state_error(self.path, exc) from exc


def _state_error(path: Path, exc: OSError) -> LedUnavailable:
    return LedUnavailable(f"cannot record the LED state in {path}: {exc.strerror or exc}",
                          hint="check that phobos may write its state directory")


def _unreadable(path: Path, exc: ValueError, now: datetime) -> LedBook:
    # A state file we cannot read may have held a failure; showing red (until acked) is the
    # only answer that cannot hide one. The next event rewrites the file.
    failure = LatchedFailure(job=f"{path.name} (unreadable: {exc})", run_id="-",
                             outcome=Outcome.FAILED, at=now)
    return LedBook(failures=(failure,))


# --------------------------------------------------------------------------------------------
# led.json, version 1

_VERSION: Final = 1


def _record_json(record: ActiveRun | LatchedFailure | SafeDrive) -> dict[str, Any]:
    return {f.name: _plain(getattr(record, f.name)) for f in fields(record)}


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def _dump(book: LedBook) -> bytes:
    doc = {
        "version": _VERSION,
        "active": [_record_json(run) for run in book.active],
        "failures": [_record_json(failure) for failure in book.failures],
        "safe_drive": None if book.safe_drive is None else _record_json(book.safe_drive),
    }
    return (json.dumps(doc, indent=2) + "\n").encode()


def _parse(raw: bytes) -> LedBook:
    """The book in ``raw``; ValueError if it is not a version-1 LED state document."""
    doc = json.loads(raw)
    if not isinstance(doc, dict) or doc.get("version") != _VERSION:
        raise ValueError(f"not a version {_VERSION} LED state document")
    try:
        safe = doc["safe_drive"]
        return LedBook(active=tuple(_run_from(item) for item in doc["active"]),
                       failures=tuple(_failure_from(item) for item in doc["failures"]),
                       safe_drive=None if safe is None else _safe_drive_from(safe))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed LED state ({exc!r})") from exc


def _run_from(item: dict[str, Any]) -> ActiveRun:
    start = item["pid_start"]
    return ActiveRun(run_id=str(item["run_id"]), job=str(item["job"]),
                     trigger=Trigger(item["trigger"]), pid=int(item["pid"]),
                     pid_start=None if start is None else int(start),
                     started=datetime.fromisoformat(item["started"]))


def _failure_from(item: dict[str, Any]) -> LatchedFailure:
    return LatchedFailure(job=str(item["job"]), run_id=str(item["run_id"]),
                          outcome=Outcome(item["outcome"]), at=datetime.fromisoformat(item["at"]))


def _safe_drive_from(item: dict[str, Any]) -> SafeDrive:
    return SafeDrive(drive=str(item["drive"]), job=str(item["job"]), run_id=str(item["run_id"]),
                     at=datetime.fromisoformat(item["at"]))


# --------------------------------------------------------------------------------------------
# Drivers


class LedDriver(Protocol):
    """Shows a colour. Raises `LedUnavailable` when it cannot; setting the same state again
    is harmless (and re-asserts it, e.g. after the stick was replugged)."""

    def set(self, state: LedState) -> None: ...


class LedTransport(Protocol):
    """Delivers one HID feature report (report id first) to the BlinkStick."""

    def send_feature_report(self, report: bytes) -> None: ...


#: Full-brightness colour of each state as (R, G, B); `BlinkStickDriver` dims it by ``limit``.
COLOURS: Final[dict[LedState, tuple[int, int, int]]] = {
    LedState.OFF: (0, 0, 0),
    LedState.BLUE: (0, 0, 255),
    LedState.YELLOW: (255, 255, 0),
    LedState.GREEN: (0, 255, 0),
    LedState.RED: (255, 0, 0),
}

BLINKSTICK_VENDOR: Final = 0x20A0
BLINKSTICK_PRODUCT: Final = 0x41E5


def scale(component: int, limit: int) -> int:
    """``component`` (0-255) dimmed to ``limit`` percent (0-100), rounded down.

    Same as the blinkstick CLI's ``--limit`` (ceiling ``int(limit / 100 * 255)``, then each
    component ``int(component / 255 * ceiling)``), but in exact integer arithmetic: identical for
    every limit at components 0 and 255, the only ones phobos sends. (The CLI's floats come out
    one lower for a few mid-range components, e.g. 155 at limit 20.)
    """
    ceiling = 255 * limit // 100
    return component * ceiling // 255


def blinkstick_report(state: LedState, *, index: int, limit: int) -> bytes:
    """The feature report that shows ``state`` on LED ``index`` dimmed to ``limit`` percent.

    LED 0: report 1 ``[1, R, G, B]``; any other LED: report 5 ``[5, channel 0, index, R, G, B]``.
    """
    red, green, blue = (scale(component, limit) for component in COLOURS[state])
    if index == 0:
        return bytes((1, red, green, blue))
    return bytes((5, 0, index, red, green, blue))


# _IOC() from <asm-generic/ioctl.h>, the layout of x86, arm, arm64 and riscv. (powerpc, mips,
# sparc and alpha use another layout; phobos does not run there yet.)
_IOC_WRITE: Final = 1
_IOC_READ: Final = 2
_IOC_SIZEBITS: Final = 14


def _ioc(direction: int, kind: str, number: int, size: int) -> int:
    if not 0 <= size < 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl argument size {size} does not fit {_IOC_SIZEBITS} bits")
    return direction << 30 | size << 16 | ord(kind) << 8 | number


def hidiocsfeature(length: int) -> int:
    """``HIDIOCSFEATURE(length)`` from <linux/hidraw.h>: send a feature report of ``length``."""
    return _ioc(_IOC_WRITE | _IOC_READ, "H", 0x06, length)


_UDEV_HINT: Final = (
    "run phobos as root, or let its group use the stick with a udev rule such as "
    '/etc/udev/rules.d/85-blinkstick.rules: SUBSYSTEM=="hidraw", ATTRS{idVendor}=="20a0", '
    'ATTRS{idProduct}=="41e5", MODE:="0660", GROUP:="phobos"; then '
    "`udevadm control --reload && udevadm trigger` and replug the stick"
)
_REPLUG_HINT: Final = "unplug the BlinkStick and plug it in again; `dmesg` shows USB errors"


@dataclass(frozen=True, slots=True, kw_only=True)
class HidrawTransport:
    """Sends feature reports to the first BlinkStick (USB 20a0:41e5) among the hidraw devices.

    The device is looked up on every send, so a replugged stick (new hidraw number) just works.
    ``sysfs`` and ``dev`` exist for tests.
    """

    sysfs: Path = Path("/sys/class/hidraw")
    dev: Path = Path("/dev")

    def find(self) -> Path:
        """The device node of the first BlinkStick, in hidraw number order; LedUnavailable if
        there is none."""
        entries = sorted(self.sysfs.glob("hidraw*"), key=lambda p: (len(p.name), p.name))
        for entry in entries:
            if _is_blinkstick(entry / "device" / "uevent"):
                return self.dev / entry.name
        raise LedUnavailable(
            f"no BlinkStick (USB 20a0:41e5) among the hidraw devices in {self.sysfs}",
            hint="plug it in; `lsusb -d 20a0:41e5` shows whether the system sees it")

    def send_feature_report(self, report: bytes) -> None:
        """Send ``report`` with the HIDIOCSFEATURE ioctl; LedUnavailable on any failure."""
        node = self.find()
        fd = _open_node(node)
        try:
            fcntl.ioctl(fd, hidiocsfeature(len(report)), report)
        except OSError as exc:
            raise LedUnavailable(
                f"{node} did not accept the colour report (HIDIOCSFEATURE: {exc.strerror})",
                hint=_REPLUG_HINT) from exc
        finally:
            os.close(fd)


def _is_blinkstick(uevent: Path) -> bool:
    """Whether a hidraw device's uevent says ``HID_ID=<bus>:000020A0:000041E5``."""
    try:
        lines = uevent.read_text().splitlines()
    except OSError:
        return False  # vanished while we looked, or not a device directory
    for line in lines:
        key, _, value = line.partition("=")
        if key == "HID_ID":
            ids = [_hex(part) for part in value.split(":")]
            return ids[1:] == [BLINKSTICK_VENDOR, BLINKSTICK_PRODUCT]
    return False


def _hex(text: str) -> int | None:
    try:
        return int(text, 16)
    except ValueError:
        return None


def _open_node(node: Path) -> int:
    try:
        return os.open(node, os.O_RDWR | os.O_CLOEXEC)
    except PermissionError as exc:
        raise LedUnavailable(f"no permission to open the BlinkStick at {node}",
                             hint=_UDEV_HINT) from exc
    except FileNotFoundError as exc:
        raise LedUnavailable(f"the BlinkStick at {node} went away",
                             hint="plug it in (again)") from exc
    except OSError as exc:
        raise LedUnavailable(f"cannot open the BlinkStick at {node}: {exc.strerror}",
                             hint=_REPLUG_HINT) from exc


@dataclass(frozen=True, slots=True)
class BlinkStickDriver:
    """Shows states on LED ``index`` of a BlinkStick, each colour dimmed to ``limit`` percent.

    ``index`` 0-255 (a Nano's second LED is 1), ``limit`` 0-100; ValueError otherwise (config
    validation reports them to the user first).
    """

    index: int = 1
    limit: int = 50
    transport: LedTransport = field(default_factory=HidrawTransport)

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 255:
            raise ValueError(f"BlinkStick LED index must be 0-255, not {self.index}")
        if not 0 <= self.limit <= 100:
            raise ValueError(f"BlinkStick brightness limit must be 0-100, not {self.limit}")

    def set(self, state: LedState) -> None:
        """Send the report for ``state``; LedUnavailable from the transport on failure."""
        self.transport.send_feature_report(
            blinkstick_report(state, index=self.index, limit=self.limit))


@dataclass(frozen=True, slots=True)
class FileDriver:
    """Writes the state's name and a newline to ``path`` (atomically), for other tools."""

    path: Path

    def set(self, state: LedState) -> None:
        """Replace the file's content by ``state``; LedUnavailable if it cannot be written."""
        try:
            write_atomic(self.path, f"{state}\n".encode())
        except OSError as exc:
            raise LedUnavailable(f"cannot write the LED state to {self.path}: {exc.strerror}",
                                 hint="check that the directory exists and phobos may write it"
                                 ) from exc


# CommandDriver (runs the user's argv with `{color}` replaced, through phobos.core.proc.run)
# lives in phobos.notify.command, next to the other notifier back ends.
