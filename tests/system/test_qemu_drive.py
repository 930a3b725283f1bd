"""The third strand on a real kernel: a QEMU guest (Debian 12, its own kernel with
device-mapper, udev and USB hotplug) running the installed phobos and the units that
`phobos systemd install` generates. Drives are image files on the host, plugged into the
guest as USB sticks through QMP. As in the original setup, the backup filesystem (a loop device in
the guest) is mounted only inside the backup namespace, so the archive and pull units join
it too.

One guest (the NAS) runs the tests in order, each building on the one before:

1. plugging a registered LUKS drive starts its unit by itself: unlocked with the keyfile,
   mounted only inside the backup namespace, the repository copied under
   `borg with-lock` and verified, unmounted, locked, LED green, the sync in history;
2. a second sync copies only what changed, and a scratch copy of the drive's repository
   passes `borg check`;
3. pulling the drive out in the middle of a copy fails the job cleanly (no mapping, no
   mount, LED red), the failure unit runs and its mail reaches an SMTP server on the
   host; the next plug syncs again;
4. an unknown LUKS drive starts nothing and is logged as ignored; a registered drive with
   the wrong keyfile fails with a clear message;
5. the nightly timers fire a pull (over SSH to the guest's own sshd) and an archive, and
   an archive started while a drive sync runs waits for it;
6. then a second, fresh guest without phobos restores a file from the drive with nothing
   but the passphrases and, once, docs/recovery.md's commands for such a machine, once
   the printed recovery sheet's (the same commands, the drive's values filled in).

Needs root, qemu-system-x86_64, mmdebstrap and cryptsetup (scripts/setup installs them);
fails, never skips, when they are missing. The guest image is cached in
/var/cache/phobos-test ($PHOBOS_TEST_CACHE); `[qemu] ...` lines say what each step took.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import qemu
from mailsink import Inbox, smtp_sink
from qemu import PHOBOS, Completed, Guest, step

import guide

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.timeout(900)]

CONFIG = "/etc/phobos/phobos.toml"
KEYS = "/etc/phobos/keys"
LED = "/var/lib/phobos/led"
NS = "/run/phobos/ns/mnt"
MOUNTPOINT = "/run/phobos/drives/{}"
BORG_PASS = "correct horse battery staple"
RECOVERY_PASS = "recovery passphrase for ext-a"
DRIVE_A = "ext-a"
DRIVE_B = "ext-b"
UNKNOWN = "stranger"
STORAGE_IMAGE = "/var/lib/phobos-storage.img"
STORAGE_DEVICE = "/dev/loop0"
SLOW = 384 * 1024  # bytes/s: a copy onto a throttled drive lasts long enough to watch
# bytes/s: a copy that must outlast starting another unit in the guest, which takes many
# seconds under TCG on a busy host (the test lifts the throttle once it saw the wait)
SLOWER = 96 * 1024


# --- the SMTP sink on the host -------------------------------------------------------------


# --- the NAS guest ----------------------------------------------------------------------------


@dataclass
class Nas:
    """The booted guest with phobos installed, and what the tests learn on the way."""

    guest: Guest
    inbox: Inbox
    images: dict[str, Path]
    uuids: dict[str, str] = field(default_factory=dict)
    sheet: str = ""
    restore_file: str = ""
    restore_sha256: str = ""
    drive_files: dict[str, tuple[int, int]] = field(default_factory=dict)

    def phobos(self, *args: str, check: bool = True, timeout: float = 300) -> Completed:
        return self.guest.run([PHOBOS, "-c", CONFIG, *args], check=check, timeout=timeout)

    def runs(self, job: str) -> list[dict[str, Any]]:
        """The job's runs, newest first."""
        out = self.phobos("history", job, "--json", "--limit", "50").stdout
        return list(json.loads(out)["runs"])

    def log(self, run_id: int) -> list[str]:
        out = self.phobos("log", str(run_id), "--json").stdout
        return [entry["line"] for entry in json.loads(out)["log"]]

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.guest.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)],
                             check=False).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def invocation(self, unit: str) -> str:
        return self.show(unit, "InvocationID").get("InvocationID", "")

    def wait_unit(self, unit: str, before: str, timeout: float = 240) -> dict[str, str]:
        """Wait until ``unit`` has been started anew (its invocation id is no longer
        ``before``) and has finished, ExecStopPost= included."""
        props = ("InvocationID", "ActiveState", "Result", "ExecMainStatus")
        state: dict[str, str] = {}

        def done() -> bool:
            state.update(self.show(unit, *props))
            return (state.get("InvocationID", "") not in ("", before)
                    and state.get("ActiveState") in ("inactive", "failed"))

        try:
            waited = self.guest.wait_for(f"{unit} to run", done, timeout=timeout, pause=1.0)
        except qemu.SystemTestError as exc:
            raise AssertionError(f"{exc} ({state}):\n{self.diagnosis(unit)}") from None
        qemu.say(f"[qemu] {unit} ran and finished ({state.get('Result')}) within "
                 f"{waited:.1f} s")
        return state

    def diagnosis(self, unit: str) -> str:
        """What a stuck or failed unit was doing: its journal, its processes, the latest
        drive sync's log and the locks."""
        ps = self.guest.run(["ps", "-eo", "pid,ppid,stat,etime,wchan:24,args"],
                            check=False).stdout
        try:  # phobos itself may be what hangs
            runs = self.runs("offsite") if "drive" in unit else []
            log = "\n".join(self.log(runs[0]["id"])[-40:]) if runs else ""
            locks = self.phobos("locks", check=False, timeout=60).output
        except qemu.SystemTestError as exc:
            log = locks = f"(phobos did not answer: {exc})"
        kernel = self.guest.run(["dmesg"], check=False).stdout.splitlines()[-40:]
        return (f"--- journal\n{self.journal(unit)[-4000:]}\n--- ps\n{ps}\n"
                f"--- last sync's log\n{log}\n--- phobos locks\n{locks}\n"
                "--- kernel\n" + "\n".join(kernel))

    def start(self, unit: str) -> None:
        """``systemctl start`` (waits for a oneshot unit); a failure shows its journal."""
        done = self.guest.run(["systemctl", "start", unit], check=False, timeout=300)
        assert done.returncode == 0, done.output + self.journal(unit)[-4000:]

    def journal(self, unit: str) -> str:
        return self.guest.run(["journalctl", "--no-pager", "-o", "cat", "-u", unit],
                              check=False).stdout

    def led(self) -> str:
        return self.guest.read(LED).strip()

    def mounts(self, drive: str) -> dict[str, Any]:
        """Whether the drive is mounted in PID 1's mount table and inside the backup
        namespace, which mappings exist, whether Borg's lock is held and rsync copies
        onto the drive, and the state of the drive's unit: one cheap look."""
        point = MOUNTPOINT.format(drive)
        # rsync first: once it is seen running, the lock and mounts checked after it
        # must be there (checked before it, they could predate the copy's start). The copy
        # runs in the drive's root and names its target relative to it, so rsync is found
        # by its working directory, not its command line.
        script = textwrap.dedent(f"""\
            for pid in $(pgrep -x rsync); do
                case "$(readlink /proc/$pid/cwd)" in {point}|{point}/*) echo rsync; break;; esac
            done
            grep -q ' {point} ' /proc/1/mountinfo && echo pid1
            [ -e {NS} ] && nsenter --mount={NS} grep -q ' {point} ' /proc/self/mountinfo \\
                && echo ns
            nsenter --mount={NS} test -e /backup/borg/lock.exclusive && echo borg-lock
            grep -q ' /backup ' /proc/1/mountinfo && echo storage-pid1
            nsenter --mount={NS} grep -q ' /backup ' /proc/self/mountinfo && echo storage-ns
            ls /dev/mapper | sed 's/^/mapper:/'
            systemctl show {drive_unit(drive)} -p InvocationID -p ActiveState -p Result \\
                | sed 's/^/unit:/'
            """)
        words = self.guest.sh(script).stdout.split()
        return {"pid1": "pid1" in words, "ns": "ns" in words, "borg_lock": "borg-lock" in words,
                "rsync": "rsync" in words, "storage_pid1": "storage-pid1" in words,
                "storage_ns": "storage-ns" in words,
                "mappings": [w.removeprefix("mapper:") for w in words
                             if w.startswith("mapper:") and w != "mapper:control"],
                "unit": dict(w.removeprefix("unit:").split("=", 1) for w in words
                             if w.startswith("unit:"))}

    def plug(self, drive: str, *, slow: bool = False, rate: int = SLOW) -> None:
        self.guest.plug(drive, self.images[drive], bytes_per_second=rate if slow else None)

    def replug(self, drive: str, *, slow: bool = False, rate: int = SLOW) -> None:
        if drive in self.guest.plugged:
            self.guest.unplug(drive)
        self.plug(drive, slow=slow, rate=rate)

    def device_of(self, drive: str) -> str:
        """The guest's block device for a plugged drive (by its USB serial number)."""
        found = self.guest.sh(f"ls /dev/disk/by-id/usb-*_{drive}-0:0").stdout.split()
        return self.guest.run(["readlink", "-f", found[0]]).stdout.strip()


def drive_unit(drive: str) -> str:
    return f"phobos-drive-{drive}.service"


def failure_unit(unit: str) -> str:
    return f"phobos-failure@{unit}.service"


def config_text(smtp: bool = True, drives: dict[str, str] | None = None,
                schedules: dict[str, str] | None = None) -> str:
    """The NAS's config. Without ``drives`` (before the first drive is prepared) there is
    no drive-sync job: it must name at least one drive."""
    schedules = schedules or {}

    def schedule(job: str) -> str:
        return f'schedule = "{schedules[job]}"\n' if job in schedules else ""

    text = textwrap.dedent(f"""\
        [storage]
        root = "/backup"
        holding = "/backup/holding"
        device = "{STORAGE_DEVICE}"

        [repos.main]
        path = "/backup/borg"
        passphrase_file = "/etc/phobos/borg.pass"

        [hosts.client]
        address = "127.0.0.1"
        paths = ["/srv/client"]
        rrsync_root = "/"

        [jobs.pull-client]
        kind = "pull"
        host = "client"
        """) + schedule("pull-client") + textwrap.dedent("""
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["/srv/data", "/backup/holding"]
        busy_timeout = "10m"
        """) + schedule("nightly") + textwrap.dedent(f"""
        [notify.led]
        driver = "file"
        path = "{LED}"

        [systemd]
        executable = "{PHOBOS}"
        """)
    if smtp:
        text += textwrap.dedent(f"""
            [notify.email]
            to = ["root@localhost"]
            host = "{qemu.MAIL_IP}"
            port = {qemu.MAIL_PORT}
            """)
    if drives:
        text += textwrap.dedent(f"""
            [jobs.offsite]
            kind = "drive-sync"
            repo = "main"
            drives = {json.dumps(sorted(drives))}
            """)
        for name, luks in sorted(drives.items()):
            text += f'\n[drives.{name}]\nluks_uuid = "{luks}"\n'
    return text


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, int]]:
    """An SMTP server on the host's 127.0.0.1; the guest reaches it through QEMU's
    guestfwd (and nothing else)."""
    with smtp_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
        ) -> Iterator[dict[str, Any]]:
    """On the host: the guest image (cached), phobos for the guest, the drive images."""
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        def to_terminal(line: str) -> None:
            with capture.global_and_fixture_disabled():
                reporter.ensure_newline()
                reporter.write_line(line)
        qemu.say = to_terminal
    directory = tmp_path_factory.mktemp("qemu")
    share = directory / "share.img"
    images = {name: directory / f"{name}.img" for name in (DRIVE_A, DRIVE_B, UNKNOWN)}
    uuids = {DRIVE_B: str(uuid.uuid4()), UNKNOWN: str(uuid.uuid4())}
    try:
        with step("guest image (cached or built)"):
            image = qemu.guest_image()
        with step("phobos for the guest (wheels, share disk)"):
            qemu.share_image(qemu.phobos_tree(directory / "phobos"), share)
        qemu.sh("truncate", "-s", "128M", images[DRIVE_A])  # `phobos drive init` in the guest
        with step("LUKS drive images for ext-b and the stranger"):
            for name in (DRIVE_B, UNKNOWN):
                key = directory / f"{name}.key"
                key.write_bytes(uuid.uuid4().bytes * 16)
                qemu.luks_drive(images[name], key, uuids[name])
        yield {"image": image, "share": share, "images": images, "uuids": uuids,
               "logs": directory / "logs"}
    finally:
        qemu.say = qemu._print
        # Only the guests' logs stay (in pytest's temporary directory); no images.
        for path in [share, *images.values(), *directory.glob("*.key")]:
            path.unlink(missing_ok=True)
        shutil.rmtree(directory / "phobos", ignore_errors=True)


@pytest.fixture(scope="module")
def nas(lab: dict[str, Any], inbox: tuple[Inbox, int]) -> Iterator[Nas]:
    handler, port = inbox
    with qemu.booted(lab["image"], share=lab["share"], smtp_port=port, name="nas",
                     keep_logs=lab["logs"]) as guest:
        nas = Nas(guest=guest, inbox=handler, images=lab["images"], uuids=dict(lab["uuids"]))
        with step("set up the NAS (repo, first archive)"):
            _set_up(nas)
        with step("phobos drive init ext-a (in the guest)"):
            _init_drive_a(nas)
        with step("phobos systemd install"):
            guest.write(CONFIG, config_text(drives=_registered(nas)))
            # ext-b is registered, but its keyfile here is not the one that opens it.
            guest.write(f"{KEYS}/{DRIVE_B}.key", uuid.uuid4().bytes * 16, 0o400)
            installed = nas.phobos("systemd", "install")
            assert drive_unit(DRIVE_A) in installed.stdout
        yield nas


def _registered(nas: Nas) -> dict[str, str]:
    return {DRIVE_A: nas.uuids[DRIVE_A], DRIVE_B: nas.uuids[DRIVE_B]}


def _set_up(nas: Nas) -> None:
    guest = nas.guest
    # The backup filesystem, hidden in the backup namespace as in the original setup. Borg wants
    # room for a whole segment plus its indexes (about 550 MB) before it commits.
    guest.sh(f"truncate -s 1G {STORAGE_IMAGE} && mkfs.ext4 -q {STORAGE_IMAGE} && "
             f"losetup {STORAGE_DEVICE} {STORAGE_IMAGE} && mkdir -p /backup")
    guest.write(CONFIG, config_text())
    guest.write("/etc/phobos/borg.pass", BORG_PASS + "\n", 0o400)
    nas.phobos("ns", "create")
    nas.phobos("ns", "enter", "mkdir", "-p", "/backup/holding")
    guest.sh("mkdir -p /srv/data/docs /srv/client && "
             "head -c 3M /dev/urandom > /srv/data/docs/photos.bin && "
             "echo 'the letter to keep' > /srv/data/docs/letter.txt && "
             "echo 'client data' > /srv/client/hello.txt")
    # Little dirty page cache: a copy onto a slow drive is slow in rsync itself (as with a
    # real USB disk and a big repository), not only in the flush after it.
    guest.sh("echo 1048576 > /proc/sys/vm/dirty_bytes && "
             "echo 262144 > /proc/sys/vm/dirty_background_bytes")
    nas.restore_file = "srv/data/docs/letter.txt"
    nas.restore_sha256 = guest.run(["sha256sum", "/" + nas.restore_file]).stdout.split()[0]
    nas.phobos("repo", "init", "main")
    nas.phobos("run", "nightly", "-q")


def _init_drive_a(nas: Nas) -> None:
    """Prepare ext-a the way an admin does: `phobos drive init` prints the config table
    and the recovery sheet."""
    nas.plug(DRIVE_A)
    guest = nas.guest
    guest.wait_for("ext-a to appear", lambda: guest.sh(
        f"ls /dev/disk/by-id/usb-*_{DRIVE_A}-0:0", check=False).returncode == 0)
    guest.write("/root/recovery.pass", RECOVERY_PASS + "\n", 0o400)
    out = nas.phobos("drive", "init", nas.device_of(DRIVE_A), "--name", DRIVE_A, "--yes",
                     "--passphrase-file", "/root/recovery.pass", "--pbkdf-iterations", "1000")
    guest.run(["rm", "/root/recovery.pass"])
    found = re.search(r'luks_uuid = "([0-9a-f-]+)"', out.stdout)
    assert found, out.output
    nas.uuids[DRIVE_A] = found.group(1)
    assert "PHOBOS RECOVERY SHEET: drive ext-a" in out.stdout
    nas.sheet = out.stdout[out.stdout.index("PHOBOS RECOVERY SHEET"):]
    guest.unplug(DRIVE_A)


# --- 1. plug in: the whole third strand -------------------------------------------------------


def test_plugging_a_drive_syncs_it(nas: Nas) -> None:
    unit = drive_unit(DRIVE_A)
    before = nas.invocation(unit)
    nas.plug(DRIVE_A, slow=True)
    mid = _while_copying(nas, DRIVE_A, before)
    assert mid["ns"] and not mid["pid1"], mid  # mounted only inside the backup namespace
    assert f"phobos-{DRIVE_A}" in mid["mappings"], mid  # unlocked (dm-crypt)
    assert mid["borg_lock"], mid  # under `borg with-lock`
    assert mid["storage_ns"] and not mid["storage_pid1"], mid  # the storage is hidden too
    nas.guest.unthrottle(DRIVE_A)
    state = nas.wait_unit(unit, before)
    assert state["Result"] == "success", nas.journal(unit)

    run = nas.runs("offsite")[0]
    assert (run["outcome"], run["trigger"]) == ("success", "device"), run
    stats = run["stats"]["drives"][DRIVE_A]
    assert stats["files"] > 0 and stats["bytes"] >= 3_000_000, stats
    log = nas.log(run["id"])
    assert any(re.search(r"step copy-repo: borg with-lock .* /backup/borg rsync ", line)
               for line in log), log
    assert any(line.startswith("verified the repo main:") for line in log), log

    after = nas.mounts(DRIVE_A)
    assert not after["ns"] and not after["pid1"] and not after["mappings"], after
    assert not after["borg_lock"], after
    assert nas.led() == "green"
    nas.drive_files = _drive_files(nas)
    assert any(name.startswith("borg/data/") for name in nas.drive_files), nas.drive_files
    drives = json.loads(nas.phobos("drive", "list", "--json").stdout)["drives"]
    ext_a = next(d for d in drives if d["name"] == DRIVE_A)
    assert ext_a["attached"] and ext_a["last_sync"] and not ext_a["overdue"], ext_a


def _while_copying(nas: Nas, drive: str, before: str, timeout: float = 120
                   ) -> dict[str, Any]:
    """The state while rsync copies onto the (throttled) drive. Fails at once, with the
    unit's journal, if the drive's unit ends without ever copying."""
    unit = drive_unit(drive)
    seen: dict[str, Any] = {}

    def copying() -> bool:
        seen.update(nas.mounts(drive))
        if seen["rsync"]:
            return True
        state = seen["unit"]
        if (state.get("InvocationID", "") not in ("", before)
                and state.get("ActiveState") in ("inactive", "failed")):
            raise AssertionError(f"{unit} ended ({state.get('Result')}) without copying:\n"
                                 + nas.journal(unit)[-4000:])
        return False

    waited = nas.guest.wait_for(f"the copy onto {drive} to start", copying, timeout,
                                pause=0.2)
    qemu.say(f"[qemu] plug {drive} -> copying: {waited:.1f} s")
    return seen


# --- 2. the next sync copies only what changed --------------------------------------------------


def test_second_sync_copies_only_changes(nas: Nas) -> None:
    guest = nas.guest
    guest.sh("head -c 200K /dev/urandom > /srv/data/docs/new.bin")
    with step("archive through its unit"):
        nas.start("phobos-job-nightly.service")
    unit = drive_unit(DRIVE_A)
    before = nas.invocation(unit)
    nas.replug(DRIVE_A)
    state = nas.wait_unit(unit, before)
    assert state["Result"] == "success", nas.journal(unit)
    stats = nas.runs("offsite")[0]["stats"]["drives"][DRIVE_A]
    assert 0 < stats["copied_bytes"] < (1 << 20) < stats["bytes"], stats
    # Segments copied the first time are the very same files on the drive (rsync writes
    # a changed file anew, under a new inode); new segments were added.
    files = _drive_files(nas)
    old = {n: v for n, v in nas.drive_files.items() if n.startswith("borg/data/")}
    rewritten = sorted(n for n, v in old.items() if files.get(n, v) != v)
    assert not rewritten, rewritten
    assert {n for n in files if n.startswith("borg/data/")} - set(old), files
    _check_scratch_copy(nas)
    with step("the recovery sheet"):
        nas.sheet = nas.phobos("drive", "sheet", DRIVE_A).stdout


def _by_hand(nas: Nas, drive: str, script: str) -> Completed:
    """Run ``script`` with the drive opened read-only by hand at /mnt/scratch."""
    device = f"/dev/disk/by-uuid/{nas.uuids[drive]}"
    return nas.guest.sh(
        f"cryptsetup open --readonly --key-file {KEYS}/{drive}.key {device} scratch && "
        "mkdir -p /mnt/scratch && mount -o ro /dev/mapper/scratch /mnt/scratch && "
        f"(cd /mnt/scratch && {script}); rc=$?; umount /mnt/scratch; "
        "cryptsetup close scratch; exit $rc")


def _drive_files(nas: Nas) -> dict[str, tuple[int, int]]:
    """Every file on ext-a: path -> (inode, size)."""
    out = _by_hand(nas, DRIVE_A, "find . -type f -printf '%i %s %P\\n'").stdout
    return {path: (int(inode), int(size))
            for inode, size, path in (line.split(" ", 2) for line in out.splitlines())}


def _check_scratch_copy(nas: Nas) -> None:
    """Open the drive read-only by hand, copy its repository to scratch space, break the
    lock and run `borg check`; the copy holds the NAS's archives."""
    env = {"BORG_PASSPHRASE": BORG_PASS, "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
           "BORG_BASE_DIR": "/var/tmp/scratch-base"}
    with step("borg check of a scratch copy of the drive"):
        _by_hand(nas, DRIVE_A, "rsync -a borg/ /var/tmp/scratch/")
        nas.guest.run(["borg", "break-lock", "/var/tmp/scratch"], env=env)
        check = nas.guest.run(["borg", "check", "/var/tmp/scratch"], env=env, check=False,
                              timeout=600)
        assert check.returncode == 0, check.output
        copied = nas.guest.run(["borg", "list", "--short", "/var/tmp/scratch"], env=env)
        original = nas.guest.run(["nsenter", f"--mount={NS}", "borg", "list", "--short",
                                  "/backup/borg"],
                                 env={**env, "BORG_BASE_DIR": "/root"})
        assert copied.stdout.split() == original.stdout.split()
        assert len(copied.stdout.split()) == 2
        nas.guest.run(["rm", "-rf", "/var/tmp/scratch", "/var/tmp/scratch-base"])


# --- 3. pulled out in the middle of a copy ----------------------------------------------------


def test_unplug_mid_copy_fails_cleanly(nas: Nas) -> None:
    guest = nas.guest
    guest.sh("head -c 4M /dev/urandom > /srv/data/docs/video.bin")
    with step("archive through its unit"):
        nas.start("phobos-job-nightly.service")
    unit = drive_unit(DRIVE_A)
    mails = len(nas.inbox.about(unit))
    before = nas.invocation(unit)
    nas.replug(DRIVE_A, slow=True)
    _while_copying(nas, DRIVE_A, before)
    time.sleep(1)
    guest.unplug(DRIVE_A)
    state = nas.wait_unit(unit, before)
    assert state["Result"] != "success", state

    after = nas.mounts(DRIVE_A)
    if after["ns"] or after["pid1"] or after["mappings"] or after["rsync"]:
        hook = nas.journal(failure_unit(unit))[-3000:]
        raise AssertionError(f"left behind after the unplug: {after}\n"
                             f"{nas.diagnosis(unit)}\n--- {failure_unit(unit)}\n{hook}")
    assert nas.led() == "red"
    run = nas.runs("offsite")[0]
    assert run["outcome"] in ("failed", "interrupted"), run
    qemu.say(f"[qemu] the run pulled out mid-copy: {run['outcome']}: {run['message']}")
    hook = failure_unit(unit)
    ran = nas.show(hook, "Result", "ExecMainStartTimestampMonotonic")
    assert ran.get("ExecMainStartTimestampMonotonic", "0") != "0", nas.journal(hook)
    assert ran["Result"] == "success", nas.journal(hook)
    waited = guest.wait_for("the failure mail", lambda: len(nas.inbox.about(unit)) > mails, 60)
    qemu.say(f"[qemu] failure mail arrived {waited:.1f} s after the unit finished")
    body = nas.inbox.about(unit)[-1].get_body(preferencelist=("plain",))
    assert body is not None and unit in body.get_content()

    # The next plug finds the drive as the failure left it, and syncs it again.
    before = nas.invocation(unit)
    nas.plug(DRIVE_A)
    state = nas.wait_unit(unit, before)
    assert state["Result"] == "success", nas.journal(unit)
    assert nas.led() == "red"  # latched until `phobos led ack`


# --- 4. an unknown drive, a wrong keyfile --------------------------------------------------------


def test_unknown_drive_ignored_and_wrong_key_fails(nas: Nas) -> None:
    guest = nas.guest
    nas.phobos("led", "ack")
    runs = len(nas.runs("offsite"))
    units = [drive_unit(DRIVE_A), drive_unit(DRIVE_B)]
    started = {unit: nas.invocation(unit) for unit in units}
    stranger = nas.uuids[UNKNOWN]
    nas.plug(UNKNOWN)
    guest.wait_for("the stranger's udev link", lambda: guest.exists(
        f"/dev/disk/by-uuid/{stranger}"))
    guest.run(["udevadm", "settle"])
    time.sleep(3)
    assert {unit: nas.invocation(unit) for unit in units} == started  # nothing started
    assert len(nas.runs("offsite")) == runs
    assert not nas.mounts(UNKNOWN)["mappings"]
    # What a generic trigger (udev rule, the daemon) hands phobos for any drive:
    told = nas.phobos("drive", "attached", "--uuid", stranger)
    assert f"ignoring device with UUID {stranger}" in told.stderr, told.output
    events = json.loads(guest.read("/var/lib/phobos/drives.json"))["events"]
    assert any(e.get("event") == "ignored" and e.get("uuid") == stranger for e in events), \
        events
    guest.unplug(UNKNOWN)

    unit = drive_unit(DRIVE_B)
    mails = len(nas.inbox.about(unit))
    before = nas.invocation(unit)
    nas.plug(DRIVE_B)
    state = nas.wait_unit(unit, before)
    assert state["Result"] != "success", state
    run = nas.runs("offsite")[0]
    assert run["outcome"] == "failed", run
    message = run["message"] or ""
    assert "unlock" in message and "bad passphrase or key" in message, message
    assert not nas.mounts(DRIVE_B)["mappings"]
    assert nas.led() == "red"
    guest.wait_for("the failure mail", lambda: len(nas.inbox.about(unit)) > mails, 60)
    guest.unplug(DRIVE_B)


# --- 5. the nightly timers; an archive waits for a drive sync -------------------------------


def test_timers_fire_pull_and_archive(nas: Nas) -> None:
    guest = nas.guest
    with step("pull key, host key and authorized_keys for the guest's own sshd"):
        guest.run(["systemctl", "start", "ssh.service"])
        added = json.loads(nas.phobos("host", "add", "client", "127.0.0.1", "--path",
                                      "/srv/client", "--yes", "--json").stdout)
        guest.write("/root/.ssh/authorized_keys", added["authorized_keys"] + "\n", 0o600)
    # The pull first; the archive reads its holding area, so it would wait for a pull
    # that is still running (a pull still starting could lose the race: 10 s apart). A
    # timer installed after its time has passed waits for tomorrow: when installing took
    # longer than the lead (a loaded machine), install again with a longer one.
    lead = 20
    for _ in range(3):
        now = int(guest.run(["date", "+%s"]).stdout)
        at = {"pull-client": now + lead, "nightly": now + lead + 10}
        schedules = {job: time.strftime("*-*-* %H:%M:%S", time.gmtime(when))
                     for job, when in at.items()}
        guest.write(CONFIG, config_text(drives=_registered(nas), schedules=schedules))
        installed = nas.phobos("systemd", "install")
        assert "phobos-job-nightly.timer" in installed.stdout, installed.output
        installed_at = int(guest.run(["date", "+%s"]).stdout)
        if installed_at < at["pull-client"] - 2:
            break
        lead = installed_at - now + 20
    else:
        raise AssertionError(f"`phobos systemd install` kept taking longer than {lead} s")

    def fired(job: str) -> dict[str, Any] | None:
        runs = [r for r in nas.runs(job) if r["trigger"] == "timer" and r["ended"]]
        return runs[0] if runs else None

    with step("the timers fire the pull, then the archive"):
        guest.wait_for("the nightly archive's timer", lambda: fired("nightly") is not None,
                       timeout=180, pause=3)
    pull, archive = fired("pull-client"), fired("nightly")
    assert pull is not None and pull["outcome"] == "success", pull
    assert archive is not None and archive["outcome"] == "success", archive
    assert pull["started"] >= at["pull-client"] - 1 and archive["started"] >= at["nightly"] - 1
    env = {"BORG_PASSPHRASE": BORG_PASS}
    inside = ["nsenter", f"--mount={NS}", "borg", "list", "--short"]
    last = guest.run([*inside, "--last", "1", "/backup/borg"], env=env)
    listed = guest.run([*inside, f"/backup/borg::{last.stdout.strip()}"], env=env).stdout
    assert "backup/holding/client" in listed and "hello.txt" in listed, listed
    # Both units kept their sandbox and mounted the hidden storage in their own
    # namespace, writable only where the job writes; PID 1 never saw it.
    for run, writable in ((pull, "/backup/holding"), (archive, "/backup/borg")):
        log = nas.log(run["id"])
        assert any(line.startswith("step mount-storage: mount ") for line in log), log
        assert any(line.startswith("step storage-writable: mount --bind ")
                   and line.endswith(f" {writable}") for line in log), log
        assert any(line.startswith("step storage-read-only: ") for line in log), log
        assert not any("joining the backup mount namespace" in line for line in log), log
    assert " /backup " not in guest.read("/proc/1/mountinfo")
    assert nas.show("phobos-job-nightly.service", "ProtectSystem")["ProtectSystem"] == "strict"


def test_archive_waits_for_a_drive_sync(nas: Nas) -> None:
    """An archive started while a drive sync copies waits for it, then runs."""
    guest = nas.guest
    guest.sh("head -c 6M /dev/urandom > /srv/data/docs/late.bin")
    with step("archive through its unit"):
        nas.start("phobos-job-nightly.service")
    archive = nas.runs("nightly")[0]
    unit = drive_unit(DRIVE_A)
    before = nas.invocation(unit)
    nightly_before = nas.invocation("phobos-job-nightly.service")
    nas.replug(DRIVE_A, slow=True, rate=SLOWER)
    _while_copying(nas, DRIVE_A, before)
    guest.run(["systemctl", "start", "--no-block", "phobos-job-nightly.service"])

    def waiting() -> bool:
        run = nas.runs("nightly")[0]
        # The unit's ProcSubset=pid hides /proc/locks, so the line names the sync as the
        # run ahead in line rather than as the holder read from the lock table.
        return run["id"] != archive["id"] and any(
            line.startswith("waiting for repo:main, ") and "job offsite (run " in line
            for line in nas.log(run["id"]))

    try:
        guest.wait_for("the archive to wait for the sync", waiting, timeout=120, pause=2)
    except qemu.SystemTestError as exc:
        latest, sync = nas.runs("nightly")[0], nas.runs("offsite")[0]
        raise AssertionError(f"{exc}; the sync {sync}; newest nightly run {latest}: "
                             f"{nas.log(latest['id'])}\n"
                             f"{nas.journal('phobos-job-nightly.service')}") from exc
    guest.unthrottle(DRIVE_A)
    assert nas.wait_unit(unit, before)["Result"] == "success", nas.journal(unit)
    state = nas.wait_unit("phobos-job-nightly.service", nightly_before)
    assert state["Result"] == "success", nas.journal("phobos-job-nightly.service")
    sync, archive = nas.runs("offsite")[0], nas.runs("nightly")[0]
    assert archive["outcome"] == "success", archive
    assert archive["started"] < sync["ended"], (archive, sync)
    assert archive["locked"] >= sync["ended"] - 1.0, (archive, sync)


# --- 6. recovery on a machine that never saw the NAS ------------------------------------------


def _sheet_commands(sheet: str) -> list[str]:
    """The commands a person types from the sheet's restore section: each numbered
    step's own commands, not the alternatives after a step's explanation ("with a copy
    of the keyfile...", "a damaged header...", "keyfile mode: ...")."""
    section = sheet[sheet.index("RESTORE ON A MACHINE THAT NEVER SAW THE NAS"):]
    commands: list[str] = []
    alternative = False
    for line in section.splitlines()[1:]:
        if re.match(r"^ {7}\S", line):
            if not alternative:
                commands.append(line.strip())
        elif re.match(r"^  \d+\. ", line):
            alternative = False
        elif line.startswith("     ") and line.strip():
            alternative = True
    return commands


def _fresh_guest_restores(fresh: Guest, script: str, what: str, sha256: str) -> None:
    """Run a restore script as a person would, in root's bash (the recovery passphrase,
    then the Borg passphrase typed in), check the letter came back, and clean up."""
    letter = f"/root/restore-drive/{NAS_LETTER}"
    with step(f"restore with {what} (unlock, mount, find, extract, unmount, lock)"):
        done = fresh.run(["bash", "-c", "set -euxo pipefail\n" + script], check=False,
                         timeout=600, input=f"{RECOVERY_PASS}\n{BORG_PASS}\n".encode())
        assert done.returncode == 0, done.output
    assert fresh.run(["sha256sum", letter]).stdout.split()[0] == sha256
    assert not fresh.exists("/dev/mapper/extbackup")
    assert " /mnt/extbackup " not in fresh.read("/proc/self/mountinfo")
    fresh.run(["rm", "-rf", "/root/restore-drive", "/root/borg-restore"])


NAS_LETTER = "srv/data/docs/letter.txt"


def test_recovery_from_the_guide_and_the_sheet_on_a_fresh_guest(
        nas: Nas, lab: dict[str, Any]) -> None:
    """A second guest that never saw phobos restores the letter from drive ext-a twice:
    once following docs/recovery.md's part for such a machine (its values filled in,
    the LUKS variant), once with the printed sheet's own commands. Nothing else is
    given: no Borg settings in the environment, the passphrases typed in."""
    assert nas.restore_file == NAS_LETTER
    commands = _sheet_commands(nas.sheet)
    assert commands[0].startswith("cryptsetup open --readonly"), nas.sheet
    sheet = guide.replace_assignment("\n".join(commands) + "\n", "WANTED", NAS_LETTER)
    followed = guide.script(guide.fresh_blocks(guide.blocks(), device_mapper=True), {
        "LUKS_UUID": nas.uuids[DRIVE_A], "FS_UUID": "unused-for-a-luks-drive",
        "REPO_DIR": "borg"})
    followed = guide.replace_assignment(followed, "WANTED", NAS_LETTER)
    nas.guest.stop()  # one guest at a time: two emulated machines on two cores crawl
    with qemu.booted(lab["image"], name="fresh", keep_logs=lab["logs"]) as fresh:
        assert not fresh.exists("/etc/phobos") and not fresh.exists(PHOBOS)
        fresh.plug(DRIVE_A, nas.images[DRIVE_A])
        fresh.wait_for("the drive", lambda: fresh.sh(
            f"blkid -U {nas.uuids[DRIVE_A]}", check=False).returncode == 0)
        _fresh_guest_restores(fresh, followed, "docs/recovery.md", nas.restore_sha256)
        _fresh_guest_restores(fresh, sheet, "the recovery sheet", nas.restore_sha256)
