"""`phobos doctor --initramfs --root TREE` on fake root file systems: real files laid out
as Debian 12 (or 11) lays them out, a real dpkg status file read by the real dpkg-query,
real ssh-keygen keys converted to dropbear's key format. Good setups pass; each broken
part is named with its fix."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import venv_path
from phobos.unlock.initramfs_files import dropbear_fingerprint

REPO = Path(__file__).resolve().parents[2]

STATUS = """Package: {name}
Status: install ok installed
Priority: optional
Section: admin
Architecture: all
Version: {version}
Description: test stanza

"""


def phobos(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PATH"] = venv_path(env.get("PATH"))
    return subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "phobos", *args],
                          capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL)


def doctor_json(root: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    out = phobos("doctor", "--initramfs", "--root", str(root), "--json", *extra)
    assert out.stderr == ""
    return out.returncode, json.loads(out.stdout)


def by_check(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for finding in report["findings"]:
        found.setdefault(finding["check"], []).append(finding)
    return found


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def dropbear_host_key(directory: Path) -> str:
    """An ed25519 host key in dropbear's format, made from an ssh-keygen key (the same
    64 bytes: seed and public key); returns ssh-keygen's fingerprint of it."""
    work = directory / "keygen"
    work.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "k")],
                   check=True)
    lines = (work / "k").read_text().splitlines()
    blob = base64.b64decode("".join(lines[1:-1]))

    def read(buf: bytes, pos: int) -> tuple[bytes, int]:
        (n,) = struct.unpack(">I", buf[pos:pos + 4])
        return buf[pos + 4:pos + 4 + n], pos + 4 + n

    # openssh-key-v1: magic, cipher, kdf, kdfoptions, count, public blob, private block
    pos = len(b"openssh-key-v1\0")
    for _ in range(3):
        _, pos = read(blob, pos)
    pos += 4
    _, pos = read(blob, pos)
    private, _ = read(blob, pos)
    p = 8  # two check integers
    key_type, p = read(private, p)
    _public, p = read(private, p)
    seed_and_public, p = read(private, p)
    assert key_type == b"ssh-ed25519" and len(seed_and_public) == 64
    target = directory / "dropbear_ed25519_host_key"
    target.write_bytes(_ssh_string(b"ssh-ed25519") + _ssh_string(seed_and_public))
    target.chmod(0o600)
    shown = subprocess.run(["ssh-keygen", "-l", "-f", str(work / "k.pub")], check=True,
                           capture_output=True, text=True).stdout
    return shown.split()[1]


def admin_key(directory: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin@laptop",
                    "-f", str(directory / "admin")], check=True)
    return (directory / "admin.pub").read_text().strip()


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    path.chmod(mode)
    return path


def good_tree(root: Path, tmp: Path) -> str:
    """A complete Debian 12 remote-unlock setup; returns the host key's fingerprint."""
    write(root / "var/lib/dpkg/status",
          STATUS.format(name="dropbear-initramfs", version="2022.83-1+deb12u3")
          + STATUS.format(name="cryptsetup-initramfs", version="2:2.6.1-4~deb12u2"))
    conf = root / "etc/dropbear/initramfs"
    write(conf / "dropbear.conf", """\
        # Configuration options for the dropbear-initramfs boot scripts.
        DROPBEAR_OPTIONS="-I 180 -j -k -p 2222 -s -c cryptroot-unlock"
        """)
    write(conf / "authorized_keys", f"{admin_key(tmp)}\n", 0o600)
    fingerprint = dropbear_host_key(conf)
    write(root / "etc/initramfs-tools/initramfs.conf", """\
        MODULES=most
        BUSYBOX=auto
        IP=192.168.1.5::192.168.1.1:255.255.255.0:nas:eno1:none
        """)
    write(root / "etc/crypttab", """\
        # <target name> <source device> <key file> <options>
        nas_crypt UUID=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 none luks,discard
        """)
    write(root / "boot/initrd.img-6.1.0-28-amd64", "an initramfs\n")
    return fingerprint


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_good_debian_12_setup_passes_and_prints_the_key_to_pin(tmp_path: Path) -> None:
    root = tmp_path / "root"
    fingerprint = good_tree(root, tmp_path)
    code, report = doctor_json(root)
    assert code == 0, report
    assert report["counts"]["error"] == 0 and report["counts"]["warning"] == 0, report
    checks = by_check(report)
    assert checks["dropbear-initramfs"][0]["message"] == "installed (2022.83-1+deb12u3)"
    assert "1 key" in checks["authorized_keys"][0]["message"]
    [host_key] = checks["host key"]
    assert fingerprint in host_key["message"]
    assert f"--pin --fingerprint {fingerprint}" in host_key["fix"]
    assert checks["port"][0]["message"] == "dropbear listens on port 2222"
    assert "nothing else" in checks["forced command"][0]["message"]
    assert "static address 192.168.1.5 on eno1" in checks["network"][0]["message"]
    assert "nas_crypt" in checks["crypttab"][0]["message"]
    assert "is newer than" in checks["initramfs"][0]["message"]

    text = phobos("doctor", "--initramfs", "--root", str(root))
    assert text.returncode == 0 and "0 errors, 0 warnings" in text.stdout


def test_the_dropbear_key_parser_agrees_with_ssh_keygen(tmp_path: Path) -> None:
    fingerprint = dropbear_host_key(tmp_path)
    key = dropbear_fingerprint(tmp_path / "dropbear_ed25519_host_key")
    assert key is not None and key.fingerprint == fingerprint
    (tmp_path / "junk").write_bytes(b"\0\0")
    assert dropbear_fingerprint(tmp_path / "junk") is None
    assert dropbear_fingerprint(tmp_path / "missing") is None


def test_a_broken_setup_names_every_problem_with_its_fix(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "var/lib/dpkg/status",
          STATUS.format(name="cryptsetup-initramfs", version="2:2.6.1-4~deb12u2"))
    conf = root / "etc/dropbear/initramfs"
    write(conf / "dropbear.conf", 'DROPBEAR_OPTIONS="-p 2222 -c /bin/sh"\n')
    write(conf / "authorized_keys", "# nothing yet\nssh-dss AAAAB3 old@key\n", 0o666)
    write(root / "etc/default/grub", 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n'
          'GRUB_CMDLINE_LINUX="ip=none"\n')
    write(root / "etc/crypttab", "# <target name> <source device> <key file> <options>\n")
    initrd = write(root / "boot/initrd.img-6.1.0-28-amd64", "old\n")
    age(initrd, 3600)
    code, report = doctor_json(root)
    assert code == 1
    checks = by_check(report)
    package = checks["dropbear-initramfs"][0]
    assert package["severity"] == "error" and package["fix"] == "apt install dropbear-initramfs"
    keys = checks["authorized_keys"][0]
    assert keys["severity"] == "error" and "no usable key" in keys["message"]
    assert checks["host key"][0]["severity"] == "error"
    assert "dropbearkey -t ed25519" in checks["host key"][0]["fix"]
    command = checks["forced command"][0]
    assert command["severity"] == "warning" and "-c cryptroot-unlock" in command["fix"]
    network = checks["network"][0]
    assert network["severity"] == "error" and "ip=none" in network["message"]
    assert "GRUB_CMDLINE_LINUX" in network["message"]
    assert checks["crypttab"][0]["severity"] == "error"
    stale = checks["initramfs"][0]
    assert stale["severity"] == "warning" and stale["fix"] == "update-initramfs -u"
    assert "authorized_keys" in stale["message"]
    assert phobos("doctor", "--initramfs", "--root", str(root)).returncode == 1


def test_a_stale_initramfs_is_a_warning_that_fails_only_with_strict(tmp_path: Path) -> None:
    root = tmp_path / "root"
    good_tree(root, tmp_path)
    age(root / "boot/initrd.img-6.1.0-28-amd64", 3600)  # rebuilt before the last edits
    code, report = doctor_json(root)
    assert code == 0 and report["counts"]["warning"] == 1 and report["counts"]["error"] == 0
    assert doctor_json(root, "--strict")[0] == 1


def test_dhcp_and_kernel_parameters(tmp_path: Path) -> None:
    root = tmp_path / "root"
    good_tree(root, tmp_path)
    (root / "etc/initramfs-tools/initramfs.conf").write_text("MODULES=most\n")
    _, report = doctor_json(root)
    network = by_check(report)["network"][0]
    assert network["severity"] == "ok" and "DHCP" in network["message"]
    write(root / "proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/mapper/nas-root "
          "ip=:::::eth0:dhcp\n")
    _, report = doctor_json(root)
    assert "DHCP on eth0 (ip=:::::eth0:dhcp" in by_check(report)["network"][0]["message"]


def test_the_old_layout_is_recognised(tmp_path: Path) -> None:
    root = tmp_path / "root"
    good_tree(root, tmp_path)
    new = root / "etc/dropbear/initramfs"
    old = root / "etc/dropbear-initramfs"
    new.rename(old)
    (old / "dropbear.conf").rename(old / "config")
    code, report = doctor_json(root)
    checks = by_check(report)
    assert code == 0, report
    assert "old layout" in checks["layout"][0]["message"]
    assert str(old / "authorized_keys") in checks["authorized_keys"][0]["message"]
    assert checks["port"][0]["message"] == "dropbear listens on port 2222"


def test_keys_left_in_the_old_directory_are_pointed_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    good_tree(root, tmp_path)
    (tmp_path / "old").mkdir()
    write(root / "etc/dropbear-initramfs/authorized_keys", f"{admin_key(tmp_path / 'old')}\n")
    code, report = doctor_json(root)
    layout = by_check(report)["layout"][0]
    assert code == 0 and layout["severity"] == "warning"
    assert "this one reads only" in layout["message"]


def test_without_authorized_keys_the_hook_s_id_pub_fallback_counts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    good_tree(root, tmp_path)
    conf = root / "etc/dropbear/initramfs"
    (conf / "authorized_keys").rename(conf / "id_ed25519.pub")
    _, report = doctor_json(root)
    keys = by_check(report)["authorized_keys"][0]
    assert keys["severity"] == "ok" and "id_ed25519.pub" in keys["message"]
    (conf / "id_ed25519.pub").unlink()
    code, report = doctor_json(root)
    assert code == 1 and "nobody can log in" in by_check(report)["authorized_keys"][0][
        "message"]


def test_a_bad_root_is_a_usage_error(tmp_path: Path) -> None:
    out = phobos("doctor", "--initramfs", "--root", str(tmp_path / "nope"))
    assert out.returncode == 2 and "not an existing absolute directory" in out.stderr


@pytest.mark.parametrize("value", ['"-p 2222', "-p 2222'"])
def test_unparsable_options_are_reported(tmp_path: Path, value: str) -> None:
    root = tmp_path / "root"
    good_tree(root, tmp_path)
    (root / "etc/dropbear/initramfs/dropbear.conf").write_text(f"DROPBEAR_OPTIONS={value}\n")
    code, report = doctor_json(root)
    assert code == 1 and "cannot parse" in by_check(report)["options"][0]["message"]


def test_crypt_mappings_under_lvm_are_found_through_sysfs(tmp_path: Path) -> None:
    """A sysfs laid out as the kernel does for LVM on LUKS: dm-1 (the LV) has dm-0 (the
    LUKS mapping) as its slave, which has the partition sda3 as its slave."""
    from phobos.doctor.initramfs import crypt_mappings

    devices = tmp_path / "devices"
    for name, dev, uuid, dm_name, slave in [
            ("dm-1", "254:1", "LVM-abc", "nas-root", "dm-0"),
            ("dm-0", "254:0", "CRYPT-LUKS2-0f1e2d3c-nas_crypt", "nas_crypt", "sda3"),
            ("sda3", "8:3", None, None, None)]:
        node = devices / name
        (node / "slaves").mkdir(parents=True)
        (node / "dev").write_text(f"{dev}\n")
        if uuid is not None:
            (node / "dm").mkdir()
            (node / "dm" / "uuid").write_text(f"{uuid}\n")
            (node / "dm" / "name").write_text(f"{dm_name}\n")
        if slave is not None:
            (node / "slaves" / slave).symlink_to(devices / slave)
    sysfs = tmp_path / "dev-block"
    sysfs.mkdir()
    for name, dev in (("dm-1", "254:1"), ("dm-0", "254:0"), ("sda3", "8:3")):
        (sysfs / dev).symlink_to(devices / name)
    assert crypt_mappings("254:1", sysfs) == ["nas_crypt"]
    assert crypt_mappings("254:0", sysfs) == ["nas_crypt"]
    assert crypt_mappings("8:3", sysfs) == []
    assert crypt_mappings("9:9", sysfs) == []
