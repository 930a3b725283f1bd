"""A QEMU guest for system tests that need a real kernel: device-mapper (``cryptsetup
open``), udev and hotplug, none of which this host's kernel offers.

- :func:`guest_image` builds a Debian 12 guest once with mmdebstrap (systemd, udev, the
  stock kernel, cryptsetup, Borg, rsync, Python, the guest agent) and caches it outside
  the repository (``/var/cache/phobos-test``, or ``$PHOBOS_TEST_CACHE``) as an ext4 image
  made with ``mkfs.ext4 -d`` plus the guest's own kernel and initrd. The cache key covers
  the suite, the package list and :data:`IMAGE_VERSION` (bump it when the customisation
  changes). A fresh CI clone on the same machine reuses it; a new machine rebuilds it
  (about 80 s download and install, 10 s to make the image).
- :func:`share_image` packs files for the guest (phobos installed from wheels into a
  plain directory, configs, keys) into a small read-only ext4 disk.
- :class:`Guest` boots the image with TCG (``snapshot=on``: the cached image is never
  written), talks to QEMU over QMP (:class:`QMP`: plug and unplug USB drives, throttle
  them) and to the guest agent (:class:`Agent`: run commands, read their output).
  Mail leaves the guest only through a ``guestfwd`` rule of QEMU's own user-mode network
  (``restrict=on``: the guest reaches nothing else), relayed to an SMTP server on the
  host's 127.0.0.1.
- :func:`luks_drive` makes a LUKS2 drive image on the host without device-mapper (ext4
  encrypted offline with ``cryptsetup reencrypt --encrypt``).

Every step says how long it took (``[qemu] ...`` lines). A missing tool raises
:class:`SystemTestError`: system tests fail, they never skip.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nspawn import REPO, SystemTestError, cache_lock, require, wheelhouse

CACHE = Path(os.environ.get("PHOBOS_TEST_CACHE", "/var/cache/phobos-test"))
SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "udev", "linux-image-amd64", "kmod", "e2fsprogs",
            "cryptsetup-bin", "rsync", "borgbackup", "python3", "qemu-guest-agent",
            "openssh-server", "openssh-client", "procps")
IMAGE_VERSION = 1
QEMU = "qemu-system-x86_64"
# KVM is nested (and 10-20x slower than emulation) on the machines this runs on.
ACCEL = os.environ.get("PHOBOS_TEST_QEMU_ACCEL", "tcg,thread=multi")
GUEST_IP = "10.0.2.15"
MAIL_IP = "10.0.2.100"  # the guestfwd address that reaches the host's SMTP server
MAIL_PORT = 25
SHARE_MOUNT = "/opt/phobos"
PHOBOS = f"{SHARE_MOUNT}/bin/phobos"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Kernel modules a headless test guest never needs: less to pack into the image.
PRUNE_MODULES = ("kernel/sound", "kernel/drivers/gpu", "kernel/drivers/media",
                 "kernel/drivers/infiniband", "kernel/drivers/net/wireless",
                 "kernel/drivers/staging", "kernel/net/wireless", "kernel/net/mac80211",
                 "kernel/drivers/bluetooth", "kernel/net/bluetooth", "kernel/drivers/iio",
                 "kernel/drivers/hid", "kernel/drivers/input/touchscreen",
                 "kernel/drivers/isdn", "kernel/drivers/net/ethernet")
# Timers and services that would only add noise (or try the network) in a test guest.
DISABLE_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer",
                 "e2scrub_all.timer", "fstrim.timer", "e2scrub_reap.service",
                 "getty@tty1.service", "ssh.service", "remote-fs.target")

Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


say: Log = _print  # tests may point this at pytest's terminal


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """Time one step and say how long it took."""
    started = time.monotonic()
    try:
        yield
    except BaseException:
        say(f"[qemu] {what}: FAILED after {time.monotonic() - started:.1f} s")
        raise
    say(f"[qemu] {what}: {time.monotonic() - started:.1f} s")


def sh(*argv: str | Path, input: bytes | None = None, timeout: float = 600,
       ) -> subprocess.CompletedProcess[bytes]:
    """Run a host command; a failure raises with its output."""
    done = subprocess.run([str(a) for a in argv], input=input, capture_output=True,
                          timeout=timeout, stdin=None if input is not None
                          else subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemTestError(f"{' '.join(map(str, argv))} exited with {done.returncode}:\n"
                              f"{done.stdout.decode(errors='replace')}"
                              f"{done.stderr.decode(errors='replace')}")
    return done


# --- the cached guest image ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Image:
    """The cached guest: its root file system image, kernel and initrd."""

    root: Path
    kernel: Path
    initrd: Path


def image_key() -> str:
    return hashlib.sha256(repr((SUITE, PACKAGES, PRUNE_MODULES, DISABLE_UNITS,
                                IMAGE_VERSION)).encode()).hexdigest()[:12]


def guest_image() -> Image:
    """The cached guest image, built first if absent (under a lock: parallel runs build
    it once). Older images of other keys are removed."""
    require(QEMU, "mmdebstrap", "mkfs.ext4", "systemctl", "chroot",
            why_root="mmdebstrap, image files")
    directory = CACHE / f"qemu-{SUITE}-{image_key()}"
    image = Image(root=directory / "root.img", kernel=directory / "vmlinuz",
                  initrd=directory / "initrd.img")
    with cache_lock(CACHE / ".lock"):
        if not image.root.exists():
            for old in CACHE.glob(f"qemu-{SUITE}-*"):
                shutil.rmtree(old, ignore_errors=True)
            _build(directory)
    return image


def _build(directory: Path) -> None:
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    rootfs = partial / "rootfs"
    try:
        with step(f"mmdebstrap {SUITE} guest ({len(PACKAGES)} packages)"):
            sh("mmdebstrap", "--quiet", "--variant=minbase", "--mode=root",
               f"--include={','.join(PACKAGES)}", SUITE, rootfs, timeout=1200)
        with step("customise the guest"):
            _customise(rootfs)
            boot = rootfs / "boot"
            shutil.copy2(next(boot.glob("vmlinuz-*")), partial / "vmlinuz")
            shutil.copy2(next(boot.glob("initrd.img-*")), partial / "initrd.img")
        with step("mkfs.ext4 -d (guest root image)"):
            sh("mkfs.ext4", "-q", "-L", "guestroot", "-d", rootfs, partial / "root.img", "2G")
        shutil.rmtree(rootfs)
        partial.replace(directory)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _customise(root: Path) -> None:
    """Prune kernel modules, give the guest a static address on QEMU's user network,
    and switch off what a test guest does not need."""
    for release in (root / "usr/lib/modules").iterdir():
        for sub in PRUNE_MODULES:
            shutil.rmtree(release / sub, ignore_errors=True)
        sh("chroot", root, "depmod", "-a", release.name)
    (root / "etc/hostname").write_text("phobos-guest\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n127.0.1.1 phobos-guest\n")
    network = root / "etc/systemd/network/10-user.network"
    network.parent.mkdir(parents=True, exist_ok=True)
    network.write_text(f"[Match]\nType=ether\n\n[Network]\nAddress={GUEST_IP}/24\n"
                       "LinkLocalAddressing=no\nIPv6AcceptRA=no\n")
    sh("systemctl", f"--root={root}", "enable", "systemd-networkd.service")
    sh("systemctl", f"--root={root}", "disable", *DISABLE_UNITS)
    # The journal in memory only: nothing to flush at power-off.
    journald = root / "etc/systemd/journald.conf.d/volatile.conf"
    journald.parent.mkdir(parents=True, exist_ok=True)
    journald.write_text("[Journal]\nStorage=volatile\n")


# --- what the guest gets from the host --------------------------------------------------------


def phobos_tree(directory: Path) -> Path:
    """phobos and its dependencies installed from wheels into ``directory/lib`` (the
    guest's Python is 3.11 like the host's), with a ``bin/phobos`` for the guest."""
    wheels = wheelhouse(directory / "build")
    lib = directory / "tree" / "lib"
    pip = REPO / ".venv" / "bin" / "pip"
    sh(pip, "install", "--quiet", "--no-index", "--find-links", wheels, "--target", lib,
       "--no-warn-script-location", "phobos", timeout=600)
    shutil.rmtree(lib / "bin", ignore_errors=True)  # console scripts of the host's Python
    program = directory / "tree" / "bin" / "phobos"
    program.parent.mkdir(parents=True)
    program.write_text("#!/usr/bin/python3\nimport sys\n"
                       f"sys.path.insert(0, {SHARE_MOUNT + '/lib'!r})\n"
                       "from phobos.__main__ import main\nsys.exit(main())\n")
    program.chmod(0o755)
    shutil.rmtree(directory / "build")
    return directory / "tree"


def share_image(tree: Path, image: Path) -> Path:
    """``tree`` as a small ext4 image (the guest mounts it read-only at /opt/phobos)."""
    size = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file())
    megabytes = max(64, size * 2 // (1 << 20) + 32)
    sh("mkfs.ext4", "-q", "-L", "phobos-share", "-d", tree, image, f"{megabytes}M")
    return image


def luks_drive(path: Path, keyfile: Path, uuid: str, *, size_mb: int = 128,
               label: str = "extbackup", passphrase: str | None = None) -> Path:
    """A LUKS2 drive image with an ext4 file system labelled ``label`` inside, made
    without device-mapper: ext4 first, then encrypted offline in place (PBKDF2 with
    1000 iterations: fast, test-only)."""
    sh("truncate", "-s", f"{size_mb}M", path)
    sh("mkfs.ext4", "-q", "-L", label, path, f"{size_mb - 16}M")
    fast = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
    sh("cryptsetup", "reencrypt", "-q", "--encrypt", "--type", "luks2",
       "--reduce-device-size", "16M", *fast, "--key-file", keyfile, "--uuid", uuid,
       "--force-offline-reencrypt", path)
    if passphrase is not None:
        sh("cryptsetup", "luksAddKey", "--batch-mode", "--key-file", keyfile, *fast, path,
           input=(passphrase + "\n").encode())
    return path


# --- QMP -------------------------------------------------------------------------------------


class QMPError(SystemTestError):
    pass


class _Lines:
    """A unix stream socket read line by line (and up to a delimiter byte)."""

    def __init__(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise SystemTestError(f"nothing listens on {path}") from None
                time.sleep(0.05)
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError from None
        if not chunk:
            raise SystemTestError("the QEMU socket was closed")
        self.buffer += chunk

    def line(self, deadline: float) -> bytes:
        while b"\n" not in self.buffer:
            self._fill(deadline)
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def skip_to(self, delimiter: bytes, deadline: float) -> None:
        while delimiter not in self.buffer:
            self.buffer = b""
            self._fill(deadline)
        self.buffer = self.buffer.partition(delimiter)[2]

    def close(self) -> None:
        self.sock.close()


class QMP:
    """QEMU's machine protocol: commands, with asynchronous events kept aside."""

    def __init__(self, path: Path, timeout: float = 30) -> None:
        self.io = _Lines(path, timeout)
        self.events: list[dict[str, Any]] = []
        greeting = json.loads(self.io.line(time.monotonic() + timeout))
        if "QMP" not in greeting:
            raise QMPError(f"not a QMP greeting: {greeting}")
        self.command("qmp_capabilities")

    def command(self, name: str, timeout: float = 30, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self.io.send(json.dumps(request).encode() + b"\n")
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.io.line(deadline))
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise QMPError(f"{name}: {reply['error'].get('desc', reply['error'])}")
            elif "return" in reply:
                return reply["return"]

    def close(self) -> None:
        self.io.close()


# --- the guest agent ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Agent:
    """qemu-guest-agent over its virtio-serial port: ``guest-exec`` and friends."""

    def __init__(self, path: Path) -> None:
        self.io = _Lines(path, 30)

    def sync(self, timeout: float) -> None:
        """Wait until the agent answers (it starts during boot); stale replies of
        earlier attempts are skipped by the delimited sync."""
        deadline = time.monotonic() + timeout
        while True:
            ident = random.randrange(1, 1 << 30)
            request = {"execute": "guest-sync-delimited", "arguments": {"id": ident}}
            self.io.send(b"\xff" + json.dumps(request).encode() + b"\n")
            attempt = min(deadline, time.monotonic() + 2)
            try:
                self.io.skip_to(b"\xff", attempt)
                while True:
                    # Answers to earlier attempts may follow, each after its own 0xff.
                    line = self.io.line(attempt).lstrip(b"\xff").strip()
                    with contextlib.suppress(ValueError):
                        if line and json.loads(line).get("return") == ident:
                            return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise SystemTestError("the guest agent did not answer") from None

    def call(self, name: str, timeout: float = 30, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": name}
        if arguments:
            request["arguments"] = arguments
        self.io.send(json.dumps(request).encode() + b"\n")
        reply = json.loads(self.io.line(time.monotonic() + timeout))
        if "error" in reply:
            raise SystemTestError(f"guest agent {name}: {reply['error'].get('desc')}")
        return reply.get("return")

    def spawn(self, argv: Sequence[str], *, input: bytes | None = None,
              env: Mapping[str, str] | None = None) -> int:
        arguments: dict[str, Any] = {"path": argv[0], "arg": list(argv[1:]),
                                     "capture-output": True}
        if input is not None:
            arguments["input-data"] = base64.b64encode(input).decode()
        # guest-exec replaces the whole environment when given one.
        arguments["env"] = [f"{k}={v}" for k, v in {"PATH": GUEST_PATH, "HOME": "/root",
                                                    "LANG": "C.UTF-8", **(env or {})}.items()]
        return int(self.call("guest-exec", **arguments)["pid"])

    def wait(self, pid: int, argv: Sequence[str], timeout: float) -> Completed:
        deadline = time.monotonic() + timeout
        pause = 0.02
        while True:
            status = self.call("guest-exec-status", pid=pid)
            if status["exited"]:
                break
            if time.monotonic() > deadline:
                raise SystemTestError(f"{' '.join(argv)}: still running after {timeout} s "
                                      "in the guest")
            time.sleep(pause)
            pause = min(pause * 1.5, 0.25)
        code = status.get("exitcode", -status.get("signal", 0) or -1)
        return Completed(tuple(argv), int(code), _b64(status.get("out-data")),
                         _b64(status.get("err-data")))

    def close(self) -> None:
        self.io.close()


def _b64(data: str | None) -> str:
    return base64.b64decode(data).decode(errors="replace") if data else ""


# --- the guest ----------------------------------------------------------------------------------


@dataclass
class Plugged:
    ident: str
    image: Path
    throttled: bool


class Guest:
    """One booted QEMU guest on a throw-away overlay of the cached image."""

    def __init__(self, image: Image, workdir: Path, *, share: Path | None = None,
                 smtp_port: int | None = None, name: str = "guest") -> None:
        self.image = image
        self.workdir = workdir
        self.share = share
        self.smtp_port = smtp_port
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.qmp: QMP | None = None
        self.agent: Agent | None = None
        self.plugged: dict[str, Plugged] = {}

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    def argv(self) -> list[str]:
        cpu = "max" if ACCEL.startswith("tcg") else "host"
        argv = [QEMU, "-accel", ACCEL, "-cpu", cpu, "-m", "1024", "-smp", "2",
                "-machine", "pc", "-nodefaults", "-no-user-config", "-display", "none",
                "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
                "-append", "root=/dev/vda rw console=ttyS0 panic=-1 quiet "
                "systemd.show_status=0",
                "-no-reboot",
                "-drive", f"file={self.image.root},if=none,id=root,format=raw,snapshot=on",
                "-device", "virtio-blk-pci,drive=root",
                "-device", "qemu-xhci,id=xhci",
                "-qmp", f"unix:{self.workdir / 'qmp.sock'},server=on,wait=off",
                "-chardev", f"socket,id=qga0,path={self.workdir / 'qga.sock'},server=on,"
                "wait=off",
                "-device", "virtio-serial",
                "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
                "-serial", f"file:{self.serial_log}"]
        if self.share is not None:
            argv += ["-drive", f"file={self.share},if=none,id=share,format=raw,readonly=on",
                     "-device", "virtio-blk-pci,drive=share,serial=phobos-share"]
        # romfile=: no network boot ROM (nothing boots from the network here).
        argv += ["-netdev", self._netdev(), "-device", "virtio-net-pci,netdev=net0,romfile="]
        return argv

    def _netdev(self) -> str:
        """QEMU's user network, isolated from the host and the world (``restrict=on``);
        only MAIL_IP:25 leads out, to the host's SMTP server through a relay."""
        netdev = "user,id=net0,restrict=on,ipv6=off"
        if self.smtp_port is not None:
            netdev += (f",guestfwd=tcp:{MAIL_IP}:{MAIL_PORT}-cmd:{sys.executable} "
                       f"{Path(__file__).resolve()} relay 127.0.0.1 {self.smtp_port}")
        return netdev

    def start(self, timeout: float = 240) -> None:
        """Boot and wait until systemd says the system is up."""
        with step(f"boot {self.name}"):
            log = open(self.workdir / "qemu.log", "wb")  # noqa: SIM115 - closed in stop()
            self._qemu_log = log
            # TMPDIR: where snapshot=on puts its overlay; removed with the work directory.
            self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, "TMPDIR": str(self.workdir)})
            while not (self.workdir / "qmp.sock").exists():
                if self.process.poll() is not None:
                    raise SystemTestError(f"{QEMU} exited with {self.process.returncode}:\n"
                                          + (self.workdir / "qemu.log").read_text())
                time.sleep(0.05)
            self.qmp = QMP(self.workdir / "qmp.sock")
            self.agent = Agent(self.workdir / "qga.sock")
            self.agent.sync(timeout)
            state = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                             timeout=timeout)
            if state.stdout.strip() not in ("running", "degraded"):
                raise SystemTestError(f"the guest did not boot: {state.output}")
            if state.stdout.strip() == "degraded":
                failed = self.run(["systemctl", "--failed", "--no-pager"], check=False)
                say(f"[qemu] {self.name} is degraded:\n{failed.stdout}")
            if self.share is not None:
                self.run(["mkdir", "-p", SHARE_MOUNT])
                self.run(["mount", "-o", "ro,noload", "/dev/disk/by-id/virtio-phobos-share",
                          SHARE_MOUNT])

    # commands ------------------------------------------------------------------------------

    def spawn(self, argv: Sequence[str], *, input: bytes | None = None,
              env: Mapping[str, str] | None = None) -> int:
        assert self.agent is not None
        return self.agent.spawn(argv, input=input, env=env)

    def wait(self, pid: int, argv: Sequence[str] = ("?",), timeout: float = 300,
             check: bool = True) -> Completed:
        assert self.agent is not None
        done = self.agent.wait(pid, argv, timeout)
        if check and done.returncode != 0:
            raise SystemTestError(f"in the guest, {' '.join(argv)} exited with "
                                  f"{done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 300,
            input: bytes | None = None, env: Mapping[str, str] | None = None) -> Completed:
        """Run ``argv`` in the guest (as root, in PID 1's namespaces) and wait for it."""
        pid = self.spawn(argv, input=input, env=env)
        return self.wait(pid, argv, timeout, check)

    def sh(self, script: str, **kwargs: Any) -> Completed:
        return self.run(["/bin/sh", "-c", script], **kwargs)

    def write(self, path: str, data: str | bytes, mode: int = 0o644) -> None:
        """Write a file in the guest (through the agent: small files)."""
        raw = data.encode() if isinstance(data, str) else data
        self.run(["/bin/sh", "-c", f'mkdir -p "$(dirname "$1")" && cat > "$1" && '
                  f'chmod {mode:o} "$1"', "sh", path], input=raw)

    def read(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).returncode == 0

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 120,
                 pause: float = 0.5) -> float:
        """Poll ``check`` until true; returns how long it took."""
        started = time.monotonic()
        while not check():
            if time.monotonic() - started > timeout:
                raise SystemTestError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(pause)
        return time.monotonic() - started

    # drives ----------------------------------------------------------------------------------

    def plug(self, ident: str, image: Path, *, bytes_per_second: int | None = None) -> None:
        """Plug ``image`` in as a USB stick (usb-storage on the xHCI bus), optionally
        throttled so that a copy onto it lasts long enough to watch or interrupt."""
        assert self.qmp is not None
        node: dict[str, Any] = {"driver": "raw",
                                "file": {"driver": "file", "filename": str(image)}}
        if bytes_per_second is not None:
            self.qmp.command("object-add", **{"qom-type": "throttle-group",
                                              "id": f"{ident}-tg",
                                              "limits": {"bps-write": bytes_per_second}})
            node = {"driver": "throttle", "throttle-group": f"{ident}-tg", "file": node}
        self.qmp.command("blockdev-add", **{"node-name": ident, **node})
        self.qmp.command("device_add", driver="usb-storage", bus="xhci.0", drive=ident,
                         id=ident, serial=ident, removable=True)
        self.plugged[ident] = Plugged(ident, image, bytes_per_second is not None)

    def unthrottle(self, ident: str) -> None:
        """Lift the throttle of a plugged drive (0: no limit)."""
        assert self.qmp is not None
        self.qmp.command("qom-set", path=f"{ident}-tg", property="limits",
                         value={"bps-write": 0})

    def unplug(self, ident: str, timeout: float = 30) -> None:
        """Pull the USB stick out (no warning to the guest, as a person would)."""
        assert self.qmp is not None
        drive = self.plugged.pop(ident)
        self.qmp.command("device_del", id=ident)
        deadline = time.monotonic() + timeout
        while any(p.get("name") == ident
                  for p in self.qmp.command("qom-list", path="/machine/peripheral")):
            if time.monotonic() > deadline:
                raise SystemTestError(f"device {ident} was not removed")
            time.sleep(0.1)
        while True:
            try:
                self.qmp.command("blockdev-del", **{"node-name": ident})
                break
            except QMPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        if drive.throttled:
            self.qmp.command("object-del", id=f"{ident}-tg")

    # power -------------------------------------------------------------------------------------

    def stop(self, grace: float = 60) -> None:
        """Power off (systemctl poweroff through the agent), then quit through QMP, then
        SIGKILL; QEMU is always reaped."""
        if self.process is None:
            return
        with step(f"power off {self.name}"):
            if self.process.poll() is None and self.agent is not None:
                with contextlib.suppress(Exception):
                    self.run(["systemctl", "poweroff", "--no-block"], timeout=10)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=grace)
            if self.process.poll() is None and self.qmp is not None:
                with contextlib.suppress(Exception):
                    self.qmp.command("quit", timeout=5)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=10)
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        for channel in (self.qmp, self.agent):
            if channel is not None:
                channel.close()
        self._qemu_log.close()
        self.process = None


@contextlib.contextmanager
def booted(image: Image, *, share: Path | None = None, smtp_port: int | None = None,
           name: str = "guest", keep_logs: Path | None = None) -> Iterator[Guest]:
    """A booted guest; powered off afterwards whatever happened, its work directory
    (sockets, logs) removed. ``keep_logs``: copy the serial and QEMU logs there."""
    workdir = Path(tempfile.mkdtemp(prefix="phobos-qemu-", dir="/var/tmp"))
    guest = Guest(image, workdir, share=share, smtp_port=smtp_port, name=name)
    try:
        guest.start()
        yield guest
    finally:
        try:
            guest.stop()
        finally:
            if keep_logs is not None:
                keep_logs.mkdir(parents=True, exist_ok=True)
                for log in ("serial.log", "qemu.log"):
                    with contextlib.suppress(OSError):
                        shutil.copy2(workdir / log, keep_logs / f"{name}-{log}")
            shutil.rmtree(workdir, ignore_errors=True)


# --- the mail relay ---------------------------------------------------------------------------


def relay(host: str, port: int) -> None:
    """Run by QEMU's ``guestfwd=...-cmd:`` once per guest connection, with the guest's
    socket as stdin and stdout: copy bytes both ways to ``host:port``."""
    import threading

    upstream = socket.create_connection((host, port), timeout=60)
    upstream.settimeout(None)

    def to_host() -> None:
        while data := os.read(0, 65536):
            upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    threading.Thread(target=to_host, daemon=True).start()
    while data := upstream.recv(65536):
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]


if __name__ == "__main__" and sys.argv[1:2] == ["relay"]:
    relay(sys.argv[2], int(sys.argv[3]))
