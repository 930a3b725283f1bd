"""The LED: BlinkStick reports, the hidraw transport, the file driver and the state machine.

The driver code runs for real; only the transport (the bytes' way to the USB device) is faked,
and HidrawTransport runs against a fake sysfs tree with a regular file as its device node.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from configs import config_from, problems_of

from phobos.core.model import LedState, Trigger
from phobos.notify.errors import LedUnavailable
from phobos.notify.led import tracker as tracker_module
from phobos.notify.led.blinkstick import BlinkStickDriver, HidrawTransport, hidiocsfeature, scale
from phobos.notify.led.drivers import FileDriver
from phobos.notify.led.tracker import LedTracker
from phobos.notify.setup import led_driver

OFF, BLUE, YELLOW, GREEN, RED = (LedState.OFF, LedState.BLUE, LedState.YELLOW, LedState.GREEN,
                                 LedState.RED)

BLINKSTICK_HID_ID = "0003:000020A0:000041E5"
MOUSE_HID_ID = "0003:0000046D:0000C52B"


@dataclass
class RecordingTransport:
    """Stands in for the USB device: remembers every report it was asked to send."""

    reports: list[bytes] = field(default_factory=list)

    def send_feature_report(self, report: bytes) -> None:
        self.reports.append(report)


# --------------------------------------------------------------------------------------------
# BlinkStick reports

# Brightest component value per limit: 255 * limit / 100, rounded down.
LEVEL = {10: 25, 50: 127, 100: 255}
# Which components are lit, per state.
LIT = {OFF: (0, 0, 0), BLUE: (0, 0, 1), YELLOW: (1, 1, 0), GREEN: (0, 1, 0), RED: (1, 0, 0)}


def expected_report(state: LedState, index: int, limit: int) -> bytes:
    rgb = [lit * LEVEL[limit] for lit in LIT[state]]
    return bytes([1, *rgb]) if index == 0 else bytes([5, 0, index, *rgb])


@pytest.mark.parametrize("limit", [10, 50, 100])
@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("state", list(LedState))
def test_report_bytes(state: LedState, index: int, limit: int) -> None:
    transport = RecordingTransport()
    BlinkStickDriver(index=index, limit=limit, transport=transport).set(state)
    assert transport.reports == [expected_report(state, index, limit)]


@pytest.mark.parametrize(("state", "index", "limit", "hex_report"), [
    (YELLOW, 1, 50, "05 00 01 7f 7f 00"),  # the original setup's `--index 1 --limit 50`
    (YELLOW, 1, 10, "05 00 01 19 19 00"),  # the original setup's `--index 1 --limit 10`
    (RED, 0, 100, "01 ff 00 00"),
    (BLUE, 2, 10, "05 00 02 00 00 19"),
    (OFF, 0, 50, "01 00 00 00"),
])
def test_report_bytes_literal(state: LedState, index: int, limit: int, hex_report: str) -> None:
    transport = RecordingTransport()
    BlinkStickDriver(index=index, limit=limit, transport=transport).set(state)
    assert transport.reports == [bytes.fromhex(hex_report)]


def test_default_driver_is_index_1_limit_50() -> None:
    transport = RecordingTransport()
    BlinkStickDriver(transport=transport).set(GREEN)
    assert transport.reports == [bytes.fromhex("05 00 01 00 7f 00")]


@pytest.mark.parametrize("limit", range(101))
def test_scale_matches_blinkstick_cli(limit: int) -> None:
    # The CLI: set_max_rgb_value(int(float(limit) / 100.0 * 255)), then each component
    # int(value / 255 * max). phobos sends only 0 and 255.
    cli_max = int(float(limit) / 100.0 * 255)
    for component in (0, 255):
        assert scale(component, limit) == int(float(component) / 255.0 * cli_max)


@pytest.mark.parametrize(("index", "limit"), [(-1, 50), (256, 50), (1, -1), (1, 101)])
def test_driver_rejects_out_of_range(index: int, limit: int) -> None:
    with pytest.raises(ValueError):
        BlinkStickDriver(index=index, limit=limit, transport=RecordingTransport())


# The original setup's habit: `blinkstick --limit 10` while working (yellow, blue) and
# for green, 50 for red.
ORIGINAL_LIMITS = "{ blue = 10, yellow = 10, green = 10, red = 50 }"


def test_brightness_limit_per_colour_from_the_config() -> None:
    config = config_from(f'[notify.led]\ndriver = "blinkstick"\nlimit = {ORIGINAL_LIMITS}\n')
    driver = led_driver(config.notify.led)
    assert isinstance(driver, BlinkStickDriver)
    transport = RecordingTransport()
    driver = dataclasses.replace(driver, transport=transport)
    for state in (YELLOW, BLUE, GREEN, RED, OFF):
        driver.set(state)
    assert transport.reports == [bytes.fromhex(h) for h in (
        "05 00 01 19 19 00", "05 00 01 00 00 19", "05 00 01 00 19 00", "05 00 01 7f 00 00",
        "05 00 01 00 00 00")]
    # A colour left out keeps the default; one number still dims every colour alike.
    partial = config_from('[notify.led]\nlimit = { red = 100 }\n').notify.led
    assert [partial.limit_of(c) for c in ("blue", "yellow", "green", "red")] == [50, 50, 50, 100]
    assert config_from('[notify.led]\nlimit = 10\n').notify.led.limit_of("red") == 10


@pytest.mark.parametrize(("limit", "problem"), [
    ("{ rde = 50 }", "notify.led.limit: 'rde' is not one of 'blue', 'yellow', 'green', 'red' "
                     "(did you mean 'red'?)"),
    ("{ working = 10 }", "notify.led.limit: 'working' is not one of"),
    ("{ red = 101 }", "notify.led.limit: red: 101 is not 0-100"),
    ("{ red = true }", "notify.led.limit: red: expected a whole number 0-100"),
    ("-1", "notify.led.limit: -1 is not 0-100, or a table per colour"),
    ('"bright"', "notify.led.limit: expected a whole number 0-100, or a table per colour"),
])
def test_brightness_limit_problems(limit: str, problem: str) -> None:
    assert any(p.startswith(problem) for p in problems_of(f"[notify.led]\nlimit = {limit}\n"))


def test_command_driver_gets_each_colours_limit(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    config = config_from(f"""
        [notify.led]
        driver = "command"
        limit = {ORIGINAL_LIMITS}
        command = ["sh", "-c", "echo $0 $1 >> {record}", "{{color}}", "--limit={{limit}}"]
        """)
    driver = led_driver(config.notify.led)
    assert driver is not None
    for state in (YELLOW, RED, GREEN):
        driver.set(state)
    assert record.read_text().splitlines() == ["yellow --limit=10", "red --limit=50",
                                               "green --limit=10"]


def test_hidiocsfeature_number() -> None:
    # _IOC(_IOC_WRITE|_IOC_READ, 'H', 0x06, len) with the asm-generic layout.
    assert hidiocsfeature(4) == 0xC0044806
    assert hidiocsfeature(6) == 0xC0064806
    with pytest.raises(ValueError):
        hidiocsfeature(1 << 14)


# --------------------------------------------------------------------------------------------
# HidrawTransport against a fake sysfs tree


def fake_hidraw(root: Path, devices: dict[str, str]) -> HidrawTransport:
    """A sysfs tree and /dev with one regular file per hidraw device (name -> HID_ID)."""
    sysfs, dev = root / "sys/class/hidraw", root / "dev"
    dev.mkdir(parents=True)
    for name, hid_id in devices.items():
        device = sysfs / name / "device"
        device.mkdir(parents=True)
        (device / "uevent").write_text(
            f"DRIVER=hid-generic\nHID_ID={hid_id}\nHID_NAME=Some Device\nMODALIAS=hid:x\n")
        (dev / name).write_bytes(b"")
    return HidrawTransport(sysfs=sysfs, dev=dev)


def test_hidraw_ioctl_on_non_hid_node_is_led_unavailable(tmp_path: Path) -> None:
    transport = fake_hidraw(tmp_path, {"hidraw0": MOUSE_HID_ID, "hidraw1": BLINKSTICK_HID_ID})
    driver = BlinkStickDriver(index=1, limit=50, transport=transport)
    with pytest.raises(LedUnavailable) as caught:
        driver.set(RED)
    assert str(caught.value) == (f"{tmp_path}/dev/hidraw1 did not accept the colour report "
                                 "(HIDIOCSFEATURE: Inappropriate ioctl for device)")
    assert caught.value.hint is not None and "plug it in again" in caught.value.hint
    assert (tmp_path / "dev/hidraw1").read_bytes() == b""


def test_hidraw_sends_report_with_hidiocsfeature(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    transport = fake_hidraw(tmp_path, {"hidraw3": BLINKSTICK_HID_ID})
    calls: list[tuple[str, int, bytes]] = []

    def ioctl(fd: int, request: int, arg: bytes) -> bytes:
        calls.append((os.readlink(f"/proc/self/fd/{fd}"), request, arg))
        return arg

    monkeypatch.setattr(fcntl, "ioctl", ioctl)
    BlinkStickDriver(index=1, limit=50, transport=transport).set(YELLOW)
    assert calls == [(f"{tmp_path}/dev/hidraw3", 0xC0064806, bytes.fromhex("05 00 01 7f 7f 00"))]


def test_hidraw_picks_first_blinkstick_in_number_order(tmp_path: Path) -> None:
    transport = fake_hidraw(tmp_path, {"hidraw10": BLINKSTICK_HID_ID, "hidraw2": MOUSE_HID_ID,
                                       "hidraw9": BLINKSTICK_HID_ID})
    assert transport.find() == tmp_path / "dev/hidraw9"


@pytest.mark.parametrize("devices", [{}, {"hidraw0": MOUSE_HID_ID}, {"hidraw0": "garbage"}])
def test_hidraw_without_blinkstick(tmp_path: Path, devices: dict[str, str]) -> None:
    transport = fake_hidraw(tmp_path, devices)
    with pytest.raises(LedUnavailable, match="no BlinkStick") as caught:
        transport.send_feature_report(b"\x01\x00\x00\x00")
    assert caught.value.hint is not None and caught.value.hint.startswith("plug it in")


def test_hidraw_without_sysfs_class(tmp_path: Path) -> None:
    transport = HidrawTransport(sysfs=tmp_path / "nonexistent", dev=tmp_path)
    with pytest.raises(LedUnavailable, match="no BlinkStick"):
        transport.send_feature_report(b"\x01\x00\x00\x00")


def test_hidraw_node_gone(tmp_path: Path) -> None:
    transport = fake_hidraw(tmp_path, {"hidraw0": BLINKSTICK_HID_ID})
    (tmp_path / "dev/hidraw0").unlink()
    with pytest.raises(LedUnavailable, match="went away"):
        transport.send_feature_report(b"\x01\x00\x00\x00")


def test_hidraw_permission_denied_hints_udev_rule(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    transport = fake_hidraw(tmp_path, {"hidraw0": BLINKSTICK_HID_ID})
    node, real_open = tmp_path / "dev/hidraw0", os.open

    def open_as_non_root(path: str | os.PathLike[str], flags: int, mode: int = 0o777,
                         *, dir_fd: int | None = None) -> int:
        # root ignores file modes, so "permission denied" has to be staged for the node
        if Path(path) == node:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_as_non_root)
    with pytest.raises(LedUnavailable, match="no permission") as caught:
        transport.send_feature_report(b"\x01\x00\x00\x00")
    hint = caught.value.hint or ""
    assert 'ATTRS{idVendor}=="20a0"' in hint and 'ATTRS{idProduct}=="41e5"' in hint
    assert 'SUBSYSTEM=="hidraw"' in hint


# --------------------------------------------------------------------------------------------
# FileDriver


def test_file_driver_writes_state_atomically(tmp_path: Path) -> None:
    path = tmp_path / "led"
    FileDriver(path).set(YELLOW)
    assert path.read_text() == "yellow\n"
    FileDriver(path).set(OFF)
    assert path.read_text() == "off\n"
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["led"]


def test_file_driver_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(LedUnavailable, match="cannot write the LED state"):
        FileDriver(tmp_path / "missing" / "led").set(RED)


# --------------------------------------------------------------------------------------------
# The state machine


class Clock:
    """A clock that advances one minute per reading, so every event has its own time."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def tracker(tmp_path: Path) -> LedTracker:
    return LedTracker(tmp_path / "state", clock=Clock())


def fail(tracker: LedTracker, job: str, outcome: str = "failed") -> LedState:
    tracker.job_started(f"{job}-run", job, "timer")
    return tracker.job_finished(f"{job}-run", job, outcome)


def succeed(tracker: LedTracker, job: str, drive: str | None = None,
            outcome: str = "success") -> LedState:
    tracker.job_started(f"{job}-run", job, "device" if drive else "timer")
    return tracker.job_finished(f"{job}-run", job, outcome, drive=drive)


def test_idle_is_off(tracker: LedTracker) -> None:
    snapshot = tracker.snapshot()
    assert (snapshot.state, snapshot.reason) == (OFF, "idle")
    assert not tracker.path.exists()  # reading writes nothing


@pytest.mark.parametrize(("trigger", "colour"), [
    (Trigger.MANUAL, BLUE), (Trigger.DEVICE, BLUE), (Trigger.TIMER, YELLOW),
    (Trigger.DAEMON, YELLOW),
])
def test_running_colour_by_trigger(tracker: LedTracker, trigger: Trigger,
                                   colour: LedState) -> None:
    assert tracker.job_started("r1", "nightly", trigger) is colour
    assert tracker.current_state() is colour
    assert tracker.job_finished("r1", "nightly", "success") is OFF


@pytest.mark.parametrize(("failure", "interactive", "scheduled", "green", "colour"), [
    (False, False, False, False, OFF),
    (False, False, False, True, GREEN),
    (False, False, True, False, YELLOW),
    (False, False, True, True, YELLOW),
    (False, True, False, False, BLUE),
    (False, True, False, True, BLUE),
    (False, True, True, False, BLUE),
    (False, True, True, True, BLUE),
    (True, False, False, False, RED),
    (True, False, False, True, RED),
    (True, False, True, False, RED),
    (True, False, True, True, RED),
    (True, True, False, False, RED),
    (True, True, False, True, RED),
    (True, True, True, False, RED),
    (True, True, True, True, RED),
])
def test_priority(tracker: LedTracker, failure: bool, interactive: bool, scheduled: bool,
                  green: bool, colour: LedState) -> None:
    if interactive:
        tracker.job_started("i", "restore", "manual")
    if scheduled:
        tracker.job_started("s", "check", "timer")
    if failure:
        fail(tracker, "pull-luv")
    if green:  # last: any job start ends green
        succeed(tracker, "offsite", drive="ext-a")
    snapshot = tracker.snapshot()
    assert snapshot.state is colour
    assert len(snapshot.active) == interactive + scheduled
    assert len(snapshot.failures) == failure
    assert (snapshot.safe_drive is not None) == green


def test_lower_colours_show_as_higher_ones_end(tracker: LedTracker) -> None:
    tracker.job_started("i", "restore", "manual")
    tracker.job_started("s", "check", "timer")
    fail(tracker, "pull-luv")
    assert succeed(tracker, "offsite", drive="ext-a") is RED
    assert tracker.ack() is BLUE
    assert tracker.job_finished("i", "restore", "success") is YELLOW
    assert tracker.job_finished("s", "check", "success") is GREEN
    assert tracker.drive_detached("ext-a") is OFF


def test_failure_latches_until_ack(tracker: LedTracker) -> None:
    assert fail(tracker, "nightly") is RED
    assert succeed(tracker, "nightly") is RED  # clear_on_success is off by default
    assert succeed(tracker, "check") is RED
    tracker.job_started("again", "nightly", "timer")
    assert tracker.current_state() is RED  # never hidden by a running job
    assert tracker.ack() is YELLOW
    assert tracker.job_finished("again", "nightly", "success") is OFF


def test_red_reason_names_job_time_and_count(tracker: LedTracker) -> None:
    fail(tracker, "nightly")
    fail(tracker, "check", "interrupted")
    snapshot = tracker.snapshot()
    assert snapshot.reason == ("check interrupted at 2026-01-05T03:04:00+00:00 (and 1 more); "
                               "`phobos led ack` clears it")
    assert [(f.job, f.outcome) for f in snapshot.failures] == [("nightly", "failed"),
                                                               ("check", "interrupted")]


def test_interrupted_is_a_failure(tracker: LedTracker) -> None:
    assert fail(tracker, "nightly", "interrupted") is RED


def test_warning_is_a_success(tracker: LedTracker) -> None:
    assert succeed(tracker, "offsite", drive="ext-a", outcome="warning") is GREEN
    assert succeed(tracker, "pull-luv", outcome="warning") is OFF


def test_skipped_leaves_no_mark(tracker: LedTracker) -> None:
    assert succeed(tracker, "offsite", drive="ext-a", outcome="skipped") is OFF
    fail(tracker, "nightly")
    clearing = LedTracker(tracker.state_dir, clear_on_success=True, clock=Clock())
    assert succeed(clearing, "nightly", outcome="skipped") is RED


def test_clear_on_success(tmp_path: Path) -> None:
    tracker = LedTracker(tmp_path, clear_on_success=True, clock=Clock())
    fail(tracker, "nightly")
    fail(tracker, "check")
    assert succeed(tracker, "pull-luv") is RED  # another job's success clears nothing
    assert succeed(tracker, "nightly") is RED  # check still failed
    assert tracker.snapshot().reason.startswith("check failed")
    assert succeed(tracker, "check", outcome="warning") is OFF


def test_green_until_its_drive_leaves(tracker: LedTracker) -> None:
    assert succeed(tracker, "offsite", drive="ext-a") is GREEN
    assert tracker.snapshot().reason == "drive ext-a is safe to remove (offsite succeeded)"
    assert tracker.drive_detached("ext-b") is GREEN
    assert tracker.drive_detached("ext-a") is OFF


def test_green_ends_when_a_job_starts(tracker: LedTracker) -> None:
    succeed(tracker, "offsite", drive="ext-a")
    assert tracker.job_started("r", "nightly", "timer") is YELLOW
    assert tracker.job_finished("r", "nightly", "success") is OFF


def test_failed_drive_job_is_red_not_green(tracker: LedTracker) -> None:
    tracker.job_started("r", "offsite", "device")
    assert tracker.job_finished("r", "offsite", "failed", drive="ext-a") is RED
    assert tracker.ack() is OFF


def test_bad_events_are_rejected(tracker: LedTracker) -> None:
    with pytest.raises(ValueError):
        tracker.job_started("r", "nightly", "cron")
    with pytest.raises(ValueError):
        tracker.job_finished("r", "nightly", "running")
    with pytest.raises(ValueError):
        tracker.job_finished("r", "nightly", "exploded")


# --------------------------------------------------------------------------------------------
# Runs whose process died


def test_run_of_dead_process_is_dropped(tracker: LedTracker) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)
    assert tracker.job_started("r", "nightly", "timer", pid=int(gone.stdout)) is OFF
    assert tracker.snapshot().active == ()
    assert json.loads(tracker.path.read_text())["active"] == []


def test_run_of_zombie_process_is_dropped(tracker: LedTracker) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_until_zombie(child.pid)
        assert tracker.job_started("r", "nightly", "timer", pid=child.pid) is OFF
    finally:
        child.wait()


def wait_until_zombie(pid: int) -> None:
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, f"process {pid} did not exit"
        time.sleep(0.01)


def test_reused_pid_does_not_keep_a_run_alive(tracker: LedTracker) -> None:
    assert tracker.job_started("r", "nightly", "timer") is YELLOW
    doc = json.loads(tracker.path.read_text())
    doc["active"][0]["pid_start"] += 1  # same PID, another process
    tracker.path.write_text(json.dumps(doc))
    assert tracker.current_state() is OFF
    assert json.loads(tracker.path.read_text())["active"] != []  # reading changes nothing...
    assert tracker.refresh() is OFF
    assert json.loads(tracker.path.read_text())["active"] == []  # ...an update drops it


# --------------------------------------------------------------------------------------------
# Drivers behind the tracker, persistence


def test_tracker_shows_each_state_on_the_driver(tmp_path: Path) -> None:
    transport = RecordingTransport()
    driver = BlinkStickDriver(index=1, limit=10, transport=transport)
    tracker = LedTracker(tmp_path, driver=driver, clock=Clock())
    tracker.job_started("r", "offsite", "device")
    tracker.job_finished("r", "offsite", "success", drive="ext-a")
    tracker.drive_detached("ext-a")
    assert transport.reports == [bytes.fromhex(h) for h in
                                 ("05 00 01 00 00 19", "05 00 01 00 19 00", "05 00 01 00 00 00")]


def test_driver_failure_does_not_lose_the_event(tmp_path: Path) -> None:
    class Unplugged:
        def set(self, state: LedState) -> None:
            raise LedUnavailable("no BlinkStick", hint="plug it in")

    tracker = LedTracker(tmp_path, driver=Unplugged(), clock=Clock())
    with pytest.raises(LedUnavailable):
        tracker.job_started("r", "nightly", "timer")
    assert tracker.current_state() is YELLOW
    with pytest.raises(LedUnavailable):
        tracker.job_finished("r", "nightly", "failed")
    assert tracker.current_state() is RED


def test_file_driver_follows_tracker(tmp_path: Path) -> None:
    tracker = LedTracker(tmp_path / "state", driver=FileDriver(tmp_path / "led"), clock=Clock())
    tracker.job_started("r", "nightly", "manual")
    assert (tmp_path / "led").read_text() == "blue\n"
    tracker.job_finished("r", "nightly", "success")
    assert (tmp_path / "led").read_text() == "off\n"


def test_unreadable_state_file_shows_red_until_ack(tracker: LedTracker) -> None:
    tracker.state_dir.mkdir()
    tracker.path.write_text("{not json")
    snapshot = tracker.snapshot()
    assert snapshot.state is RED
    assert snapshot.reason.startswith("led.json (unreadable: ")
    assert tracker.ack() is OFF
    assert json.loads(tracker.path.read_text())["version"] == 1


def test_snapshot_json(tracker: LedTracker) -> None:
    tracker.job_started("r1", "restore", "manual", pid=os.getpid())
    fail(tracker, "nightly")
    doc = json.loads(json.dumps(tracker.snapshot().to_json()))
    assert doc["state"] == "red"
    assert doc["reason"] == ("nightly failed at 2026-01-05T03:03:00+00:00; "
                             "`phobos led ack` clears it")
    [run] = doc["active"]
    assert (run["run_id"], run["job"], run["trigger"], run["pid"], run["started"]) == (
        "r1", "restore", "manual", os.getpid(), "2026-01-05T03:01:00+00:00")
    assert doc["failures"] == [{"job": "nightly", "run_id": "nightly-run", "outcome": "failed",
                                "at": "2026-01-05T03:03:00+00:00"}]
    assert doc["safe_drive"] is None


def test_state_file_is_replaced_atomically(tracker: LedTracker) -> None:
    tracker.job_started("r", "nightly", "timer")
    files = sorted(p.name for p in tracker.state_dir.iterdir())
    assert files == ["led.json", "led.lock"]
    assert tracker.path.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------------------------
# Several processes at once

WORKER = """
import sys, time
from pathlib import Path
from phobos.notify.led.tracker import LedTracker
from phobos.notify.setup import led_driver

state_dir, worker, owner = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
while not (state_dir / "go").exists():  # start together, to collide as much as possible
    time.sleep(0.001)
tracker = LedTracker(state_dir)
for i in range(25):
    tracker.job_started(f"{worker}-{i}", f"job-{worker}-{i}", "timer", pid=owner)
    tracker.job_finished(f"{worker}-f{i}", f"fail-{worker}-{i}", "failed")
"""


@pytest.fixture
def worker_env() -> Iterator[dict[str, str]]:
    src = str(Path(tracker_module.__file__).resolve().parents[3])
    yield {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src,
                                                                     os.environ.get("PYTHONPATH")]))}


def test_concurrent_processes_lose_no_events(tmp_path: Path, worker_env: dict[str, str]) -> None:
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), f"w{n}",
                                 str(os.getpid())], env=worker_env) for n in range(4)]
    (tmp_path / "go").touch()
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0, 0]
    snapshot = LedTracker(tmp_path).snapshot()
    assert len(snapshot.active) == 100  # each run is owned by this (live) test process
    assert len(snapshot.failures) == 100
    assert {run.run_id for run in snapshot.active} == {
        f"w{n}-{i}" for n in range(4) for i in range(25)}
    assert snapshot.state is RED
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "led.json", "led.lock"]
