"""The third strand for real: loop-device ext4 "drives" (``unlock = "none"``), a real Borg
repository, real mount namespaces, the real CLI in its own processes.

Failures are real too: a drive whose filesystem the kernel refuses to mount, a drive too
small for the repository, and an rsync that copies nothing (``--dry-run``) so the
verification must catch it. Every test detaches its loop devices and drops its
namespace in teardown.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import Sandbox, phobos_env

# Borg integration: every test runs with the venv's Borg 1.4 and Debian's 1.2.
pytestmark = pytest.mark.usefixtures("each_borg")

BORG = "borg"


def sh(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True,
                          env=phobos_env(), **kwargs)  # type: ignore[call-overload]


@dataclass
class Loops:
    """Image files and the loop devices made for them; all detached in teardown."""

    directory: Path
    devices: list[str] = field(default_factory=list)

    def image(self, name: str, size: str = "64M", label: str = "extbackup") -> Path:
        img = self.directory / f"{name}.img"
        sh("truncate", "-s", size, str(img))
        sh("mkfs.ext4", "-q", "-L", label, str(img))
        return img

    def attach(self, img: Path) -> str:
        device = sh("losetup", "-f", "--show", str(img)).stdout.strip()
        self.devices.append(device)
        return device

    def detach(self, device: str) -> None:
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
        if device in self.devices:
            self.devices.remove(device)

    def cleanup(self) -> None:
        for device in list(self.devices):
            self.detach(device)


def uuid_of(path: Path | str) -> str:
    return sh("blkid", "-p", "-o", "value", "-s", "UUID", str(path)).stdout.strip()


def make_repo(repo: Path, base: Path, data: Path, megabytes: int, archive: str = "a1") -> None:
    """A Borg repository (unencrypted) holding ``megabytes`` of incompressible data."""
    env = {**phobos_env(), "BORG_BASE_DIR": str(base)}
    if not repo.exists():
        repo.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([BORG, "init", "--encryption=none", str(repo)], check=True, env=env,
                       capture_output=True)
    data.mkdir(parents=True, exist_ok=True)
    for index in range(max(1, megabytes)):
        (data / f"{archive}-{index}.bin").write_bytes(os.urandom(1 << 20))
    subprocess.run([BORG, "create", "--compression", "none", f"{repo}::{archive}", str(data)],
                   check=True, env=env, capture_output=True)


@dataclass
class Rig:
    sandbox: Sandbox
    loops: Loops

    @property
    def root(self) -> Path:
        return self.sandbox.root

    @property
    def repo(self) -> Path:
        return self.root / "backup" / "borg"

    @property
    def borg_base(self) -> Path:
        return self.root / "borgbase"

    def mountpoint(self, drive: str) -> Path:
        return self.sandbox.run_dir / "drives" / drive

    def configure(self, drives: dict[str, str], *, options: tuple[str, ...] = (),
                  extra: str = "") -> None:
        tables = "".join(f'\n[drives.{name}]\nluks_uuid = "{uuid}"\nunlock = "none"\n'
                         for name, uuid in drives.items())
        self.sandbox.write(f"""
            [storage]
            root = "{self.root}/backup"
            holding = "{self.root}/backup/holding"

            [repos.main]
            path = "{self.repo}"
            base_dir = "{self.borg_base}"
            encryption = "none"
            # Borg polls a held lock every min(60 s, lock_wait / 10), and sleeps once even
            # after removing a stale one (a killed borg's): keep that short in tests.
            lock_wait = "10s"

            [jobs.offsite]
            kind = "drive-sync"
            repo = "main"
            drives = {json.dumps(sorted(drives))}
            rsync_options = {json.dumps(list(options))}

            [jobs.writer]
            kind = "command"
            argv = ["{BORG}", "with-lock", "--lock-wait", "1", "{self.repo}", "true"]
            env = {{ BORG_BASE_DIR = "{self.borg_base}" }}
            writes = ["repo:main"]

            [notify.led]
            driver = "file"
            path = "{self.root}/led"
            """ + tables + extra)

    def led(self) -> str:
        return (self.root / "led").read_text().strip()

    def history(self) -> list[dict[str, object]]:
        out = self.sandbox.phobos("history", "--json", "--limit", "50")
        assert out.returncode == 0, out.stderr
        runs: list[dict[str, object]] = json.loads(out.stdout)["runs"]
        return runs

    def steps(self, run_id: object) -> list[dict[str, object]]:
        out = self.sandbox.phobos("log", str(run_id), "--json")
        assert out.returncode == 0, out.stderr
        steps: list[dict[str, object]] = json.loads(out.stdout)["steps"]
        return steps

    def hidden_mounts(self) -> list[str]:
        """Mount points only the backup namespace sees (none if it does not exist)."""
        out = self.sandbox.phobos("ns", "status", "--json")
        assert out.returncode == 0, out.stderr
        status = json.loads(out.stdout)
        assert not status["leaked"]
        return [m["mountpoint"] for m in status["hidden"]]

    def drive_list(self) -> dict[str, dict[str, object]]:
        out = self.sandbox.phobos("drive", "list", "--json")
        assert out.returncode == 0, out.stderr
        return {d["name"]: d for d in json.loads(out.stdout)["drives"]}

    def teardown(self) -> None:
        self.sandbox.phobos("ns", "destroy", "--force")
        for entry in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            point = entry.split()[4]
            if point.startswith(str(self.root)):
                subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        self.loops.cleanup()


@pytest.fixture
def rig(sandbox: Sandbox) -> Iterator[Rig]:
    rig = Rig(sandbox=sandbox, loops=Loops(sandbox.root))
    try:
        yield rig
    finally:
        rig.teardown()


def not_mounted_anywhere(rig: Rig, device: str) -> None:
    """Neither the host nor the backup namespace has ``device`` (or the drive) mounted."""
    rdev = os.stat(device).st_rdev
    devno = f"{os.major(rdev)}:{os.minor(rdev)}"
    host = Path("/proc/self/mountinfo").read_text().splitlines()
    assert not [line for line in host if line.split()[2] == devno]
    assert not [m for m in rig.hidden_mounts() if "/drives/" in m]
    holders = list(Path(f"/sys/dev/block/{devno}/holders").iterdir())
    assert not holders


def wait_for_process(fragment: str, timeout: float = 30) -> int:
    """PID of a process whose command line contains ``fragment``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in processes(fragment):
            return pid
        time.sleep(0.05)
    raise AssertionError(f"no process with {fragment!r} appeared")


def copying(rig: Rig) -> str:
    """What the command line of the copy to the drive contains (it writes relative to
    the drive's root: see drive_sync.plan)."""
    return f"{rig.repo}/ ./borg/"


def processes(fragment: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fragment in cmdline:
            found.append(int(entry.name))
    return found


def archives_on_copy(rig: Rig, device: str) -> list[str]:
    """Borg reads the copy (mounted read-only on the host for the check) without
    writing to it: the copy is usable on another machine as it is."""
    point = rig.root / "check"
    point.mkdir(exist_ok=True)
    sh("mount", "-o", "ro", device, str(point))
    try:
        env = {**phobos_env(), "BORG_BASE_DIR": str(rig.root / "elsewhere"),
               "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes"}
        out = subprocess.run([BORG, "--bypass-lock", "list", "--short", str(point / "borg")],
                             check=True, capture_output=True, text=True, env=env)
        assert not (point / "borg" / "lock.roster").exists()
        return out.stdout.split()
    finally:
        sh("umount", str(point))


# --- the whole flow ----------------------------------------------------------------------------


def test_plugging_a_drive_in_syncs_verifies_and_releases_it(rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 6)
    device = rig.loops.attach(rig.loops.image("a"))
    uuid = uuid_of(device)
    rig.configure({"ext-a": uuid})

    out = rig.sandbox.phobos("drive", "attached", "--uuid", uuid)

    assert out.returncode == 0, out.stderr
    assert "offsite: success" in out.stdout
    assert rig.led() == "green"  # safe to remove
    run = rig.history()[0]
    assert run["trigger"] == "device" and run["outcome"] == "success"
    names = [s["name"] for s in rig.steps(run["id"])]
    assert names == ["ns-bind", "ns-private", "ns-create", "mount", "copy-repo", "flush",
                     "umount"] or names == ["mount", "copy-repo", "flush", "umount"]
    stats = run["stats"]["drives"]["ext-a"]  # type: ignore[index]
    assert stats["bytes"] > 6 << 20 and stats["copied_bytes"] == stats["bytes"]
    not_mounted_anywhere(rig, device)
    assert archives_on_copy(rig, device) == ["a1"]
    listed = rig.drive_list()["ext-a"]
    assert listed["attached"] is True and listed["last_sync"] is not None
    assert listed["overdue"] is False


def test_unknown_drive_is_ignored_and_never_touched(rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 1)
    known = rig.loops.image("a")
    stranger = rig.loops.image("stranger")
    rig.configure({"ext-a": uuid_of(known)})
    device = rig.loops.attach(stranger)
    before = hashlib.sha256(stranger.read_bytes()).hexdigest()

    out = rig.sandbox.phobos("drive", "attached", "--uuid", uuid_of(device))

    assert out.returncode == 0, out.stderr
    assert "ignoring device with UUID" in out.stderr
    assert rig.history() == []
    assert hashlib.sha256(stranger.read_bytes()).hexdigest() == before
    events = json.loads((rig.sandbox.state / "drives.json").read_text())["events"]
    assert events[-1]["event"] == "ignored" and events[-1]["drive"] is None


def test_job_without_its_drive_says_so(rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 1)
    rig.configure({"ext-a": uuid_of(rig.loops.image("a"))})  # never attached

    out = rig.sandbox.phobos("run", "offsite", "--json")

    assert out.returncode == 3  # skipped: nothing to do is not a failure (no red LED)
    report = json.loads(out.stdout)
    assert report["outcome"] == "skipped"
    assert "none of this job's drives (ext-a) is plugged in" in report["message"]


# --- failures at each step leave nothing mounted ---------------------------------------------


def failed_run(rig: Rig, uuid: str) -> dict[str, object]:
    out = rig.sandbox.phobos("drive", "attached", "--uuid", uuid)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "cleaning up drive ext-a after the failure" in out.stderr
    assert rig.led() == "red"
    return rig.history()[0]


def test_failure_at_mount(rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 1)
    img = rig.loops.image("a")
    # A feature bit the kernel does not know: blkid still sees ext4, mount refuses it.
    sh("debugfs", "-w", "-R", "ssv feature_incompat 0x80000", str(img))
    device = rig.loops.attach(img)
    rig.configure({"ext-a": uuid_of(device)})

    run = failed_run(rig, uuid_of(device))

    assert str(run["message"]).startswith("step mount: mount failed")
    not_mounted_anywhere(rig, device)


def test_failure_at_copy(rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 24)
    device = rig.loops.attach(rig.loops.image("a", size="16M"))  # too small
    rig.configure({"ext-a": uuid_of(device)})

    run = failed_run(rig, uuid_of(device))

    assert str(run["message"]).startswith("step copy-repo: borg failed")
    assert "No space left on device" in str(run["message"])
    assert rig.drive_list()["ext-a"]["last_sync"] is None
    not_mounted_anywhere(rig, device)


def test_failure_at_verify(rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 1)
    device = rig.loops.attach(rig.loops.image("a"))
    # rsync lists everything but copies nothing: only the verification can notice.
    rig.configure({"ext-a": uuid_of(device)}, options=("--dry-run",))

    run = failed_run(rig, uuid_of(device))

    assert "verify: the copy of the repo main" in str(run["message"])
    assert "missing on the drive" in str(run["message"])
    assert rig.drive_list()["ext-a"]["last_sync"] is None
    not_mounted_anywhere(rig, device)


def test_sigkill_mid_copy_then_release_leaves_nothing_mounted(rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 12)
    device = rig.loops.attach(rig.loops.image("a"))
    uuid = uuid_of(device)
    rig.configure({"ext-a": uuid}, options=("--bwlimit=2000",))  # ~6 s of copying
    sync = rig.sandbox.start("drive", "attached", "--uuid", uuid)
    try:
        wait_for_process(copying(rig))
        time.sleep(0.5)
        sync.send_signal(signal.SIGKILL)
        sync.communicate(timeout=30)
        assert rig.hidden_mounts() == [str(rig.mountpoint("ext-a"))]  # left behind

        out = rig.sandbox.phobos("drive", "release", "ext-a")
    finally:
        if sync.poll() is None:
            sync.kill()
            sync.communicate()

    assert out.returncode == 0, out.stderr
    assert f"unmounted {rig.mountpoint('ext-a')}" in out.stdout
    assert processes(copying(rig)) == []
    not_mounted_anywhere(rig, device)
    assert rig.history()[0]["outcome"] == "interrupted"
    # The next plug-in works as if nothing happened: the killed borg's lock is stale and
    # Borg removes it (after one poll interval, see Rig.configure).
    rig.configure({"ext-a": uuid})
    again = rig.sandbox.phobos("drive", "attached", "--uuid", uuid)
    assert again.returncode == 0, again.stderr
    assert archives_on_copy(rig, device) == ["a1"]


def test_release_after_a_kill_works_with_a_damaged_history(rig: Rig) -> None:
    """systemd's ExecStopPost= release must free the drive even when the history (where
    the dead run's leftovers are found) cannot be opened."""
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 12)
    device = rig.loops.attach(rig.loops.image("a"))
    uuid = uuid_of(device)
    rig.configure({"ext-a": uuid}, options=("--bwlimit=2000",))
    sync = rig.sandbox.start("drive", "attached", "--uuid", uuid)
    try:
        wait_for_process(copying(rig))
        sync.send_signal(signal.SIGKILL)
        sync.communicate(timeout=30)
        (rig.sandbox.state / "history.sqlite").write_bytes(b"garbage " * 64)
        out = rig.sandbox.phobos("drive", "release", "ext-a")
    finally:
        if sync.poll() is None:
            sync.kill()
            sync.communicate()

    assert out.returncode == 0, out.stderr
    assert "leftovers of dead runs not looked for: the history database" in out.stderr
    assert f"unmounted {rig.mountpoint('ext-a')}" in out.stdout
    assert processes(copying(rig)) == []
    not_mounted_anywhere(rig, device)


def test_sigterm_mid_copy_releases_the_drive_by_itself(rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 12)
    device = rig.loops.attach(rig.loops.image("a"))
    rig.configure({"ext-a": uuid_of(device)}, options=("--bwlimit=2000",))
    sync = rig.sandbox.start("drive", "attached", "--uuid", uuid_of(device))
    wait_for_process(copying(rig))
    sync.send_signal(signal.SIGTERM)  # what systemd sends on `systemctl stop`
    _, err = sync.communicate(timeout=60)

    assert sync.returncode == 4, err
    assert "cleaning up drive ext-a after the failure" in err
    run = rig.history()[0]
    assert run["outcome"] == "interrupted" and run["message"] == "stopped by SIGTERM"
    assert rig.led() == "red"
    assert processes(copying(rig)) == []
    not_mounted_anywhere(rig, device)


# A drive pulled out mid-copy: rsync fails first (the device is gone), and systemd's
# SIGTERM (the unit is bound to the device) arrives a moment later, in the cleanup. This
# phobos sends itself that SIGTERM as the cleanup after the failed copy begins.
SIGTERM_AT_THE_CLEANUP = """
import os, signal, sys
from phobos.__main__ import main
from phobos.jobs import drive_sync
releases = []
def release(*args, **kwargs):
    releases.append(args)
    if len(releases) == 2:  # the first looks for an earlier session's leftovers
        os.kill(os.getpid(), signal.SIGTERM)
    return real(*args, **kwargs)
real, drive_sync.release = drive_sync.release, release
sys.exit(main(sys.argv[1:]))
"""


def test_a_sigterm_during_the_cleanup_after_a_failure_does_not_cut_it_short(
        rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 24)
    device = rig.loops.attach(rig.loops.image("a", size="16M"))  # too small: the copy fails
    uuid = uuid_of(device)
    rig.configure({"ext-a": uuid})
    argv = [sys.executable, "-c", SIGTERM_AT_THE_CLEANUP, "-c", str(rig.sandbox.config),
            "drive", "attached", "--uuid", uuid]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=phobos_env())

    assert out.returncode == 1, out.stderr
    assert "cleaning up drive ext-a after the failure" in out.stderr
    assert f"unmounted {rig.mountpoint('ext-a')}" in out.stderr, out.stderr
    run = rig.history()[0]
    assert run["outcome"] == "failed", run  # what went wrong first: the copy
    assert str(run["message"]).startswith("step copy-repo: borg failed"), run
    not_mounted_anywhere(rig, device)


def test_release_refuses_while_a_sync_holds_the_drive(rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 6)
    device = rig.loops.attach(rig.loops.image("a"))
    rig.configure({"ext-a": uuid_of(device)}, options=("--bwlimit=3000",))
    sync = rig.sandbox.start("run", "offsite")
    try:
        wait_for_process(copying(rig))
        out = rig.sandbox.phobos("drive", "release", "ext-a")
        assert out.returncode == 3
        assert "drive:ext-a is busy: held by job offsite" in out.stderr
    finally:
        sync.communicate(timeout=60)
    assert sync.returncode == 0


def test_a_repo_writer_started_during_a_sync_waits_for_it(rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 6)
    device = rig.loops.attach(rig.loops.image("a"))
    rig.configure({"ext-a": uuid_of(device)}, options=("--bwlimit=3000",))  # ~2 s copy
    sync = rig.sandbox.start("drive", "attached", "--uuid", uuid_of(device))
    try:
        wait_for_process(copying(rig))
        writer = rig.sandbox.phobos("run", "writer")
    finally:
        sync.communicate(timeout=60)

    assert sync.returncode == 0
    assert writer.returncode == 0, writer.stderr
    assert "waiting for repo:main, held by job offsite" in writer.stderr
    runs = {r["job"]: r for r in rig.history()}
    assert runs["writer"]["locked"] >= runs["offsite"]["ended"]  # type: ignore[operator]


# --- rotation --------------------------------------------------------------------------------


def test_rotation_across_several_syncs(rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 4)
    img_a, img_b = rig.loops.image("a"), rig.loops.image("b")
    uuid_a, uuid_b = uuid_of(img_a), uuid_of(img_b)
    rig.configure({"ext-a": uuid_a, "ext-b": uuid_b})

    def plug_and_sync(img: Path, uuid: str) -> str:
        device = rig.loops.attach(img)
        out = rig.sandbox.phobos("drive", "attached", "--uuid", uuid)
        assert out.returncode == 0, out.stderr
        return device

    dev_a = plug_and_sync(img_a, uuid_a)
    listed = rig.drive_list()
    assert listed["ext-a"]["attached"] and not listed["ext-b"]["attached"]
    assert listed["ext-b"]["due_next"] and listed["ext-b"]["last_sync"] is None
    rig.loops.detach(dev_a)

    dev_b = plug_and_sync(img_b, uuid_b)
    listed = rig.drive_list()
    assert listed["ext-a"]["due_next"] and not listed["ext-b"]["due_next"], listed
    rig.loops.detach(dev_b)

    make_repo(rig.repo, rig.borg_base, rig.root / "data2", 1, archive="a2")
    plug_and_sync(img_a, uuid_a)
    listed = rig.drive_list()
    assert listed["ext-b"]["due_next"]
    assert listed["ext-a"]["last_sync"] > listed["ext-b"]["last_sync"]  # type: ignore[operator]
    syncs = json.loads((rig.sandbox.state / "drives.json").read_text())["drives"]["ext-a"]
    assert len(syncs["syncs"]) == 2
    # the second sync of ext-a copied only what changed
    assert syncs["syncs"][1]["copied_bytes"] < syncs["syncs"][1]["bytes"] / 3

    text = rig.sandbox.phobos("drive", "list").stdout
    assert "ext-b" in text and "due next" in text
    overdue = rig.sandbox.phobos("drive", "list", "--json")
    assert not any(d["overdue"] for d in json.loads(overdue.stdout)["drives"])


def test_plugging_one_drive_in_syncs_that_drive_only(rig: Rig) -> None:
    """Both drives of the pair are in (the twin was left plugged in): the one that
    appeared is synced, the other is not touched. `run --drive` does the same by hand."""
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 1)
    img_a, img_b = rig.loops.image("a"), rig.loops.image("b")
    rig.configure({"ext-a": uuid_of(img_a), "ext-b": uuid_of(img_b)})
    rig.loops.attach(img_a)
    rig.loops.attach(img_b)
    before_b = hashlib.sha256(img_b.read_bytes()).hexdigest()

    out = rig.sandbox.phobos("drive", "attached", "--uuid", uuid_of(img_a))

    assert out.returncode == 0, out.stderr
    run = rig.history()[0]
    assert list(run["stats"]["drives"]) == ["ext-a"]  # type: ignore[index]
    assert "drive ext-b" not in rig.sandbox.phobos("log", str(run["id"])).stdout
    assert hashlib.sha256(img_b.read_bytes()).hexdigest() == before_b
    listed = rig.drive_list()
    assert listed["ext-a"]["last_sync"] is not None and listed["ext-b"]["last_sync"] is None

    by_hand = rig.sandbox.phobos("run", "offsite", "--drive", "ext-b", "--json")
    assert by_hand.returncode == 0, by_hand.stderr
    run = rig.history()[0]
    assert list(run["stats"]["drives"]) == ["ext-b"]  # type: ignore[index]
    assert run["trigger"] == "manual"
    for argv, message in ((("offsite", "--drive", "ext-c"), "drive ext-c is not one of job "
                           "offsite's drives (ext-a, ext-b)"),
                          (("writer", "--drive", "ext-a"), "job writer is a command job")):
        wrong = rig.sandbox.phobos("run", *argv)
        assert wrong.returncode == 2 and message in wrong.stderr, wrong.stderr
    assert len(rig.history()) == 2  # nothing was run or recorded for them


def test_overdue_after_max_age(rig: Rig) -> None:
    from phobos.config.load import load
    from phobos.drives.rotation import overdue_drives

    make_repo(rig.repo, rig.borg_base, rig.root / "data", 1)
    device = rig.loops.attach(rig.loops.image("a"))
    rig.configure({"ext-a": uuid_of(device), "ext-b": uuid_of(rig.loops.image("b"))})
    assert rig.sandbox.phobos("drive", "attached", "--uuid", uuid_of(device)).returncode == 0
    config = load(rig.sandbox.config)

    assert [d.name for d in overdue_drives(config)] == ["ext-b"]  # never synced
    later = time.time() + 36 * 86400
    assert [d.name for d in overdue_drives(config, now=later)] == ["ext-a", "ext-b"]


# --- mount, eject, sheet ------------------------------------------------------------------------


def test_mount_read_only_for_restores_then_eject(rig: Rig) -> None:
    make_repo(rig.repo, rig.borg_base, rig.root / "data", 1)
    device = rig.loops.attach(rig.loops.image("a"))
    rig.configure({"ext-a": uuid_of(device)})
    assert rig.sandbox.phobos("drive", "attached", "--uuid", uuid_of(device)).returncode == 0

    out = rig.sandbox.phobos("drive", "mount", "ext-a")
    assert out.returncode == 0, out.stderr
    point = rig.mountpoint("ext-a")
    assert rig.hidden_mounts() == [str(point)]
    assert not (point / "borg").exists()  # invisible outside the namespace
    inside = rig.sandbox.phobos("ns", "enter", "touch", str(point / "borg" / "x"))
    assert inside.returncode != 0 and "Read-only file system" in inside.stderr

    ejected = rig.sandbox.phobos("drive", "eject", "ext-a")
    assert ejected.returncode == 0, ejected.stderr
    assert "safe to remove" in ejected.stdout
    not_mounted_anywhere(rig, device)


def test_recovery_sheet(rig: Rig) -> None:
    rig.configure({"ext-a": "0b3c1a7e-0000-4000-8000-000000000001"})
    out = rig.sandbox.phobos("drive", "sheet", "ext-a")
    assert out.returncode == 0, out.stderr
    assert "0b3c1a7e-0000-4000-8000-000000000001" in out.stdout
    assert "/borg: Borg repository 'main'" in out.stdout
    assert "mount -o ro -U 0b3c1a7e-0000-4000-8000-000000000001 /mnt/extbackup" in out.stdout
    assert "REPO=/mnt/extbackup/borg" in out.stdout
