"""A lab of real "remote hosts" for pull tests and the pull benchmark.

Every host is a network namespace with its own ``/usr/sbin/sshd -D`` (own host key,
own authorized_keys). phobos itself runs in a *client* namespace, linked to each host
by a veth pair on a private /30: client 10.231.N.1, host 10.231.N.2. Both ends live in
namespaces this lab creates, so no address or interface ever appears in the machine's
own namespace, and two labs (two test runs) never collide.

The "remote" files are ordinary directories of this machine: the host's sshd serves
them over the namespace link, so rsync, ssh and rrsync run for real.

:meth:`Lab.close` stops every sshd, kills anything left in the lab's namespaces and
deletes them (which deletes the veths). Namespaces of a lab whose process died are
removed by the next lab.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"
RRSYNC = "/usr/bin/rrsync"
TOOLS = ("ip", "tc", "ssh", "ssh-keygen", "ssh-keyscan", "rsync", SSHD, RRSYNC)
PREFIX = "phb"
_OURS = re.compile(rf"^{PREFIX}(\d+)x\d+[ch]\d*$")
_counter = 0


def require_tools() -> None:
    """Fail (never skip) when a tool the lab needs is missing, or we are not root."""
    missing = [t for t in TOOLS if shutil.which(t) is None and not os.access(t, os.X_OK)]
    if missing:
        pytest.fail(f"missing tools for the remote-host lab: {', '.join(missing)} "
                    "(install openssh-server openssh-client rsync iproute2: scripts/setup)")
    if os.geteuid() != 0:
        pytest.fail("the remote-host lab needs root (network namespaces, sshd)")


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=check,
                          timeout=timeout)


def fingerprint(public_key: Path) -> str:
    """``SHA256:...`` of a public key file, from ssh-keygen (the independent oracle)."""
    return sh("ssh-keygen", "-l", "-f", str(public_key)).stdout.split()[1]


@dataclass
class RemoteHost:
    """One remote host: namespace ``ns``, sshd on ``address``:22, files below ``srv``."""

    name: str
    index: int
    ns: str
    dir: Path
    sshd: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"10.231.{self.index}.2"

    @property
    def srv(self) -> Path:
        """The host's served tree (the rrsync root in restricted tests)."""
        return self.dir / "srv"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def authorized_keys(self) -> Path:
        return self.dir / "authorized_keys"

    @property
    def log(self) -> Path:
        return self.dir / "sshd.log"

    def new_host_key(self) -> None:
        """A fresh host key (as after a reinstall); restart sshd to serve it."""
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", self.name, "-f",
           str(self.host_key))

    def fingerprint(self) -> str:
        return fingerprint(self.host_key.with_suffix(".pub"))

    def authorize(self, *lines: str) -> None:
        self.authorized_keys.write_text("".join(f"{line}\n" for line in lines))

    def start(self) -> None:
        config = self.dir / "sshd_config"
        config.write_text(textwrap.dedent(f"""\
            ListenAddress {self.address}
            Port 22
            HostKey {self.host_key}
            AuthorizedKeysFile {self.authorized_keys}
            PidFile none
            UsePAM no
            StrictModes no
            PermitRootLogin prohibit-password
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            MaxStartups 50
            LogLevel VERBOSE
            """))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.log.write_text("")
        with self.log.open("ab") as log:
            self.sshd = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while "Server listening" not in self.log.read_text(errors="replace"):
            assert self.sshd is not None
            if self.sshd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd of {self.name} did not start: "
                                   + self.log.read_text(errors="replace"))
            time.sleep(0.02)

    def stop(self) -> None:
        if self.sshd is None:
            return
        self.sshd.terminate()
        try:
            self.sshd.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.sshd.kill()
            self.sshd.wait()
        self.sshd = None
        _kill_all_in(self.ns)  # per-connection sshd children

    def shape(self, rate: str = "40mbit") -> None:
        """Rate-limit what the host sends (a pull's data) with tc tbf."""
        sh("ip", "netns", "exec", self.ns, "tc", "qdisc", "add", "dev", "eth0", "root",
           "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms")


@dataclass
class Lab:
    """A client namespace (where phobos runs), ``count`` remote hosts, a phobos
    config in ``root``, holding area ``root/backup/holding``."""

    root: Path
    count: int
    client: str = ""
    hosts: list[RemoteHost] = field(default_factory=list)
    base: str = ""

    def __post_init__(self) -> None:
        global _counter
        require_tools()
        cleanup_stale()
        _counter += 1
        tag = f"{PREFIX}{os.getpid()}x{_counter}"
        self.client = f"{tag}c"
        try:
            self._create(tag)
        except BaseException:
            self.close()
            raise

    def _create(self, tag: str) -> None:
        sh("ip", "netns", "add", self.client)
        sh("ip", "-n", self.client, "link", "set", "lo", "up")
        for index in range(1, self.count + 1):
            host = RemoteHost(name=f"h{index}", index=index, ns=f"{tag}h{index}",
                              dir=self.root / f"remote-h{index}")
            self.hosts.append(host)
            _link(self.client, host)
            host.srv.mkdir(parents=True)
            host.new_host_key()
            host.authorize()
            host.start()
        self.holding.mkdir(parents=True)
        self.base = textwrap.dedent(f"""\
            [paths]
            state = "{self.root}/state"
            run = "{self.root}/run"
            log = "{self.root}/log"
            keys = "{self.root}/keys"

            [storage]
            root = "{self.root}/backup"
            holding = "{self.holding}"
            """)
        self.write_config("")

    # --- config and CLI -------------------------------------------------------------

    @property
    def config(self) -> Path:
        return self.root / "phobos.toml"

    @property
    def holding(self) -> Path:
        return self.root / "backup" / "holding"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    def write_config(self, body: str) -> None:
        self.config.write_text(self.base + "\n" + textwrap.dedent(body))

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.client, sys.executable, "-m", "phobos", "-c",
                str(self.config), *args]

    def phobos(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run the real phobos CLI inside the client namespace."""
        return subprocess.run(self.argv(*args), capture_output=True, text=True,
                              timeout=timeout, env=_env(), stdin=subprocess.DEVNULL)

    def start_phobos(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env(),
                                stdin=subprocess.DEVNULL)

    def in_client(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.client, *argv, check=check)

    def add_host(self, host: RemoteHost, *paths: str, restricted: bool = True,
                 root: Path | None = None) -> dict[str, Any]:
        """`phobos host add` (pins the key, --yes) and authorize the pull key on the host:
        with the printed rrsync line, or (``restricted=False``) without any restriction."""
        root = root or host.srv
        args = ["host", "add", host.name, host.address, "--root", str(root), "--yes",
                "--json"]
        for path in paths:
            args += ["--path", path]
        out = self.phobos(*args)
        assert out.returncode == 0, out.stderr
        added: dict[str, Any] = json.loads(out.stdout)
        host.authorize(added["authorized_keys"] if restricted else added["public_key"])
        return added

    def holding_copy(self, host: RemoteHost, remote_path: Path | str) -> Path:
        """Where ``remote_path`` of ``host`` lands in the holding area."""
        return self.holding / host.name / str(remote_path).lstrip("/")

    # --- teardown -------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        return [self.client, *(h.ns for h in self.hosts)]

    def close(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(Exception):
                host.stop()
        for ns in self.namespaces():
            _delete_namespace(ns)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("PHOBOS_CONFIG", None)
    return env


def _link(client: str, host: RemoteHost) -> None:
    """veth pair created directly inside the two namespaces: client cN <-> host eth0."""
    sh("ip", "netns", "add", host.ns)
    sh("ip", "link", "add", f"c{host.index}", "netns", client, "type", "veth",
       "peer", "name", "eth0", "netns", host.ns)
    sh("ip", "-n", client, "addr", "add", f"10.231.{host.index}.1/30", "dev",
       f"c{host.index}")
    sh("ip", "-n", host.ns, "addr", "add", f"{host.address}/30", "dev", "eth0")
    for ns, dev in ((client, f"c{host.index}"), (host.ns, "eth0"), (host.ns, "lo")):
        sh("ip", "-n", ns, "link", "set", dev, "up")


def _pids_in(ns: str) -> list[int]:
    out = sh("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in out.stdout.split()]


def _kill_all_in(ns: str) -> None:
    for _ in range(50):
        pids = _pids_in(ns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _delete_namespace(ns: str) -> None:
    if ns not in namespaces():
        return
    _kill_all_in(ns)
    sh("ip", "netns", "del", ns, check=False)


def namespaces() -> list[str]:
    out = sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def cleanup_stale() -> None:
    """Remove namespaces left by labs whose process is gone (a killed test run)."""
    for ns in namespaces():
        match = _OURS.match(ns)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _delete_namespace(ns)


@pytest.fixture
def lab3(tmp_path: Path) -> Any:
    with Lab(tmp_path, 3) as lab:
        yield lab


@pytest.fixture
def lab1(tmp_path: Path) -> Any:
    with Lab(tmp_path, 1) as lab:
        yield lab
