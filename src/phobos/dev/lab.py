"""A lab of real "remote hosts" on this machine, for `phobos demo`, tests and benchmarks.

Every host is a network namespace with its own ``/usr/sbin/sshd -D`` (own host key, own
authorized_keys). phobos runs in a *client* namespace linked to each host by a veth
pair on a private /30: client 10.231.N.1, host 10.231.N.2. Both ends live in
namespaces the lab creates, so no address or interface ever appears in the machine's
own namespace, and two labs never collide. The "remote" files are ordinary directories
of this machine, served by the host's sshd, so rsync, ssh and rrsync run for real.

:meth:`Lab.close` stops every sshd, kills anything left in the lab's namespaces and
deletes them (which deletes the veths). Namespaces of a lab whose process died are
removed by the next lab. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from phobos.core import proc
from phobos.errors import PhobosError, ToolMissing

SSHD = "/usr/sbin/sshd"
RRSYNC = "/usr/bin/rrsync"
TOOLS = ("ip", "tc", "ssh", "ssh-keygen", "ssh-keyscan", "rsync", SSHD, RRSYNC)
PREFIX = "phb"
_OURS = re.compile(rf"^{PREFIX}(\d+)x\d+[ch]\d*$")
_counter = 0


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None and not os.access(t, os.X_OK)]


def sh(*argv: str, check: bool = True, timeout: float = 60) -> proc.Result:
    return proc.run(argv, capture=True, check=check, timeout=timeout)


def fingerprint(public_key: Path) -> str:
    """``SHA256:...`` of a public key file, from ssh-keygen."""
    return sh("ssh-keygen", "-l", "-f", str(public_key)).stdout.split()[1]


@dataclass
class RemoteHost:
    """One remote host: namespace ``ns``, sshd on ``address``:22, files below ``srv``."""

    name: str
    index: int
    ns: str
    dir: Path
    sshd: proc.Child | None = None

    @property
    def address(self) -> str:
        return f"10.231.{self.index}.2"

    @property
    def srv(self) -> Path:
        """The host's served tree (the rrsync root of restricted keys)."""
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

    def authorize_as_root(self, line: str) -> None:
        """Authorize ``line`` as a real host would: this host's filesystem is
        :attr:`srv`, so the rrsync root in ``line`` (a path on the host, ``/`` by
        default) is taken below it. phobos then pulls ``/etc`` of this host as it
        would pull a real host's ``/etc``."""
        def below_srv(match: re.Match[str]) -> str:
            return f"{match.group(1)}{self.srv}{match.group(2).rstrip('/')}"

        self.authorize(re.sub(r"(rrsync -ro )(/[^\s\"]*)", below_srv, line, count=1))

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
            Subsystem sftp internal-sftp
            ClientAliveInterval 5
            ClientAliveCountMax 3
            LogLevel VERBOSE
            """))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.log.write_text("")
        log = self.log.open("a")

        def write(_stream: str, line: str) -> None:
            log.write(line + "\n")
            log.flush()

        self.sshd = proc.start(["ip", "netns", "exec", self.ns, SSHD, "-D", "-e", "-f",
                                str(config)], sink=write)
        self._wait_listening()

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while "Server listening" not in self.log.read_text(errors="replace"):
            assert self.sshd is not None
            if self.sshd.poll() is not None or time.monotonic() > deadline:
                raise PhobosError(f"sshd of lab host {self.name} did not start: "
                                  + self.log.read_text(errors="replace"))
            time.sleep(0.02)

    def stop(self) -> None:
        if self.sshd is not None:
            self.sshd.stop()
            self.sshd = None
        _kill_all_in(self.ns)  # per-connection sshd children

    def shape(self, rate: str = "40mbit") -> None:
        """Rate-limit what the host sends (a pull's data) with tc tbf."""
        sh("ip", "netns", "exec", self.ns, "tc", "qdisc", "add", "dev", "eth0", "root",
           "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms")


@dataclass
class Lab:
    """A client namespace (where phobos runs) and remote hosts named ``names``."""

    root: Path
    names: tuple[str, ...]
    client: str = ""
    hosts: list[RemoteHost] = field(default_factory=list)

    def __post_init__(self) -> None:
        global _counter
        missing = missing_tools()
        if missing:
            raise ToolMissing(f"the host lab needs {', '.join(missing)}",
                              "install openssh-server openssh-client rsync iproute2 "
                              "(./scripts/setup does)")
        if os.geteuid() != 0:
            raise PhobosError("the host lab needs root (network namespaces)")
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
        for index, name in enumerate(self.names, start=1):
            host = RemoteHost(name=name, index=index, ns=f"{tag}h{index}",
                              dir=self.root / f"remote-{name}")
            self.hosts.append(host)
            _link(self.client, host)
            host.srv.mkdir(parents=True)
            host.new_host_key()
            host.authorize()
            host.start()

    def host(self, name: str) -> RemoteHost:
        return next(h for h in self.hosts if h.name == name)

    def in_client(self, *argv: str) -> list[str]:
        """``argv`` run inside the client namespace, where the hosts are reachable."""
        return ["ip", "netns", "exec", self.client, *argv]

    def phobos_argv(self, config: Path, *args: str) -> list[str]:
        return self.in_client(sys.executable, "-m", "phobos", "-c", str(config), *args)

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
    """Processes in ``ns`` other than ourselves (the demo joins the client namespace)."""
    pids = [int(p) for p in sh("ip", "netns", "pids", ns, check=False).stdout.split()]
    return [pid for pid in pids if pid != os.getpid()]


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
    """Remove namespaces left by labs whose process is gone (a killed run)."""
    for ns in namespaces():
        match = _OURS.match(ns)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            _delete_namespace(ns)
