"""The fault rig: a whole phobos installation in miniature, built to be broken.

One :class:`Rig` has a remote host (sshd in its own network namespace, from
:mod:`phobos.dev.lab`), phobos in the lab's client namespace (entered with ``nsenter
--net`` only: the backup mount namespace must be the machine's, not a throw-away one), an
SMTP sink on the client namespace's 127.0.0.1, the LED's file driver, a Borg repository
and holding area on a 64 MB tmpfs (small enough to fill), the state directory on an ext4
loop filesystem (so it can be filled, remounted read-only and ``chattr +i``-ed), and a
loop-device drive with ``unlock = "none"`` (no device-mapper here).

What must hold after any fault is checked on a rig by :mod:`invariants`.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import pty
import random
import sqlite3
import subprocess
import sys
import termios
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from phobos.dev.lab import Lab
from phobos.tools import borg_repository as borgtool

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "integration"))
from notify_servers import Inbox, free_port  # noqa: E402

REPO = TESTS.parent
VENV_BIN = REPO / ".venv" / "bin"
CLONE_NEWNET = 0x40000000
RECIPIENT = "faults@example.org"
HOST_DATA = 1_500_000  # bytes changed on the remote host before each pull
SEGMENT = 1 << 20  # the repository's max_segment_size: small filesystems need small segments


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{VENV_BIN}:{out.get('PATH', '/usr/bin:/bin')}"
    out.pop("PHOBOS_CONFIG", None)
    out.pop("PHOBOS_FAILURE_HOOK", None)
    return out


def sh(*argv: str, check: bool = True, timeout: float = 120,
       **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout,
                          env=env(), **kwargs)


def _setns_net(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
    finally:
        os.close(fd)


def smtp_sink_in(netns: str) -> tuple[Controller, Inbox, int]:
    """An SMTP sink on 127.0.0.1 of network namespace ``netns``: started from a thread
    that joined it (aiosmtpd's own thread inherits the namespace from its creator)."""
    made: dict[str, Any] = {}

    def start() -> None:
        try:
            _setns_net(netns)
            inbox, port = Inbox(), free_port()
            controller = Controller(inbox, hostname="127.0.0.1", port=port)
            controller.start()
            made.update(controller=controller, inbox=inbox, port=port)
        except BaseException as exc:  # reported to the caller below
            made["error"] = exc

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]
    return made["controller"], made["inbox"], made["port"]


@dataclass
class Rig:
    root: Path
    index: int
    lab: Lab | None = None
    smtp: Controller | None = None
    inbox: Inbox | None = None
    smtp_port: int = 0
    loops: list[str] = field(default_factory=list)
    mounts: list[Path] = field(default_factory=list)
    drive: str = ""
    drive_uuid: str = ""
    state_device: str = ""
    rng: random.Random = field(default_factory=random.Random)

    # --- places ---------------------------------------------------------------------------

    @property
    def config(self) -> Path:
        return self.root / "phobos.toml"

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def backup(self) -> Path:
        return self.root / "backup"

    @property
    def repo(self) -> Path:
        return self.backup / "borg"

    @property
    def borg_base(self) -> Path:
        return self.root / "borgbase"

    @property
    def led_file(self) -> Path:
        return self.root / "led"

    @property
    def fallback_log(self) -> Path:
        return self.root / "log" / "phobos.log"

    @property
    def host_srv(self) -> Path:
        assert self.lab is not None
        return self.lab.hosts[0].srv

    @property
    def mountpoint(self) -> Path:
        return self.run_dir / "drives" / "ext-a"

    @property
    def ns_file(self) -> Path:
        return self.run_dir / "ns" / "mnt"

    # --- building ---------------------------------------------------------------------------

    def build(self) -> None:
        """The parts (mounts, loop devices, the host's namespace, the SMTP sink): one rig
        at a time, as network namespaces are named by a counter."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.backup.mkdir()
        sh("mount", "-t", "tmpfs", "-o", "size=96m", f"phobos-fault{self.index}",
           str(self.backup))
        self.mounts.append(self.backup)
        (self.backup / "holding").mkdir()
        self.state_device = self._loop_fs("state", "8M", self.state, label="faultstate")
        self.lab = Lab(root=self.root / "lab", names=("h1",))
        self.smtp, self.inbox, self.smtp_port = smtp_sink_in(self.lab.client)
        self.drive = self._loop_image("drive-a", "128M", label="extbackup")
        self.drive_uuid = sh("blkid", "-p", "-o", "value", "-s", "UUID",
                             self.drive).stdout.strip()
        (self.host_srv / "data").mkdir(parents=True)
        self.change_host_data()

    def install(self) -> None:
        """The repository, the config, the host's key and a first run of each job (rigs
        side by side)."""
        self._init_repo()
        self._configure()
        for job in ("pull", "archive"):  # the drive's first copy is made by a fault's run
            out = self.phobos("run", job, "-q")
            assert out.returncode == 0, f"rig {self.index}: first {job}: {out.stdout}{out.stderr}"

    def _loop_image(self, name: str, size: str, label: str) -> str:
        image = self.root / f"{name}.img"
        sh("truncate", "-s", size, str(image))
        sh("mkfs.ext4", "-q", "-m", "0", "-L", label, str(image))
        device = sh("losetup", "-f", "--show", str(image)).stdout.strip()
        self.loops.append(device)
        sh("blockdev", "--setrw", device)  # a read-only flag outlives a detached loop device
        return device

    def _loop_fs(self, name: str, size: str, where: Path, label: str) -> str:
        device = self._loop_image(name, size, label)
        where.mkdir(parents=True, exist_ok=True)
        sh("mount", device, str(where))
        self.mounts.append(where)
        return device

    def _init_repo(self) -> None:
        environ = {**env(), "BORG_BASE_DIR": str(self.borg_base),
                   "BORG_HOST_ID": borgtool.host_id()}
        subprocess.run(["borg", "init", "--encryption=none", str(self.repo)], check=True,
                       capture_output=True, env=environ)
        config = self.repo / "config"
        config.write_text(config.read_text().replace("max_segment_size = 524288000",
                                                     f"max_segment_size = {SEGMENT}"))

    def _configure(self) -> None:
        assert self.lab is not None
        host = self.lab.hosts[0]
        self.config.write_text(self._tables(hosts="").split("[storage]")[0])
        out = self.phobos("host", "add", "h1", host.address, "--root", str(host.srv),
                          "--path", str(host.srv / "data"), "--yes", "--json")
        assert out.returncode == 0, f"host add: {out.stderr}"
        added = json.loads(out.stdout)
        host.authorize(added["authorized_keys"])
        snippet = added["config"].replace("[hosts.h1]\n", '[hosts.h1]\nbwlimit = "1500"\n')
        self.config.write_text(self._tables(hosts=snippet))

    def _tables(self, hosts: str) -> str:
        root = self.root
        return textwrap.dedent(f"""\
            [paths]
            state = "{self.state}"
            run = "{self.run_dir}"
            log = "{root}/log"
            keys = "{root}/keys"

            [storage]
            root = "{self.backup}"
            holding = "{self.backup}/holding"

            [repos.main]
            path = "{self.repo}"
            base_dir = "{self.borg_base}"
            encryption = "none"
            lock_wait = "10s"

            [drives.ext-a]
            luks_uuid = "{self.drive_uuid}"
            unlock = "none"

            [jobs.pull]
            kind = "pull"
            host = "h1"

            [jobs.archive]
            kind = "archive"
            repo = "main"
            sources = ["{self.backup}/holding"]
            keep = {{ last = 2 }}

            [jobs.nightly]
            kind = "archive"
            repo = "main"
            sources = ["{self.backup}/holding"]

            [jobs.check]
            kind = "check"
            repo = "main"

            [jobs.offsite]
            kind = "drive-sync"
            repo = "main"
            drives = ["ext-a"]
            rsync_options = ["--bwlimit=6000"]

            [jobs.quick]
            kind = "command"
            argv = ["true"]

            [jobs.slow]
            kind = "command"
            argv = ["sh", "-c", "sleep 2; touch {root}/slow.done"]
            writes = ["custom:shared"]

            [jobs.holder]
            kind = "command"
            argv = ["sh", "-c", "until [ -e {root}/release ]; do sleep 0.05; done"]
            writes = ["custom:shared"]

            [jobs.waiter]
            kind = "command"
            argv = ["touch", "{root}/waiter.ran"]
            writes = ["custom:shared"]

            [notify]
            led = {{ driver = "file", path = "{self.led_file}", clear_on_success = true }}

            [notify.email]
            to = ["{RECIPIENT}"]
            host = "127.0.0.1"
            port = {self.smtp_port}
            timeout = "10s"
            """) + "\n" + hosts + "\n" + _storm_jobs()

    # --- running phobos -------------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        assert self.lab is not None
        return ["nsenter", f"--net=/run/netns/{self.lab.client}", sys.executable, "-m",
                "phobos", "-c", str(self.config), *args]

    def phobos(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args), capture_output=True, text=True,
                              timeout=timeout, env=env(), stdin=subprocess.DEVNULL)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env(),
                                stdin=subprocess.DEVNULL)

    def start_in_terminal(self, *args: str) -> tuple[subprocess.Popen[bytes], int]:
        """phobos as the foreground job of a new pseudo-terminal; returns the process and
        the terminal's master side (write b"\\x03" to it for a Ctrl-C)."""
        master, slave = pty.openpty()

        def become_terminal_owner() -> None:
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        process = subprocess.Popen(self.argv(*args), stdin=slave, stdout=slave, stderr=slave,
                                   env=env(), preexec_fn=become_terminal_owner)
        os.close(slave)
        return process, master

    # --- the remote host, the data ----------------------------------------------------------

    def change_host_data(self) -> None:
        """New content on the remote host, so the next pull (and archive, sync) has work."""
        (self.host_srv / "data" / "changing.bin").write_bytes(os.urandom(HOST_DATA))
        (self.host_srv / "data" / "stamp").write_text(f"{time.time()}\n")

    def stop_host(self) -> None:
        assert self.lab is not None
        self.lab.hosts[0].stop()

    def start_host(self) -> None:
        assert self.lab is not None
        host = self.lab.hosts[0]
        if host.sshd is None:
            host.start()

    # --- reading state ------------------------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows from the history database, read-only (nothing if it cannot be read)."""
        path = self.state / "history.sqlite"
        if not path.exists():
            return []
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        except sqlite3.Error:
            return []
        try:
            return db.execute(sql, params).fetchall()
        except sqlite3.Error:
            return []
        finally:
            db.close()

    def last_run(self, job: str) -> dict[str, Any] | None:
        rows = self.query("SELECT id, outcome, message, exit_code, locked FROM runs "
                          "WHERE job = ? ORDER BY id DESC LIMIT 1", job)
        if not rows:
            return None
        run_id, outcome, message, code, locked_at = rows[0]
        return {"id": run_id, "outcome": outcome, "message": message, "exit_code": code,
                "locked": locked_at}

    def wait_for_step(self, job: str, prefix: str, after: int, timeout: float = 60) -> bool:
        """Wait until a run of ``job`` newer than run ``after`` starts a step named
        ``prefix...``; False if it never did (the run ended before, say)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.query("SELECT s.name FROM steps s JOIN runs r ON r.id = s.run_id "
                              "WHERE r.job = ? AND r.id > ?", job, after)
            if any(name.startswith(prefix) for (name,) in rows):
                return True
            time.sleep(0.05)
        return False

    def phase_seconds(self, job: str, step: str, default: float) -> float:
        """How long the latest successful run of ``job`` went on after starting its step
        ``step...``: a moment picked inside that lands inside the next run too."""
        rows = self.query("SELECT r.ended - MIN(s.started) FROM runs r JOIN steps s ON "
                          "s.run_id = r.id WHERE r.job = ? AND r.outcome = 'success' AND "
                          "s.name LIKE ? GROUP BY r.id ORDER BY r.id DESC LIMIT 1",
                          job, f"{step}%")
        return float(rows[0][0]) if rows and rows[0][0] else default

    def newest_run_id(self) -> int:
        rows = self.query("SELECT COALESCE(MAX(id), 0) FROM runs")
        return int(rows[0][0]) if rows else 0

    def mails(self) -> int:
        assert self.inbox is not None
        return sum(1 for _sender, rcpts in self.inbox.envelopes if RECIPIENT in rcpts)

    def led(self) -> str:
        try:
            return self.led_file.read_text().strip()
        except FileNotFoundError:
            return "off"

    # --- teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        if self.config.exists():
            with contextlib.suppress(Exception):
                subprocess.run(self.argv("ns", "destroy", "--force"), capture_output=True,
                               env=env(), timeout=60)
        with contextlib.suppress(Exception):
            sh("chattr", "-i", str(self.state / "history.sqlite"), check=False)
        for entry in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            point = entry.split()[4]
            if point.startswith(str(self.root)) and Path(point) not in self.mounts:
                sh("umount", "-l", point, check=False)
        for point in reversed(self.mounts):
            sh("umount", "-l", str(point), check=False)
        for device in self.loops:
            sh("losetup", "-d", device, check=False)
        if self.smtp is not None:
            with contextlib.suppress(Exception):
                self.smtp.stop()
        if self.lab is not None:
            self.lab.close()


def _storm_jobs() -> str:
    """The storm's jobs: writers and readers of one resource and of the repository."""
    tables = []
    for index in range(4):
        tables.append(f'[jobs.storm-w{index}]\nkind = "command"\nargv = ["sleep", "0.05"]\n'
                      f'writes = ["custom:storm", "repo:main"]\n')
        tables.append(f'[jobs.storm-r{index}]\nkind = "command"\nargv = ["sleep", "0.05"]\n'
                      f'reads = ["custom:storm", "repo:main"]\n')
    tables.append('[jobs.storm-skip]\nkind = "command"\nargv = ["true"]\n'
                  'writes = ["custom:storm"]\non_busy = "skip"\n')
    return "\n".join(tables)


@contextlib.contextmanager
def rigs(root: Path, count: int) -> Iterator[list[Rig]]:
    built = [Rig(root=root / f"rig{index}", index=index) for index in range(count)]
    try:
        for rig in built:
            rig.build()
        side_by_side([rig.install for rig in built])
        yield built
    finally:
        for rig in built:
            rig.close()


def side_by_side(work: list[Any]) -> None:
    """Call each function in a thread of its own; the first error is raised after all end."""
    errors: list[BaseException] = []

    def call(function: Any) -> None:
        try:
            function()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(function,)) for function in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def stop_cleanly(process: subprocess.Popen[Any], timeout: float = 120) -> int:
    """Wait for ``process``; kill it if it does not end (a test must never hang)."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -9


def kill_group_of(process: subprocess.Popen[Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, sig)


def fill(directory: Path, leave: int = 0) -> Path:
    """A file filling the filesystem of ``directory`` up to ``leave`` free bytes
    (allocated, not written: instant on tmpfs and ext4)."""
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    filler = directory / ".fault-filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        size = max(0, free - leave)
        while size > 0:
            try:
                os.posix_fallocate(fd, 0, size)
                break
            except OSError:  # metadata takes some room too: a little less
                size -= 64 * 1024
    finally:
        os.close(fd)
    return filler
