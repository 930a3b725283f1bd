"""`phobos daemon` on a machine without systemd: a registered drive appearing (a loop
device announced by a real, standalone systemd-udevd) starts its drive sync through
`phobos drive attached`; an unregistered one is left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Sandbox, phobos_env

UDEVD = "/lib/systemd/systemd-udevd"


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True,
                          env=phobos_env()).stdout.strip()


@pytest.fixture
def udevd() -> Iterator[None]:
    """A standalone udevd for this test only (it acts machine-wide: stopped right after)."""
    if not os.access(UDEVD, os.X_OK):
        pytest.fail(f"{UDEVD} is missing: install udev (scripts/setup does)")
    daemon = subprocess.Popen([UDEVD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield
    finally:
        daemon.terminate()
        daemon.wait(10)


def image(path: Path) -> str:
    with path.open("wb") as handle:
        handle.truncate(32 * 1024 * 1024)
    sh("mkfs.ext4", "-q", "-L", "extbackup", str(path))
    return sh("blkid", "-p", "-s", "UUID", "-o", "value", str(path))


def test_daemon_syncs_a_drive_that_appears(sandbox: Sandbox, udevd: None) -> None:
    repo = sandbox.root / "backup" / "borg"
    repo.parent.mkdir(parents=True)
    env = {**phobos_env(), "BORG_BASE_DIR": str(sandbox.root / "borg-base")}
    subprocess.run(["borg", "init", "--encryption=none", str(repo)], check=True, env=env,
                   capture_output=True)
    known = image(sandbox.root / "a.img")
    stranger = image(sandbox.root / "b.img")
    sandbox.write(f"""
        [storage]
        root = "{sandbox.root}/backup"
        holding = "{sandbox.root}/backup/holding"

        [repos.main]
        path = "{repo}"
        base_dir = "{sandbox.root}/borg-base"
        encryption = "none"

        [drives.ext-a]
        luks_uuid = "{known}"
        unlock = "none"

        [jobs.offsite]
        kind = "drive-sync"
        repo = "main"
        drives = ["ext-a"]
        """)
    daemon = subprocess.Popen(sandbox.argv("daemon"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=phobos_env())
    loops: list[str] = []
    try:
        time.sleep(1.5)  # the watcher is up
        for name in ("b.img", "a.img"):
            device = sh("losetup", "--find", "--show", str(sandbox.root / name))
            loops.append(device)
            sh("udevadm", "trigger", "--action=add", device)
        deadline = time.monotonic() + 60
        runs: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            out = sandbox.phobos("history", "--json")
            runs = json.loads(out.stdout)["runs"]
            if runs and runs[0]["outcome"] != "running":
                break
            time.sleep(0.5)
        daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        sandbox.phobos("ns", "destroy", "--force")
        for device in loops:
            subprocess.run(["losetup", "-d", device], check=False)
    assert [(r["job"], r["trigger"], r["outcome"]) for r in runs] == [
        ("offsite", "device", "success")]
    assert f"drive {known} appeared" in output
    assert stranger not in output  # never looked at beyond its UUID
    listing = json.loads(sandbox.phobos("drive", "list", "--json").stdout)
    assert listing["drives"][0]["last_sync"] is not None
