"""Doctor check area ``clock``: the time is plausible and NTP keeps it right (schedules,
retention and archive names depend on it)."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from phobos.core import proc
from phobos.doctor.findings import Finding, error, ok, warning

MIN_YEAR = 2024


def clock_findings(now: datetime | None = None) -> list[Finding]:
    """The year is plausible and, where systemd can say, NTP has synchronized."""
    now = now or datetime.now().astimezone()
    if now.year < MIN_YEAR:
        return [error("clock", "time", f"the clock says {now:%Y-%m-%d %H:%M}: schedules, "
                      "retention and archive names would be wrong",
                      "set the time and enable NTP (apt install systemd-timesyncd or "
                      "chrony)")]
    shown = f"{now:%Y-%m-%d %H:%M %Z}"
    if not Path("/run/systemd/system").is_dir() or shutil.which("timedatectl") is None:
        return [ok("clock", "time", f"{shown}; NTP synchronization not checked (needs "
                   "systemd's timedatectl)")]
    result = proc.run(("timedatectl", "show", "-p", "NTPSynchronized", "--value"),
                      capture=True, check=False, timeout=30)
    answer = result.stdout.strip()
    if answer == "yes":
        return [ok("clock", "time", f"{shown}, synchronized by NTP")]
    if answer == "no":
        return [warning("clock", "time", f"{shown}, but NOT synchronized by NTP",
                        "timedatectl set-ntp true (and check the NTP service)")]
    return [ok("clock", "time", f"{shown}; NTP state unknown (timedatectl exit "
               f"{result.returncode})")]
