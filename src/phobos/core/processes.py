"""Processes as /proc shows them: the members of a process group."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    """A process of a process group, as /proc/PID/stat shows it."""

    pid: int
    state: str  # "Z": exited, not yet reaped
    start_ticks: int  # clock ticks after boot


def group_members(group: int) -> list[Member]:
    """Every process whose process group is ``group`` (zombies included)."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                # Field 2 (comm) may hold spaces and parentheses: split after the last ')'.
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == group:
            members.append(Member(pid=int(entry.name), state=fields[0].decode(),
                                  start_ticks=int(fields[19])))
    return members
