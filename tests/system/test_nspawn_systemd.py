"""phobos's units in a booted systemd (Debian 12 in systemd-nspawn, phobos installed
inside from wheels): `phobos systemd install` enables a timer that really fires a job
inside its sandbox, a failing job starts phobos-failure@ with the right unit name and
the mail reaches a real SMTP server on the host, and `phobos systemd uninstall` leaves no
phobos unit behind.

Needs root, systemd-nspawn, nsenter and mmdebstrap (scripts/setup installs them); it
fails, never skips, when they are missing.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mailsink import Inbox, smtp_sink
from nspawn import PHOBOS, Container, booted, wheelhouse

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.timeout(600)]

CONFIG = "/etc/phobos/phobos.toml"
MARKS = "/srv/marks"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    """A real SMTP server on the host's 127.0.0.1: the container shares the host's
    network, so the failure unit reaches it there."""
    with smtp_sink() as sink:
        yield sink


def _config(port: int) -> str:
    # tick: every 5 s, writes only where its sandbox override allows.
    # boom: writes to /etc, which ProtectSystem=strict makes read-only: it fails.
    return textwrap.dedent(f"""\
        [jobs.tick]
        kind = "command"
        argv = ["/bin/sh", "-c", "date +%s >> {MARKS}/tick"]
        schedule = "*:*:0/5"

        [jobs.boom]
        kind = "command"
        argv = ["/bin/sh", "-c", "touch /etc/phobos-was-here"]

        [systemd.sandbox.tick]
        read_write_paths = ["{MARKS}"]

        [notify.email]
        to = ["root@localhost"]
        host = "127.0.0.1"
        port = {port}
        """)


def _wait(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _phobos(ct: Container, *args: str, check: bool = True) -> Any:
    return ct.run([str(PHOBOS), "-c", CONFIG, *args], check=check)


def _show(ct: Container, unit: str, *props: str) -> dict[str, str]:
    out = ct.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _phobos_units(ct: Container) -> list[str]:
    # Both exit 1 when nothing matches.
    loaded = ct.run(["systemctl", "list-units", "--all", "--plain", "--no-legend",
                     "phobos-*"], check=False).stdout.split()
    files = ct.run(["systemctl", "list-unit-files", "--plain", "--no-legend",
                    "phobos-*"], check=False).stdout.split()
    return [word for word in loaded + files if word.startswith("phobos-")]


def test_timer_failure_mail_and_uninstall(tmp_path: Path,
                                          inbox: tuple[Inbox, int]) -> None:
    handler, port = inbox
    wheels = wheelhouse(tmp_path)
    with booted(binds=[(wheels, "/wheels")]) as ct:
        ct.install_phobos("/wheels")
        ct.path(MARKS).mkdir(parents=True)
        ct.path(CONFIG).parent.mkdir(parents=True)
        ct.path(CONFIG).write_text(_config(port))

        installed = _phobos(ct, "systemd", "install")
        assert "phobos-job-tick.timer" in installed.stdout
        assert _show(ct, "phobos-job-tick.timer", "ActiveState")["ActiveState"] == "active"
        listed = json.loads(_phobos(ct, "systemd", "list", "--json").stdout)
        assert {f["state"] for f in listed["files"]} == {"installed"}

        _timer_fires(ct)
        _failure_is_reported(ct, handler)

        removed = _phobos(ct, "systemd", "uninstall")
        assert "phobos-job-tick.timer" in removed.stdout
        assert _phobos_units(ct) == []
        leftovers = [p for p in ct.path("/etc/systemd/system").rglob("*")
                     if p.name.startswith("phobos-")]
        assert leftovers == []


def _triggers(ct: Container) -> list[str]:
    """The triggers of job tick's runs, oldest first (all finished)."""
    _wait("job tick's runs to finish", lambda: _show(
        ct, "phobos-job-tick.service", "ActiveState")["ActiveState"] == "inactive")
    runs = json.loads(_phobos(ct, "history", "tick", "--json", "--limit", "100").stdout)["runs"]
    assert {r["outcome"] for r in runs} == {"success"}, runs
    return [r["trigger"] for r in reversed(runs)]


def _timer_fires(ct: Container) -> None:
    """The timer runs job tick (recorded as timer); `systemctl start` of its unit is
    recorded as manual, also right after timer starts (systemd 252's $TRIGGER_UNIT would
    still name the timer then), and the timer's next starts as timer again."""
    marks = ct.path(f"{MARKS}/tick")
    _wait("the timer to run job tick twice",
          lambda: marks.exists() and len(marks.read_text().split()) >= 2)
    ct.run(["systemctl", "stop", "phobos-job-tick.timer"])
    timed = _triggers(ct)
    assert timed and set(timed) == {"timer"}
    for _ in range(2):
        ct.run(["systemctl", "start", "phobos-job-tick.service"])  # returns when it is done
    assert _triggers(ct) == [*timed, "manual", "manual"], ct.journal("phobos-job-tick.service")
    ct.run(["systemctl", "start", "phobos-job-tick.timer"])
    _wait("the timer to run job tick again", lambda: len(marks.read_text().split())
          > len(timed) + 2)
    ct.run(["systemctl", "stop", "phobos-job-tick.timer"])
    ct.run(["systemctl", "start", "phobos-job-tick.service"])
    after = _triggers(ct)[len(timed) + 2:]
    assert after[-1] == "manual" and set(after[:-1]) == {"timer"}, after


def _failure_is_reported(ct: Container, handler: Inbox) -> None:
    started = ct.run(["systemctl", "start", "phobos-job-boom.service"], check=False)
    assert started.returncode != 0
    assert not ct.path("/etc/phobos-was-here").exists()  # ProtectSystem=strict held
    hook = "phobos-failure@phobos-job-boom.service.service"
    _wait("the failure unit to run", lambda: _show(ct, hook, "Result", "ActiveState",
                                                   "ExecMainStartTimestampMonotonic")
          .get("ExecMainStartTimestampMonotonic", "0") != "0"
          and _show(ct, hook, "ActiveState")["ActiveState"] in ("inactive", "failed"))
    state = _show(ct, hook, "Result", "ExecMainStatus")
    journal = ct.journal(hook)
    assert state == {"Result": "success", "ExecMainStatus": "0"}, journal
    _wait("the failure mail", lambda: bool(handler.messages), timeout=30)
    time.sleep(1)  # a second mail (runner and hook both sending) would arrive by now
    assert len(handler.messages) == 1, [m["Subject"] for m in handler.messages]
    message = handler.messages[0]
    assert "phobos-job-boom.service" in message["Subject"]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None and "phobos-job-boom.service" in body.get_content()
