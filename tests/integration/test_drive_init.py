"""`phobos drive init` for real: a plain ("none") drive on a loop device end to end, the
LUKS part (luksFormat, luksAddKey, luksHeaderBackup, luksUUID, --test-passphrase) on an
image file, and every refusal: data on the device, mounted (also only inside the
namespace), the system disk, no confirmation, no recovery passphrase.

This host has no device-mapper, so ``cryptsetup open`` (and with it mkfs inside the LUKS
mapping) cannot work here: the LUKS test expects init to stop there with its explanation,
having done and verified everything before; the QEMU system test covers the rest.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_drive_sync import Loops, make_repo, sh, uuid_of

from conftest import Sandbox, phobos_env

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def loops(sandbox: Sandbox) -> Iterator[Loops]:
    made = Loops(sandbox.root)
    try:
        yield made
    finally:
        sandbox.phobos("ns", "destroy", "--force")
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            if line.split()[4].startswith(str(sandbox.root)):
                subprocess.run(["umount", "-l", line.split()[4]], check=False)
        made.cleanup()


def blank(sandbox: Sandbox, name: str, size: str = "64M") -> Path:
    img = sandbox.root / f"{name}.img"
    sh("truncate", "-s", size, str(img))
    return img


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cryptsetup(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["cryptsetup", *args], input=stdin, capture_output=True, text=True,
                          check=False)


def dm_available() -> bool:
    return Path("/dev/mapper/control").exists() and "device-mapper" in \
        Path("/proc/misc").read_text()


# --- plain drives, end to end ------------------------------------------------------------------


def test_init_a_plain_drive_then_sync_to_it(sandbox: Sandbox, loops: Loops) -> None:
    sandbox.write("")
    device = loops.attach(blank(sandbox, "c"))

    out = sandbox.phobos("drive", "init", device, "--name", "ext-c", "--unlock", "none",
                         "--yes")

    assert out.returncode == 0, out.stderr
    assert "will DESTROY everything on" in out.stderr
    uuid = uuid_of(device)
    assert sh("blkid", "-p", "-o", "value", "-s", "LABEL", device).stdout.strip() == "extbackup"
    snippet = out.stdout[out.stdout.index("[drives.ext-c]"):].split("\n\n")[0]
    assert f'luks_uuid = "{uuid}"' in snippet and 'unlock = "none"' in snippet
    assert "PHOBOS RECOVERY SHEET: drive ext-c" in out.stdout
    # paste the snippet, add a job: the freshly made drive takes a sync
    repo = sandbox.root / "backup" / "borg"
    make_repo(repo, sandbox.root / "borgbase", sandbox.root / "data", 1)
    sandbox.write(f"""
        [repos.main]
        path = "{repo}"
        base_dir = "{sandbox.root}/borgbase"

        [jobs.offsite]
        kind = "drive-sync"
        repo = "main"
        drives = ["ext-c"]
        """ + snippet + "\n")
    synced = sandbox.phobos("drive", "attached", "--uuid", uuid)
    assert synced.returncode == 0, synced.stderr


def test_init_refuses_data_unless_forced(sandbox: Sandbox, loops: Loops) -> None:
    sandbox.write("")
    img = blank(sandbox, "d")
    sh("mkfs.ext4", "-q", "-L", "family-photos", str(img))
    device = loops.attach(img)
    before = digest(img)

    refused = sandbox.phobos("drive", "init", device, "--name", "ext-d", "--unlock", "none",
                             "--yes")

    assert refused.returncode == 2
    assert "holds data; refusing to destroy it" in refused.stderr
    assert "LABEL=family-photos" in refused.stderr and "TYPE=ext4" in refused.stderr
    assert digest(img) == before
    forced = sandbox.phobos("drive", "init", device, "--name", "ext-d", "--unlock", "none",
                            "--yes", "--force")
    assert forced.returncode == 0, forced.stderr
    assert sh("blkid", "-p", "-o", "value", "-s", "LABEL", device).stdout.strip() == "extbackup"


def test_init_refuses_a_mounted_device(sandbox: Sandbox, loops: Loops) -> None:
    sandbox.write("")
    img = blank(sandbox, "e")
    sh("mkfs.ext4", "-q", str(img))
    device = loops.attach(img)
    point = sandbox.root / "somewhere"
    point.mkdir()
    sh("mount", device, str(point))
    try:
        out = sandbox.phobos("drive", "init", device, "--name", "ext-e", "--yes", "--force")
    finally:
        sh("umount", str(point))
    assert out.returncode == 2
    assert f"is mounted at {point}; refusing to format it" in out.stderr


def test_init_sees_mounts_hidden_in_the_namespace(sandbox: Sandbox, loops: Loops) -> None:
    sandbox.write("")
    img = blank(sandbox, "f")
    sh("mkfs.ext4", "-q", str(img))
    device = loops.attach(img)
    point = sandbox.root / "hidden"
    point.mkdir()
    assert sandbox.phobos("ns", "create").returncode == 0
    assert sandbox.phobos("ns", "enter", "mount", device, str(point)).returncode == 0

    out = sandbox.phobos("drive", "init", device, "--name", "ext-f", "--yes", "--force")

    assert out.returncode == 2
    assert f"is mounted at {point} inside the backup namespace" in out.stderr


def test_the_system_disk_is_refused_even_with_force(sandbox: Sandbox) -> None:
    from phobos.config.load import load
    from phobos.drives.devices import inspect_device
    from phobos.drives.init import refuse_unsafe
    from phobos.errors import UsageError

    sandbox.write("")
    config = load(sandbox.config)
    root = os.stat("/").st_dev
    uevent = Path(f"/sys/dev/block/{os.major(root)}:{os.minor(root)}/uevent").read_text()
    system = "/dev/" + re.findall(r"DEVNAME=(\S+)", uevent)[0]
    info = inspect_device(system)  # reads only
    with pytest.raises(UsageError, match="disk holding the running system"):
        refuse_unsafe(info, config, force=True)


def test_confirmation_is_required(sandbox: Sandbox, loops: Loops) -> None:
    sandbox.write("")
    img = blank(sandbox, "g")
    before = digest(img)
    out = sandbox.phobos("drive", "init", str(img), "--name", "ext-g", "--unlock", "none")
    assert out.returncode == 2
    assert "without confirmation" in out.stderr and "--yes" in out.stderr
    assert digest(img) == before


# --- LUKS ---------------------------------------------------------------------------------------


def test_luks_init_on_an_image_file(sandbox: Sandbox) -> None:
    sandbox.write("")
    img = blank(sandbox, "luks")
    secret = sandbox.root / "passphrase"
    secret.write_text(PASSPHRASE + "\n")

    out = sandbox.phobos("drive", "init", str(img), "--name", "ext-l", "--yes",
                         "--passphrase-file", str(secret), "--pbkdf-iterations", "1000")

    assert PASSPHRASE not in out.stdout + out.stderr
    if dm_available():  # pragma: no cover - not on this host
        assert out.returncode == 0, out.stderr
    else:
        assert out.returncode == 1
        assert "the LUKS header is written" in out.stderr
        assert "step unlock: cryptsetup failed" in out.stderr
    keyfile = sandbox.root / "keys" / "ext-l.key"
    header = sandbox.root / "keys" / "ext-l.luks-header"
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o400 and keyfile.stat().st_size == 4096
    assert stat.S_IMODE(header.stat().st_mode) == 0o400
    assert stat.S_IMODE(keyfile.parent.stat().st_mode) == 0o700
    assert cryptsetup("isLuks", str(img)).returncode == 0
    uuid = cryptsetup("luksUUID", str(img)).stdout.strip()
    assert uuid in out.stderr
    assert cryptsetup("luksUUID", str(header)).stdout.strip() == uuid  # the header backup
    assert uuid_of(img) == uuid
    dump = cryptsetup("luksDump", str(img)).stdout
    assert "Label:         \tphobos-ext-l" in dump
    assert len(re.findall(r"^\s+\d+: luks2$", dump, flags=re.MULTILINE)) == 2  # key + pass
    # the recovery slot opens it as a human would type it; the keyfile opens it too
    assert cryptsetup("open", "--test-passphrase", str(img),
                      stdin=PASSPHRASE + "\n").returncode == 0
    assert cryptsetup("open", "--test-passphrase", str(img), stdin="wrong one\n").returncode == 2
    assert cryptsetup("open", "--test-passphrase", "--key-file", str(keyfile),
                      str(img)).returncode == 0

    again = sandbox.phobos("drive", "init", str(img), "--name", "ext-l", "--yes",
                           "--passphrase-file", str(secret))
    assert again.returncode == 2 and "TYPE=crypto_LUKS" in again.stderr


def test_declining_the_recovery_passphrase_is_refused(sandbox: Sandbox) -> None:
    sandbox.write("")
    img = blank(sandbox, "h")
    before = digest(img)
    empty = sandbox.root / "empty"
    empty.write_text("")

    for extra in ([], ["--passphrase-file", str(empty)]):
        out = subprocess.run(sandbox.argv("drive", "init", str(img), "--name", "ext-h",
                                          "--yes", *extra),
                             capture_output=True, text=True, env=phobos_env(),
                             stdin=subprocess.DEVNULL, check=False)
        assert out.returncode == 2
        assert "refusing to prepare a drive without a recovery passphrase" in out.stderr
        assert "if the NAS is lost" in out.stderr
    assert digest(img) == before
    assert not (sandbox.root / "keys" / "ext-h.key").exists()
