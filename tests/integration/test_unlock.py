"""`phobos unlock HOST` against a real sshd in its own network namespace (the remote-host
lab), phobos running in the lab's client namespace. The login's forced command is a
small script standing in for cryptroot-unlock: it prints what cryptroot-unlock prints in
non-interactive mode, reads stdin to EOF and succeeds only for the exact passphrase bytes
(no trailing newline, as cryptroot-unlock hands them to cryptsetup unchanged); after three
wrong ones it gives up like the initramfs does."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from remotehost import Lab, RemoteHost, sh

pytestmark = pytest.mark.root

PASSPHRASE = "correct horse battery staple"

FAKE_CRYPTROOT_UNLOCK = """#!/bin/sh
# Stands in for cryptroot-unlock (cryptsetup-initramfs, non-interactive mode).
state={state}
printf '%s\\n' "$SSH_ORIGINAL_COMMAND" > "$state/command"
if [ "$SSH_ORIGINAL_COMMAND" != cryptroot-unlock ]; then
    echo "sh: $SSH_ORIGINAL_COMMAND: not found" >&2
    exit 127
fi
echo "Please unlock disk cryptroot"
got=$(sha256sum | cut -d' ' -f1)
if [ "$got" = "{digest}" ]; then
    echo "cryptsetup: cryptroot set up successfully" >&2
    exit 0
fi
tries=$(( $(cat "$state/tries" 2>/dev/null || echo 0) + 1 ))
echo "$tries" > "$state/tries"
if [ "$tries" -ge 3 ]; then
    echo "cryptsetup: maximum number of tries exceeded for cryptroot" >&2
    exit 1
fi
echo "cryptsetup: cryptsetup failed, bad password or options?" >&2
exit 1
"""


@dataclass
class Initramfs:
    """The lab host playing the NAS's initramfs, and the admin's key and known_hosts."""

    lab: Lab
    host: RemoteHost
    admin: Path

    @property
    def key(self) -> Path:
        return self.admin / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.admin / "initramfs_known_hosts"

    @property
    def state(self) -> Path:
        return self.host.dir / "state"

    @property
    def alias(self) -> str:
        return f"{self.host.address}-initramfs"

    def public_key(self) -> str:
        return self.key.with_suffix(".pub").read_text().strip()

    def forced(self) -> None:
        """Logins run the stand-in cryptroot-unlock, whatever the client asks."""
        self.host.authorize(f'command="{self.host.dir / "cryptroot-unlock"}",restrict '
                            f"{self.public_key()}")

    def argv(self, *args: str, port: str | None = "22") -> list[str]:
        ports = ["--port", port] if port else []
        return self.lab.argv("unlock", self.host.address, *ports, "--known-hosts",
                             str(self.known_hosts), "--identity", str(self.key), *args)

    def unlock(self, *args: str, port: str | None = "22",
               passphrase: str | None = PASSPHRASE) -> subprocess.CompletedProcess[str]:
        extra = list(args)
        if passphrase is not None:
            source = self.admin / "passphrase"
            source.write_text(passphrase + "\n")
            source.chmod(0o600)
            extra += ["--passphrase-command", f"cat {source}"]
        return subprocess.run(self.argv(*extra, port=port), capture_output=True, text=True,
                              timeout=120, env=phobos_env(), stdin=subprocess.DEVNULL)

    def pin(self) -> None:
        out = self.unlock("--pin", "--fingerprint", self.host.fingerprint(), passphrase=None)
        assert out.returncode == 0, out.stderr

    def ran(self) -> str | None:
        command = self.state / "command"
        return command.read_text().strip() if command.exists() else None


def phobos_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("SSH_AUTH_SOCK", None)
    return env


@pytest.fixture
def initramfs(tmp_path: Path) -> Iterator[Initramfs]:
    with Lab(tmp_path, 1) as lab:
        host = lab.hosts[0]
        admin = tmp_path / "admin"
        admin.mkdir(mode=0o700)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "admin@laptop", "-f",
           str(admin / "id_ed25519"))
        digest = hashlib.sha256(PASSPHRASE.encode()).hexdigest()
        script = host.dir / "cryptroot-unlock"
        script.write_text(FAKE_CRYPTROOT_UNLOCK.format(state=host.dir / "state",
                                                       digest=digest))
        script.chmod(0o755)
        (host.dir / "state").mkdir()
        fake = Initramfs(lab=lab, host=host, admin=admin)
        fake.forced()
        yield fake


def test_pin_then_unlock(initramfs: Initramfs) -> None:
    fake = initramfs
    refused = fake.unlock("--pin", passphrase=None)
    assert refused.returncode == 2 and "without confirmation" in refused.stderr
    assert fake.host.fingerprint() in refused.stderr  # shown before refusing
    wrong = fake.unlock("--pin", "--fingerprint", "SHA256:" + "A" * 43, passphrase=None)
    assert wrong.returncode == 2 and "nothing was pinned" in wrong.stderr
    assert not fake.known_hosts.exists()

    fake.pin()
    assert fake.known_hosts.read_text().startswith(f"{fake.alias} ssh-ed25519 ")
    again = fake.unlock("--pin", "--yes", passphrase=None)
    assert again.returncode == 0 and "nothing changed" in again.stdout

    out = fake.unlock()
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"{fake.host.address}: unlocked cryptroot; the NAS boots on\n"
    assert f"{fake.host.address}: Please unlock disk cryptroot" in out.stderr
    assert "cryptroot set up successfully" in out.stderr
    assert fake.ran() == "cryptroot-unlock"
    for where in (out.stdout, out.stderr, fake.host.log.read_text()):
        assert PASSPHRASE not in where


def test_json_report(initramfs: Initramfs) -> None:
    initramfs.pin()
    out = initramfs.unlock("--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"host": initramfs.host.address, "port": 22,
                                      "ok": True, "unlocked": ["cryptroot"],
                                      "nothing_left": False}


def test_a_wrong_passphrase_and_then_no_tries_left(initramfs: Initramfs) -> None:
    initramfs.pin()
    first = initramfs.unlock(passphrase="wrong horse")
    assert first.returncode == 1
    assert "the passphrase was refused (cryptsetup: cryptsetup failed, bad password or " \
        "options?)" in first.stderr
    assert "run phobos unlock again" in first.stderr
    second = initramfs.unlock(passphrase=PASSPHRASE.upper())
    assert second.returncode == 1 and "refused" in second.stderr
    last = initramfs.unlock(passphrase="still wrong")
    assert last.returncode == 1 and "no tries are left" in last.stderr
    assert "reboot the NAS" in last.stderr


def test_an_unpinned_key_fails_before_the_passphrase_is_asked(initramfs: Initramfs) -> None:
    marker = initramfs.admin / "asked"
    out = subprocess.run(initramfs.argv("--passphrase-command",
                                        f"sh -c 'touch {marker}; echo {PASSPHRASE}'"),
                         capture_output=True, text=True, timeout=60, env=phobos_env(),
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 1
    assert "no host key is pinned for the initramfs" in out.stderr
    assert "--pin --fingerprint" in out.stderr and "doctor --initramfs" in out.stderr
    assert not marker.exists() and initramfs.ran() is None


def test_a_changed_host_key_is_refused_and_nothing_is_sent(initramfs: Initramfs) -> None:
    fake = initramfs
    fake.pin()
    old = fake.host.fingerprint()
    fake.host.stop()
    fake.host.new_host_key()
    fake.host.start()
    out = fake.unlock()
    assert out.returncode == 1
    assert f"offers host key {fake.host.fingerprint()}, not the pinned {old}" in out.stderr
    assert "--pin --fingerprint" in out.stderr
    assert fake.ran() is None
    # Re-pinning shows old and new, and takes the confirmed new key.
    repin = fake.unlock("--pin", "--fingerprint", fake.host.fingerprint(), passphrase=None)
    assert repin.returncode == 0 and "has CHANGED" in repin.stderr
    assert fake.unlock().returncode == 0


def test_an_unreachable_initramfs(initramfs: Initramfs) -> None:
    initramfs.pin()
    # Nothing listens on the default port 2222.
    out = initramfs.unlock("--alias", initramfs.alias, port=None)
    assert out.returncode == 1
    assert f"the initramfs of {initramfs.host.address} ({initramfs.host.address}:2222) is " \
        "unreachable: Connection refused" in out.stderr
    assert "-p in DROPBEAR_OPTIONS" in out.stderr
    initramfs.host.stop()
    down = initramfs.unlock()
    assert down.returncode == 1 and "unreachable" in down.stderr


def test_no_cryptroot_unlock_where_we_logged_in(initramfs: Initramfs) -> None:
    initramfs.pin()
    initramfs.host.authorize(initramfs.public_key())  # a shell login, no forced command
    out = initramfs.unlock()
    assert out.returncode == 1
    assert "has no cryptroot-unlock" in out.stderr
    assert "install cryptsetup-initramfs" in out.stderr


def test_a_refused_login(initramfs: Initramfs) -> None:
    initramfs.pin()
    initramfs.host.authorize()
    out = initramfs.unlock()
    assert out.returncode == 1 and "refused the login as root" in out.stderr
    assert "/etc/dropbear/initramfs/authorized_keys" in out.stderr


def test_without_a_terminal_or_command_there_is_no_way_to_ask(initramfs: Initramfs) -> None:
    initramfs.pin()
    out = initramfs.unlock(passphrase=None)
    assert out.returncode == 2 and "no terminal to ask for the passphrase" in out.stderr
    assert initramfs.ran() is None


def on_terminal(argv: list[str], answer: bytes, timeout: float = 60) -> tuple[int, bytes]:
    """Run ``argv`` on a new pseudo-terminal; type ``answer`` at the passphrase prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.execvpe(argv[0], argv, phobos_env())
    output, sent = b"", False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
            if not sent and b"Passphrase for" in output:
                os.write(fd, answer)
                sent = True
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


def test_the_passphrase_typed_at_a_terminal_prompt(initramfs: Initramfs) -> None:
    initramfs.pin()
    code, output = on_terminal(initramfs.argv(), PASSPHRASE.encode() + b"\n")
    assert code == 0, output
    assert b"unlocked cryptroot" in output
    assert PASSPHRASE.encode() not in output  # not echoed


def test_nothing_left_to_unlock_and_a_hanging_initramfs(initramfs: Initramfs) -> None:
    initramfs.pin()
    key = initramfs.public_key()
    initramfs.host.authorize(f'command="true",restrict {key}')  # all volumes unlocked
    out = initramfs.unlock()
    assert out.returncode == 0 and "nothing was waiting to be unlocked" in out.stdout
    initramfs.host.authorize(f'command="sleep 60",restrict {key}')
    started = time.monotonic()
    hung = initramfs.unlock("--timeout", "2")
    assert hung.returncode == 1 and "no answer from the initramfs within 2 seconds" in \
        hung.stderr
    assert time.monotonic() - started < 30


def test_a_missing_identity_file_is_a_usage_error(initramfs: Initramfs) -> None:
    initramfs.pin()
    initramfs.key.unlink()
    out = initramfs.unlock()
    assert out.returncode == 2 and "no such key file" in out.stderr
