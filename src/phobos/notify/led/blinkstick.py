"""The BlinkStick, spoken to directly: its HID feature reports (colour, LED index,
brightness limit) sent with the ``HIDIOCSFEATURE`` ioctl to the first BlinkStick among the
hidraw devices (the PyPI package is unmaintained).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

from phobos.core.model import LedState
from phobos.notify.errors import LedUnavailable
from phobos.notify.led.drivers import COLOURS


class LedTransport(Protocol):
    """Delivers one HID feature report (report id first) to the BlinkStick."""

    def send_feature_report(self, report: bytes) -> None: ...


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
    """Shows states on LED ``index`` of a BlinkStick, each colour dimmed to ``limit`` percent,
    or to its own limit in ``limits`` (the original setup: dim yellow and green, brighter
    red).

    ``index`` 0-255 (a Nano's second LED is 1), limits 0-100; ValueError otherwise (config
    validation reports them to the user first).
    """

    index: int = 1
    limit: int = 50
    transport: LedTransport = field(default_factory=HidrawTransport)
    limits: Mapping[LedState, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 255:
            raise ValueError(f"BlinkStick LED index must be 0-255, not {self.index}")
        for limit in (self.limit, *self.limits.values()):
            if not 0 <= limit <= 100:
                raise ValueError(f"BlinkStick brightness limit must be 0-100, not {limit}")

    def set(self, state: LedState) -> None:
        """Send the report for ``state``; LedUnavailable from the transport on failure."""
        limit = self.limits.get(state, self.limit)
        self.transport.send_feature_report(
            blinkstick_report(state, index=self.index, limit=limit))
