"""How the doctor looks at the machine: the options the collector hands to the checks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """How to look. ``root``: the file system whose installed units are read (``/``:
    this machine). ``executable``: the phobos program the units should run (what
    ``phobos systemd install`` would write); ``probe_network``: TCP-connect to the SMTP
    server (nothing is sent); ``now``: the time the clock check judges (None: now)."""

    root: Path = Path("/")
    executable: Path | None = None
    probe_network: bool = True
    now: datetime | None = None
