"""docs/recovery.md, followed literally: every shell block, in order, against the sandbox
``phobos demo --dir`` leaves (hosts luv and chew pulled and archived, drive ext-a
synced and plugged in as a loop device), as a person would type them:

- the phobos part (find, restore, a whole host, from the drive, Borg by hand on the NAS)
  in one shell, with ``PHOBOS_CONFIG`` pointing at the sandbox;
- the part for a machine without phobos in a second, clean shell (no PHOBOS_CONFIG, no
  Borg settings), the drive mounted with the guide's plain-drive variant: this machine
  has no device-mapper, so the LUKS blocks run in the QEMU guest instead
  (tests/system/test_qemu_drive.py).

Only the values a reader takes from their own machine (``guide-test: values`` blocks)
are the sandbox's; everything else runs as written, with HOME in the test's directory.
The guide mounts the drive on /mnt/extbackup: the test removes that directory again if
it made it, and unmounts it if the guide did not. (Not in a private mount namespace of
the test's own: the backup namespace made from inside one cannot always be bound there
on this kernel, which refuses the nsfs bind mount now and then with EINVAL.)
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import guide
from phobos.tools.borg_repository import host_id

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]

VENV_BIN = Path(sys.executable).parent
PATH = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEMO_PASSPHRASE = "demo passphrase: correct horse battery staple"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The sandbox of a full demo day, ext-a plugged in again afterwards."""
    if os.geteuid() != 0:
        pytest.fail("the recovery guide test needs root (the demo's hosts and drives)")
    root = tmp_path_factory.mktemp("demo")
    done = subprocess.run([str(VENV_BIN / "phobos"), "demo", "--dir", str(root)],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    device = subprocess.run(["losetup", "--find", "--show", str(root / "ext-a.img")],
                            capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield root
    finally:  # the guide's restore from the drive made a backup namespace
        subprocess.run([str(VENV_BIN / "phobos"), "-c", str(root / "phobos.toml"), "ns",
                        "destroy", "--force"], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", device], check=False)


def run_guide(demo: Path, home: Path) -> subprocess.CompletedProcess[str]:
    found = guide.blocks()
    fs_uuid = subprocess.run(["blkid", "-p", "-o", "value", "-s", "UUID",
                              str(demo / "ext-a.img")], capture_output=True, text=True,
                             check=True).stdout.strip()
    nas = guide.script(guide.nas_blocks(found), {
        "REPO": str(demo / "backup" / "borg"), "BORG_BASE_DIR": str(demo / "borg-base"),
        "BORG_PASSCOMMAND": shlex.quote(f"cat {demo / 'keys' / 'borg.pass'}")})
    fresh = guide.script(guide.fresh_blocks(found, device_mapper=False), {
        "LUKS_UUID": "not-used-here", "FS_UUID": fs_uuid, "REPO_DIR": "borg"})
    (home / "nas.sh").write_text(nas)
    (home / "fresh.sh").write_text(fresh)
    (home / "pass").write_text(DEMO_PASSPHRASE + "\n")
    clean = f"env -i HOME={home} PATH={PATH} LANG=C.UTF-8"
    driver = (f"cd {home} && echo '### the NAS, with phobos' && "
              f"env HOME={home} PHOBOS_CONFIG={demo / 'phobos.toml'} PATH={PATH} "
              f"bash -euo pipefail -x {home}/nas.sh </dev/null && "
              f"echo '### a machine without phobos' && "
              f"{clean} bash -euo pipefail -x {home}/fresh.sh <{home}/pass")
    return subprocess.run(["bash", "-c", driver], capture_output=True, text=True,
                          timeout=500)


@pytest.fixture
def extbackup() -> Iterator[None]:
    """/mnt/extbackup as it was before the guide mounted the drive there."""
    point = Path("/mnt/extbackup")
    existed = point.exists()
    try:
        yield
    finally:
        if os.path.ismount(point):
            subprocess.run(["umount", "-l", str(point)], check=False)
        if not existed:
            point.rmdir()


def test_the_recovery_guide_works_when_followed(demo: Path, tmp_path: Path,
                                               extbackup: None) -> None:
    home = tmp_path / "home"
    home.mkdir()
    done = run_guide(demo, home)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert "### a machine without phobos" in done.stdout

    holding = demo / "backup" / "holding"
    original = (holding / "luv" / "etc" / "fstab").read_bytes()
    assert (home / "restore/luv/etc/fstab").read_bytes() == original  # phobos restore
    assert (home / "restore-ext-a/luv/etc/fstab").read_bytes() == original  # --from-drive
    assert (home / "restore-luv/luv/etc/hostname").read_text() == "luv\n"  # a whole host
    borg_copy = home / "restore-borg" / str(holding).lstrip("/") / "luv/etc/fstab"
    assert borg_copy.read_bytes() == original  # Borg by hand on the NAS
    found = json.loads((home / "found.json").read_text())
    assert [m["path"] for m in found["matches"]] == ["chew:/etc/hostname"]
    from_drive = list((home / "restore-drive").rglob("fstab"))  # no NAS, only the drive
    assert len(from_drive) == 1, from_drive
    relative = from_drive[0].relative_to(home / "restore-drive" / str(holding).lstrip("/"))
    assert from_drive[0].read_bytes() == (holding / relative).read_bytes()
    # Borg kept this restore's cache and settings where the guide said, not in ~/.cache.
    assert (home / "borg-restore").is_dir() and not (home / ".cache" / "borg").exists()
    restores = json.loads(subprocess.run(
        [str(VENV_BIN / "phobos"), "-c", str(demo / "phobos.toml"), "history", "restore:main",
         "--json"], capture_output=True, text=True, check=True).stdout)["runs"]
    assert restores and {r["outcome"] for r in restores} == {"success"}


def test_the_guides_borg_host_id_is_the_one_phobos_gives_borg(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Section 6 exports BORG_HOST_ID for Borg by hand: it must be phobos's own."""
    line = next(line for block in guide.nas_blocks(guide.blocks())
                for line in block.text.splitlines() if "BORG_HOST_ID=" in line)
    monkeypatch.delenv("BORG_HOST_ID", raising=False)
    shown = subprocess.run(["bash", "-c", f"{line}; echo \"$BORG_HOST_ID\""],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert shown == host_id()
