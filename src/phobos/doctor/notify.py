"""Doctor check areas ``led`` and ``notify``: the LED driver builds (and a BlinkStick is
there and writable); each message channel builds from its config, the SMTP server
answers a TCP connect (nothing is sent, no ping URL is called)."""

from __future__ import annotations

import os
import shutil
import socket
from typing import Any

from phobos.config.model import Config
from phobos.doctor.findings import Finding, error, ok, warning
from phobos.doctor.tools import search_path
from phobos.errors import PhobosError

SMTP_PROBE_TIMEOUT = 5.0


def led_findings(config: Config) -> list[Finding]:
    """The LED driver builds and, for a BlinkStick, the stick is there and writable."""
    from phobos.notify.led.blinkstick import BlinkStickDriver, HidrawTransport
    from phobos.notify.setup import led_driver

    led = config.notify.led
    try:
        driver = led_driver(led)
    except (PhobosError, ValueError) as exc:
        hint = exc.hint if isinstance(exc, PhobosError) else "fix [notify.led]"
        return [error("led", led.driver, str(exc), hint)]
    if driver is None:
        return [ok("led", "none", "no LED configured (driver = \"none\")")]
    if isinstance(driver, BlinkStickDriver):
        return [_blinkstick_finding(HidrawTransport())]
    if led.driver == "command":
        program = shutil.which(led.command[0], path=search_path())
        if program is None:
            return [error("led", "command", f"{led.command[0]}: not found on PATH",
                          "install it or fix [notify.led] command")]
        return [ok("led", "command", f"runs {program}")]
    assert led.path is not None
    parent = led.path.parent
    if not os.access(parent, os.W_OK):
        return [error("led", "file", f"cannot write into {parent}",
                      "create the directory or fix [notify.led] path")]
    return [ok("led", "file", f"writes the state to {led.path}")]


def _blinkstick_finding(transport: Any) -> Finding:
    try:
        node = transport.find()
    except PhobosError as exc:
        return warning("led", "blinkstick", exc.message, exc.hint)
    if not os.access(node, os.R_OK | os.W_OK):
        return error("led", "blinkstick", f"found at {node} but phobos may not write to it",
                     "run phobos as root, or give its group the stick with a udev rule: "
                     'SUBSYSTEM=="hidraw", ATTRS{idVendor}=="20a0", ATTRS{idProduct}=="41e5", '
                     'MODE:="0660", GROUP:="phobos"')
    return ok("led", "blinkstick", f"BlinkStick at {node}")


def notify_findings(config: Config, *, probe: bool = True) -> list[Finding]:
    """Each message channel builds from its config (nothing is sent); the SMTP server
    accepts a TCP connection; sendmail exists."""
    from phobos.notify.setup import message_channels, ping_notifier

    channels = message_channels(config)
    findings = []
    for name, channel in channels.items():
        if isinstance(channel, PhobosError):
            findings.append(error("notify", name, channel.message, channel.hint))
        elif name == "email":
            findings.append(_email_finding(config, probe))
        else:
            findings.append(ok("notify", name, f"configured (events: "
                               f"{', '.join(channel.events)})"))
    ping = ping_notifier(config)
    if ping is not None:
        broken = getattr(ping, "error", None)
        findings.append(error("notify", "ping", broken.message, broken.hint)
                        if isinstance(broken, PhobosError)
                        else ok("notify", "ping", "configured (not called by the doctor)"))
    if not findings:
        findings.append(warning("notify", "channels", "no e-mail, Apprise or ping is "
                                "configured: a failed job shows only on the LED and in "
                                "`phobos status`", "add [notify.email] to the config"))
    return findings


def _email_finding(config: Config, probe: bool) -> Finding:
    email = config.notify.email
    assert email is not None
    events = ", ".join(email.events)
    if email.transport == "sendmail":
        program = shutil.which(email.sendmail[0], path=search_path())
        if program is None:
            return error("notify", "email", f"{email.sendmail[0]}: not found",
                         "install an MTA (apt install dma, or postfix) or use transport "
                         "= \"smtp\"")
        return ok("notify", "email", f"through {program} to {', '.join(email.to)} "
                  f"(events: {events})")
    where = f"{email.host}:{email.port}"
    if probe:
        try:
            socket.create_connection((email.host, email.port), SMTP_PROBE_TIMEOUT).close()
        except OSError as exc:
            return error("notify", "email", f"SMTP server {where} does not answer: "
                         f"{exc.strerror or exc}", "check [notify.email] host and port, "
                         "then `phobos notify test`")
    reached = "answers" if probe else "not probed"
    return ok("notify", "email", f"SMTP {where} {reached}; to {', '.join(email.to)} "
              f"(events: {events}); `phobos notify test` sends a test message")
