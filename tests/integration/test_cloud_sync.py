"""Cloud copies with real rclone: to rclone's local backend (an absolute path) and to its
sftp backend on a lab host (sshd in a network namespace). The copy is verified by
rclone check (a tampered copy fails the run), the stats record bytes sent, and a restore
drill from the cloud copy (rclone copy back, then Borg's check and a restore drill on
it, with Borg's cache of a fresh machine) proves the strand."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from borgbox import PASSPHRASE, BorgBox, initialized, make_tree
from remotehost import Lab

pytestmark = pytest.mark.root


def require_rclone() -> None:
    if shutil.which("rclone") is None:
        pytest.fail("rclone is missing: apt install rclone (./scripts/setup does)")


def cloud_jobs(box: BorgBox, remote: str, extra: str = "") -> str:
    return f"""\
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/src"]

        [jobs.cloud]
        kind = "cloud-sync"
        repo = "main"
        remote = "{remote}"
        rclone_config = "{box.root}/rclone.conf"
        transfers = 2
        bwlimit = "50M"
        {extra}

        [repos.restored]
        path = "{box.root}/restored"
        passphrase_file = "{box.root}/borg.pass"
        base_dir = "{box.root}/fresh-machine"

        [jobs.check-restored]
        kind = "check"
        repo = "restored"

        [jobs.drill-restored]
        kind = "drill"
        repo = "restored"
        sample = 10
        """


def repo_files(repo: Path) -> int:
    return sum(1 for p in repo.rglob("*") if p.is_file()
               and not p.relative_to(repo).parts[0].startswith("lock."))


def rclone(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rclone", *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.usefixtures("each_borg")  # with Borg 1.4 and 1.2: with-lock, check, drill
def test_cloud_copy_to_a_local_remote_is_verified_and_restores(sandbox: Any) -> None:
    require_rclone()
    box = initialized(sandbox)
    # rclone's alias backend onto a local directory; rclone names the directory in its
    # output, and the section's secret-looking value is part of that name: the run's
    # log must show it redacted.
    cloud = box.root / "cloud-s3kr1t-0815" / "phobos"
    (box.root / "rclone.conf").write_text(
        f"[offsite]\ntype = alias\nremote = {cloud.parent}\n"
        "secret_access_key = s3kr1t-0815\n")
    box.write(cloud_jobs(box, "offsite:phobos"))
    box.ok("run", "nightly")
    box.ok("run", "cloud")
    run = box.last_run("cloud")
    stats = run["stats"]
    assert stats["verified"] and stats["verified_by"] == "md5"
    assert stats["files_verified"] == repo_files(box.repo) - 1  # with-lock's commit came after
    assert stats["bytes_sent"] > 40 * 20_000 and stats["files_copied"] >= 5
    assert (cloud / "config").is_file()
    assert not (cloud / "lock.roster").exists() and not (cloud / "lock.exclusive").exists()
    log = box.log_text(run["id"])
    assert "net:offsite (write)" in log and "repo:main (read)" in log
    assert "phobos: verifying the copy with rclone check" in log
    assert "rclone sync: " in log  # what the sync sent, its progress lines gone
    assert "files verified by md5" in log
    assert "cloud-********" in log and "s3kr1t-0815" not in log
    steps = json.loads(box.ok("log", str(run["id"]), "--json").stdout)
    assert "s3kr1t-0815" not in json.dumps(steps)
    status = json.loads(box.ok("status", "--json").stdout)
    entry = next(e for e in status["jobs"] if e["job"] == "cloud")
    assert entry["kind"] == "cloud-sync" and not entry["overdue"]

    box.ok("run", "nightly")
    box.ok("run", "cloud")  # only what changed goes
    again = box.last_run("cloud")["stats"]
    assert 0 < again["bytes_sent"] < stats["bytes_sent"] / 2

    # The restore drill from the cloud copy, as on a new machine.
    copied = rclone("copy", str(cloud), str(box.root / "restored"),
                    config=box.root / "rclone.conf")
    assert copied.returncode == 0, copied.stderr
    box.ok("run", "check-restored")
    assert box.last_run("check-restored")["stats"]["pass_complete"] is True
    box.ok("run", "drill-restored")
    drill = box.last_run("drill-restored")["stats"]
    assert drill["files_checked"] == 10 and drill["mismatches"] == 0

    # A copy changed behind rclone's back (same size and time) fails the check.
    segment = max((p for p in (cloud / "data").rglob("*") if p.is_file()),
                  key=lambda p: p.stat().st_size)
    st = segment.stat()
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    os.utime(segment, ns=(st.st_atime_ns, st.st_mtime_ns))
    failed = box.phobos("run", "cloud")
    assert failed.returncode == 1
    message = box.last_run("cloud")["message"]
    assert "verification failed: the copy differs from the repository" in message


def test_cloud_sync_refuses_bad_remotes_and_missing_config(sandbox: Any) -> None:
    require_rclone()
    box = BorgBox(sandbox)
    make_tree(box.root / "src", files=2)
    box.write(cloud_jobs(box, ":s3,access_key_id=AKIA123:bucket"))
    bad = box.phobos("config", "check")
    assert bad.returncode == 2 and "connection string" in bad.stderr
    box.write(cloud_jobs(box, "b2:bucket/phobos"))
    box.ok("repo", "init", "main")
    missing = box.phobos("run", "cloud")
    assert missing.returncode == 1
    message = box.last_run("cloud")["message"]
    assert f"rclone's config file {box.root}/rclone.conf does not exist" in message
    assert "rclone config --config" in message


@pytest.fixture
def lab1(tmp_path: Path) -> Iterator[Lab]:
    with Lab(tmp_path, 1) as lab:
        yield lab


def test_cloud_copy_over_rclone_sftp_to_a_lab_host(lab1: Lab) -> None:
    require_rclone()
    host = lab1.hosts[0]
    root = lab1.root
    key = root / "rclone_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True)
    host.authorize("restrict " + key.with_suffix(".pub").read_text().strip())
    scanned = lab1.in_client("ssh-keyscan", "-t", "ed25519", host.address, check=True)
    (root / "sftp_known_hosts").write_text(scanned.stdout)
    (root / "rclone.conf").write_text(textwrap.dedent(f"""\
        [storagebox]
        type = sftp
        host = {host.address}
        user = root
        key_file = {key}
        known_hosts_file = {root}/sftp_known_hosts
        shell_type = unix
        md5sum_command = md5sum
        sha1sum_command = sha1sum
        """))
    (root / "borg.pass").write_text(PASSPHRASE + "\n")
    make_tree(root / "src", files=12)
    lab1.write_config(f"""\
        [repos.main]
        path = "{root}/backup/borg"
        passphrase_file = "{root}/borg.pass"
        base_dir = "{root}/borgbase"

        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{root}/src"]

        [jobs.cloud]
        kind = "cloud-sync"
        repo = "main"
        remote = "storagebox:{host.dir}/cloud"
        rclone_config = "{root}/rclone.conf"
        """)
    assert lab1.phobos("repo", "init", "main").returncode == 0
    assert lab1.phobos("run", "nightly").returncode == 0
    out = lab1.phobos("run", "cloud")
    assert out.returncode == 0, out.stderr
    history = json.loads(lab1.phobos("history", "cloud", "--json").stdout)["runs"][0]
    stats = history["stats"]
    assert stats["verified"] and stats["verified_by"] in ("md5", "sha1"), stats
    assert stats["bytes_sent"] > 12 * 20_000
    assert (host.dir / "cloud" / "config").is_file()
    assert not (host.dir / "cloud" / "lock.roster").exists()
    log = lab1.phobos("log", str(history["id"])).stdout
    assert "net:storagebox (write)" in log
