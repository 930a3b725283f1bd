"""What must hold after any fault, checked on a :class:`~faultrig.Rig` (before the next
normal run): no phobos, Borg or rsync process is left, no phobos lock is held and no
Borg lock left, the drive is mounted nowhere (outside or inside the backup namespace)
and open by nothing, and ``borg check`` of the repository passes. The fault tests add
the run's record, the number of alerts and the next normal run; for a drive,
:func:`drive_copy_check` checks the copy on it."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from faultrig import Rig, env, sh

from phobos.core import locks
from phobos.tools import borg_repository as borgtool


@dataclass
class Check:
    """One invariant after one fault: held or not, and what was seen."""

    ok: bool
    detail: str = ""


def invariants(rig: Rig) -> dict[str, Check]:
    """Every invariant, by the name the table shows."""
    return {
        "no process left": no_process_left(rig),
        "no phobos lock": no_phobos_lock(rig),
        "no Borg lock": no_borg_lock(rig),
        "drive released": drive_released(rig),
        "borg check": borg_check(rig, rig.repo),
    }


# --- processes ---------------------------------------------------------------------------------


def no_process_left(rig: Rig) -> Check:
    """Nothing runs with the rig's config or its backup filesystem on its command line
    (phobos, Borg, rsync; sshd serving the host is the rig's own)."""
    left = descendants_gone(str(rig.config)) + descendants_gone(str(rig.backup))
    return Check(not left, "; ".join(left))


def descendants_gone(marker: str, timeout: float = 15.0) -> list[str]:
    """Command lines of processes still running that contain ``marker`` (after waiting up
    to ``timeout`` for them to go): an empty list is what every fault must leave."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_with(marker)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def processes_with(marker: str) -> list[str]:
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace")
        if marker in cmdline and "sshd" not in cmdline.split(" ", 1)[0]:
            found.append(f"{entry.name}: {cmdline[:160]}")
    return found


# --- locks ----------------------------------------------------------------------------------


def no_phobos_lock(rig: Rig) -> Check:
    """No live holder record and no flock on any of the rig's lock files."""
    directory = rig.run_dir / "locks"
    held = locks.holders(directory)
    inodes = {p.stat().st_ino for p in directory.glob("*.lock")} if directory.is_dir() \
        else set()
    flocked = []
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if (len(parts) > 5 and parts[1] == "FLOCK" and "->" not in parts
                and int(parts[5].rsplit(":", 1)[1]) in inodes):
            flocked.append(line)
    return Check(not held and not flocked,
                 "; ".join([h.describe() for h in held] + flocked))


def no_borg_lock(rig: Rig) -> Check:
    """Neither the repository nor its Borg cache holds a lock file."""
    places = [rig.repo, borgtool.cache_dir(rig.repo, rig.borg_base)]
    left = [str(place / name) for place in places if place is not None
            for name in borgtool.LOCK_FILES if (place / name).exists()]
    return Check(not left, ", ".join(left))


# --- the drive ------------------------------------------------------------------------------


def drive_released(rig: Rig) -> Check:
    """The drive's device is mounted neither here nor in the backup namespace, and no
    mapping (holder) sits on it."""
    rdev = os.stat(rig.drive).st_rdev
    devno = f"{os.major(rdev)}:{os.minor(rdev)}"
    seen = [f"host: {line.split()[4]}" for line in
            Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[2] == devno]
    if _is_nsfs(rig.ns_file):
        inside = sh("nsenter", f"--mount={rig.ns_file}", "cat", "/proc/self/mountinfo")
        seen += [f"namespace: {line.split()[4]}" for line in inside.stdout.splitlines()
                 if line.split()[2] == devno]
    holders = [p.name for p in Path(f"/sys/dev/block/{devno}/holders").iterdir()]
    return Check(not seen and not holders, "; ".join(seen + holders))


def _is_nsfs(path: Path) -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(path) and "nsfs" in line.split(" - ", 1)[1].split()[0]:
            return True
    return False


# --- Borg's own verdict ------------------------------------------------------------------------


def borg_check(rig: Rig, repo: Path, base: Path | None = None) -> Check:
    """``borg check`` of ``repo`` with the rig's Borg cache (or ``base``)."""
    environ = {**env(), "BORG_BASE_DIR": str(base or rig.borg_base),
               "BORG_HOST_ID": borgtool.host_id(),
               "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
               "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
    out = subprocess.run(["borg", "check", "--lock-wait", "1", str(repo)],
                         capture_output=True, text=True, env=environ, timeout=300)
    return Check(out.returncode == 0, out.stderr.strip()[:300])


def drive_copy_check(rig: Rig) -> Check:
    """``borg check`` of the copy on the drive (mounted here for the check, as it would
    be on another machine: its own Borg cache, not the NAS's)."""
    point = rig.root / "drive-check"
    point.mkdir(exist_ok=True)
    sh("mount", rig.drive, str(point))
    try:
        return borg_check(rig, point / "borg", base=rig.root / "elsewhere")
    finally:
        sh("umount", str(point))
