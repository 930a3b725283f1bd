"""``phobos demo``: a home NAS's backup day, for real, in a throw-away sandbox.

As root it starts two "remote hosts" (luv and chew: sshd in network namespaces, see
:mod:`phobos.dev.lab`), pins their host keys with ``phobos host add`` and authorizes the
printed read-only rrsync key, creates a Borg repository, two file-backed "drives"
(loop devices holding ext4; this machine has no device-mapper, so they use
``unlock = "none"`` — LUKS unlocking is proven in the QEMU system test), an SMTP sink
on 127.0.0.1 and an LED that writes its colour to a file. Then it runs a NAS's backup
day through ``phobos`` processes exactly as timers would: pull both hosts in parallel,
archive, a check slice, plugging drive A in (``phobos drive attached``), finding and
restoring a file (from the repository and from drive A's copy), and a job that fails —
the LED turns red and a mail arrives. Finally it prints ``phobos status``,
``schedule`` and ``drive list`` and says where the sandbox is.

Without root there are no namespaces or loop devices: the demo says so and runs a local
fallback (the "pulls" copy local directories with rsync; no drive). Everything the demo
starts is stopped and removed on the way out, also after Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phobos.core import proc
from phobos.errors import PhobosError

PASSPHRASE = "demo passphrase: correct horse battery staple"


def _headline(text: str) -> None:
    sys.stderr.write(f"==> {text}\n")
    sys.stderr.flush()


def _show(_stream: str, line: str) -> None:
    sys.stderr.write(f"    {line}\n")


@dataclass
class Sandbox:
    """Everything the demo made, so that :meth:`close` can undo it."""

    root: Path
    keep: bool
    loops: list[str] = field(default_factory=list)
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "phobos.toml"

    def phobos(self, *args: str, quiet: bool = False) -> proc.Result:
        """Run the real CLI as a separate process (in the lab's network, like us)."""
        argv = [sys.executable, "-m", "phobos", "-c", str(self.config), *args]
        return proc.run(argv, sink=None if quiet else _show, capture=quiet, check=False)

    def close(self) -> None:
        for cleanup in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                cleanup()
        for device in self.loops:
            proc.run(["losetup", "-d", device], check=False)
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def run_demo(directory: Path | None) -> int:
    """Run the demo; 0 when every step behaved as the demo expects."""
    root = Path(tempfile.mkdtemp(prefix="phobos-demo-")) if directory is None else directory
    root.mkdir(parents=True, exist_ok=True)
    box = Sandbox(root=root.resolve(), keep=directory is not None)
    started = time.monotonic()
    _headline(f"sandbox: {box.root}")
    signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: clean up, then leave
    try:
        ok = _day(box)
    except KeyboardInterrupt:
        _headline("interrupted: cleaning up")
        ok = False
    finally:
        _headline("stopping hosts, SMTP sink, namespace; detaching loop devices")
        box.close()
    _headline(f"done in {time.monotonic() - started:.0f}s; "
         + (f"sandbox kept at {box.root} (config: {box.config})" if box.keep
            else "sandbox removed (use --dir DIR to keep it)"))
    return 0 if ok else 1


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _day(box: Sandbox) -> bool:
    as_root = os.geteuid() == 0
    if not as_root:
        _headline("not root: no network namespaces or loop devices. Local fallback: the pulls "
             "copy local directories, and there is no drive. Run as root for the real thing.")
    hosts = _start_hosts(box) if as_root else {}
    smtp = _smtp_sink(box)  # after joining the lab's network: phobos mails 127.0.0.1 there
    _write_config(box, hosts, smtp.port, drives={})
    if hosts:
        _pin_hosts(box, hosts)
    drives = _make_drives(box) if as_root else {}
    _write_config(box, hosts, smtp.port, drives)
    _make_local_data(box.root)
    _step(box, "create the Borg repository", "repo", "init", "main")
    checks = [
        _expect(box, "pull both hosts in parallel (the rsync strand)", 0,
                "run", "pull-hosts", "--trigger", "timer"),
        _expect(box, "archive the holding area and local paths with Borg, then prune",
                0, "run", "nightly", "--trigger", "timer"),
        _expect(box, "a time-boxed check slice (resumes where the last one stopped)", 0,
                "run", "check", "--trigger", "timer"),
    ]
    if drives:
        _plug(box, "ext-a")
        checks.append(_expect(box, "plug in drive A: phobos drive attached finds it and "
                              "syncs the repo under borg with-lock", 0,
                              "drive", "attached", "--uuid", drives["ext-a"]))
        checks.append(_expect(box, "the LED says: safe to remove", 0, "led", "show"))
    if hosts:
        checks += _find_and_restore(box, from_drive="ext-a" if drives else None)
    checks.append(_expect(box, "a job that fails: LED red, mail to the admin", 1,
                          "run", "sync-nuhc", "--trigger", "timer"))
    checks.append(_mail_arrived(smtp))
    for verb in (["status"], ["schedule"], ["led", "show"], *([["drive", "list"]]
                                                            if drives else [])):
        _headline("phobos " + " ".join(verb))
        box.phobos(*verb)
    return all(checks)


def _find_and_restore(box: Sandbox, from_drive: str | None) -> list[bool]:
    """Getting a file back: which archives hold luv's /etc/fstab, then restore it (and,
    with a drive plugged in, the same file from the drive's copy)."""
    restored = str(box.root / "restore")
    checks = [
        _expect(box, "which archives hold a file", 0, "find", "luv:/etc/fstab"),
        _expect(box, "restore it, keeping its path below the target", 0,
                "restore", "luv:/etc/fstab", "--to", restored),
    ]
    if from_drive is not None:
        checks.append(_expect(box, f"the same from drive {from_drive}'s copy (mounted "
                              "read-only, then unmounted)", 0, "restore", "luv:/etc/fstab",
                              "--to", f"{restored}-{from_drive}", "--from-drive", from_drive))
    return checks


def _step(box: Sandbox, title: str, *args: str) -> None:
    _headline(title)
    result = box.phobos(*args)
    if result.returncode != 0:
        raise PhobosError(f"demo step failed: phobos {' '.join(args)} "
                          f"(exit {result.returncode})")


def _expect(box: Sandbox, title: str, code: int, *args: str) -> bool:
    _headline(f"{title}: phobos {' '.join(args)}")
    started = time.monotonic()
    result = box.phobos(*args)
    verdict = "as expected" if result.returncode == code else f"UNEXPECTED (wanted {code})"
    _headline(f"   exit {result.returncode} after {time.monotonic() - started:.1f}s: {verdict}")
    return result.returncode == code


# --- parts ------------------------------------------------------------------------------


@dataclass
class _Smtp:
    port: int
    messages: list[Any]


def _smtp_sink(box: Sandbox) -> _Smtp:
    """An SMTP server on 127.0.0.1 that keeps what it receives (the admin's mailbox)."""
    import socket

    from aiosmtpd.controller import Controller

    class Keep:
        def __init__(self) -> None:
            self.messages: list[Any] = []

        async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
            self.messages.append(envelope.content)
            return "250 kept"

    with socket.socket() as probe:  # aiosmtpd cannot pick a free port itself
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Keep()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    box.cleanups.append(controller.stop)
    return _Smtp(port=port, messages=handler.messages)


def _mail_arrived(smtp: _Smtp) -> bool:
    deadline = time.monotonic() + 10
    while not smtp.messages and time.monotonic() < deadline:
        time.sleep(0.1)
    for raw in smtp.messages:
        subject = next((line for line in raw.decode(errors="replace").splitlines()
                        if line.startswith("Subject:")), "")
        _headline(f"mail in the admin's mailbox: {subject}")
    return bool(smtp.messages)


def _start_hosts(box: Sandbox) -> dict[str, Any]:
    from phobos.dev.lab import Lab

    _headline("starting remote hosts luv and chew (sshd, each in its own network namespace)")
    lab = Lab(root=box.root / "lab", names=("luv", "chew"))
    box.cleanups.append(lab.close)
    # This process joins the client namespace: the jobs it starts reach the hosts, and
    # the SMTP sink it starts next listens on the 127.0.0.1 the jobs see.
    _join_network_namespace(Path("/run/netns") / lab.client)
    for host in lab.hosts:  # each host's filesystem is its srv directory
        for sub, count in (("etc", 20), ("home/user", 60)):
            folder = host.srv / sub
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                (folder / f"{host.name}-{index}.txt").write_text(
                    f"{host.name} file {index}\n" * (index + 1))
        (host.srv / "etc" / "hostname").write_text(f"{host.name}\n")
        (host.srv / "etc" / "fstab").write_text(
            f"# /etc/fstab of {host.name}\nUUID=0b4c6e4a / ext4 errors=remount-ro 0 1\n")
    return {host.name: host for host in lab.hosts}


def _join_network_namespace(path: Path) -> None:
    import ctypes

    clone_newnet = 0x40000000
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, clone_newnet) != 0:
            raise PhobosError(f"demo: cannot join {path}: "
                              f"{os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def _pin_hosts(box: Sandbox, hosts: dict[str, Any]) -> None:
    for name, host in hosts.items():
        _headline(f"phobos host add {name}: pin its host key, print the read-only key line")
        result = box.phobos("host", "add", name, host.address, "--path", "/etc",
                            "--path", "/home", "--yes", "--json", quiet=True)
        if result.returncode != 0:
            raise PhobosError(f"demo: phobos host add {name} failed: {result.tail}")
        added = json.loads(result.stdout)
        host.authorize_as_root(added["authorized_keys"])
        _show("stdout", f"{name}: {added['authorized_keys'][:70]}...")


def _make_drives(box: Sandbox) -> dict[str, str]:
    """Two 64 MiB ext4 images; drive name -> filesystem UUID. Neither is plugged in yet."""
    _headline("making two file-backed drives (ext4 images; plugged in later as loop devices)")
    uuids = {}
    for name in ("ext-a", "ext-b"):
        image = box.root / f"{name}.img"
        with image.open("wb") as handle:
            handle.truncate(64 * 1024 * 1024)
        proc.run(["mkfs.ext4", "-q", "-L", "extbackup", str(image)])
        uuids[name] = proc.run(["blkid", "-p", "-s", "UUID", "-o", "value", str(image)],
                               capture=True).stdout.strip()
    box.cleanups.append(lambda: _destroy_namespace(box))
    return uuids


def _plug(box: Sandbox, name: str) -> None:
    """Plug a drive in: attach its image as a loop device."""
    device = proc.run(["losetup", "--find", "--show", str(box.root / f"{name}.img")],
                      capture=True).stdout.strip()
    box.loops.append(device)
    _headline(f"drive {name} plugged in as {device}")


def _destroy_namespace(box: Sandbox) -> None:
    box.phobos("ns", "destroy", "--force", quiet=True)


def _make_local_data(root: Path) -> None:
    for index in range(30):
        path = root / "local" / "etc" / f"conf{index}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"setting {index}\n")


def _write_config(box: Sandbox, hosts: dict[str, Any], smtp_port: int,
                  drives: dict[str, str]) -> None:
    root = box.root
    (root / "keys").mkdir(exist_ok=True)
    passfile = root / "keys" / "borg.pass"
    passfile.write_text(PASSPHRASE + "\n")
    passfile.chmod(0o600)
    (root / "backup" / "holding").mkdir(parents=True, exist_ok=True)
    text = textwrap.dedent(f"""\
        # phobos demo config: everything lives under {root}
        [paths]
        state = "{root}/state"
        run = "{root}/run"
        log = "{root}/log"
        keys = "{root}/keys"

        [storage]
        root = "{root}/backup"
        holding = "{root}/backup/holding"

        [repos.main]
        path = "{root}/backup/borg"
        passphrase_file = "{passfile}"
        base_dir = "{root}/borg-base"

        [notify.led]
        driver = "file"
        path = "{root}/led"

        [notify.email]
        to = ["admin@nas.example"]
        host = "127.0.0.1"
        port = {smtp_port}
        """)
    text += _hosts_and_pulls(root, hosts)
    text += textwrap.dedent(f"""
        [jobs.nightly]
        kind = "archive"
        description = "the nightly 03:00 Borg run"
        repo = "main"
        sources = ["{root}/backup/holding", "{root}/local/etc"]
        keep = {{ daily = 7, weekly = 4, monthly = 12 }}
        schedule = "*-*-* 03:00"

        [jobs.check]
        kind = "check"
        repo = "main"
        max_duration = "2s"
        schedule = "Sun *-*-* 07:00"
        estimate = "5h30m"

        [jobs.sync-nuhc]
        kind = "command"
        description = "the 15:00 sync-nuhc, failing today"
        argv = ["sh", "-c", "echo 'connecting to nuhc'; echo 'nuhc: No route' >&2; exit 12"]
        schedule = "*-*-* 15:00"
        """)
    text += _drives(drives)
    box.config.write_text(text)


def _hosts_and_pulls(root: Path, hosts: dict[str, Any]) -> str:
    if not hosts:  # the local fallback: "pulls" copy local directories
        for name in ("luv", "chew"):
            (root / "fallback" / name / "etc").mkdir(parents=True, exist_ok=True)
            (root / "fallback" / name / "etc" / "hostname").write_text(name + "\n")
        return textwrap.dedent(f"""
            [jobs.pull-hosts]
            kind = "command"
            description = "local fallback for the pulls (not root: no sshd hosts)"
            argv = ["rsync", "-a", "--delete", "{root}/fallback/", "{root}/backup/holding/"]
            writes = ["storage"]
            schedule = "*-*-* 02:00"
            """)
    text = ""
    for name, host in hosts.items():
        text += textwrap.dedent(f"""
            [hosts.{name}]
            address = "{host.address}"
            paths = ["/etc", "/home"]
            rrsync_root = "/"
            """)
    return text + textwrap.dedent(f"""
        [jobs.pull-hosts]
        kind = "pull"
        description = "backup-luv and backup-chew, in parallel"
        hosts = {json.dumps(list(hosts))}
        max_parallel = 2
        schedule = "*-*-* 02:00"
        """)


def _drives(drives: dict[str, str]) -> str:
    if not drives:
        return ""
    text = ""
    for name, uuid in drives.items():
        text += textwrap.dedent(f"""
            [drives.{name}]
            luks_uuid = "{uuid}"
            unlock = "none"
            """)
    return text + textwrap.dedent(f"""
        [jobs.offsite]
        kind = "drive-sync"
        description = "the monthly off-site strand"
        repo = "main"
        drives = {json.dumps(list(drives))}
        """)
