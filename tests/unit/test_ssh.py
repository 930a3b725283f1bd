"""ssh as phobos runs it: endpoints and argv, host-key fingerprints, keyscan parsing and
pinning in known_hosts, and the diagnosis of ssh's failures into typed errors."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest

from phobos.tools import ssh
from phobos.tools.errors import (
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    LoginRefused,
    SshFailure,
)
from phobos.tools.ssh import Endpoint, HostKey

KEYS = Path("/etc/phobos/keys")
EP = Endpoint(name="luv", address="luv.example.org", port=22, user="root",
              identity=KEYS / "pull_ed25519", known_hosts=KEYS / "known_hosts")


def _keypair(tmp_path: Path, name: str = "k") -> tuple[HostKey, str]:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True)
    kind, blob = path.with_suffix(".pub").read_text().split()[:2]
    oracle = subprocess.run(["ssh-keygen", "-l", "-f", str(path.with_suffix(".pub"))],
                            capture_output=True, text=True, check=True).stdout.split()[1]
    return HostKey(kind, blob), oracle


CHANGED = """\
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!
Someone could be eavesdropping on you right now (man-in-the-middle attack)!
It is also possible that a host key has just been changed.
The fingerprint for the ED25519 key sent by the remote host is
SHA256:YbVAuE0BPO9gPBz4ndK85eLDcuno+WPVUQ2FzM2pfwo.
Please contact your system administrator.
Add correct host key in /etc/phobos/keys/known_hosts to get rid of this message.
Offending ED25519 key in /etc/phobos/keys/known_hosts:6
  remove with:
  ssh-keygen -f "/etc/phobos/keys/known_hosts" -R "luv"
Host key for luv has changed and you have requested strict checking.
Host key verification failed."""


def _tail(text: str) -> list[str]:
    return [f"stderr: {line}" for line in text.splitlines()]


def test_endpoint_login_and_where() -> None:
    assert EP.login == "root@luv.example.org"
    assert EP.where == "luv.example.org:22"
    v6 = Endpoint(name="v", address="fd00::2", port=2200, identity=KEYS, known_hosts=KEYS)
    assert (v6.login, v6.where) == ("root@[fd00::2]", "[fd00::2]:2200")


def test_ssh_argv_ends_options_before_the_address() -> None:
    argv = ssh.ssh_argv(EP, "true")
    assert argv[:3] == ("ssh", "-p", "22")
    assert argv[-6:] == ("-T", "-l", "root", "--", "luv.example.org", "true")


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    key, oracle = _keypair(tmp_path)
    assert key.fingerprint == oracle
    assert key.label == "ED25519"
    assert key.describe() == f"{oracle} (ED25519)"


def test_labels() -> None:
    assert HostKey("ecdsa-sha2-nistp256", "AAAA").label == "ECDSA"
    assert HostKey("ssh-rsa", "AAAA").label == "RSA"


def test_parse_keyscan_output() -> None:
    blob = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + bytes(36)).decode()
    text = (f"# 10.0.0.2:22 SSH-2.0-OpenSSH_9.2p1\n10.0.0.2 ssh-ed25519 {blob}\n"
            f"10.0.0.2 ssh-ed25519 {blob}\n10.0.0.2 ssh-rsa not*base64\n")
    keys = ssh.parse_keys(text)
    assert keys == [HostKey("ssh-ed25519", blob)]
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    assert keys[0].fingerprint == "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def test_pin_replaces_only_that_hosts_keys(tmp_path: Path) -> None:
    known = tmp_path / "keys" / "known_hosts"
    a, _ = _keypair(tmp_path, "a")
    b, _ = _keypair(tmp_path, "b")
    c, _ = _keypair(tmp_path, "c")
    assert ssh.pinned(known, "luv") == []
    ssh.pin(known, "luv", [a])
    ssh.pin(known, "chew", [b])
    assert ssh.pinned(known, "luv") == [a]
    ssh.pin(known, "luv", [c])
    assert ssh.pinned(known, "luv") == [c]
    assert ssh.pinned(known, "chew") == [b]
    assert ssh.pinned(known, "lu") == []
    assert oct(known.stat().st_mode & 0o777) == "0o644"
    assert oct(known.parent.stat().st_mode & 0o777) == "0o700"
    assert not [p for p in known.parent.iterdir() if p.name.endswith(".tmp")]


def test_changed_key_names_the_new_fingerprint_and_the_rekey_command() -> None:
    error = ssh.diagnose(_tail(CHANGED), EP)
    assert isinstance(error, HostKeyChanged)
    assert "has CHANGED" in error.message
    assert "SHA256:YbVAuE0BPO9gPBz4ndK85eLDcuno+WPVUQ2FzM2pfwo" in error.message
    assert error.hint is not None and "phobos host rekey luv" in error.hint
    assert "ssh-keygen -R" not in error.hint  # never the blind way


@pytest.mark.parametrize(("stderr", "kind", "words"), [
    ("No ED25519 host key is known for luv and you have requested strict checking.\n"
     "Host key verification failed.", HostKeyUnknown, "no host key is pinned"),
    ("root@10.0.0.2: Permission denied (publickey).", LoginRefused, "refused"),
    ("ssh: connect to host luv.example.org port 22: Connection refused",
     HostUnreachable, "unreachable: Connection refused"),
    ("ssh: connect to host 10.231.77.2 port 22: Network is unreachable",
     HostUnreachable, "unreachable: Network is unreachable"),
    ("ssh: connect to host 10.0.0.9 port 22: Connection timed out",
     HostUnreachable, "Connection timed out"),
    ("ssh: Could not resolve hostname luv.example.org: Name or service not known",
     HostUnreachable, "Name or service not known"),
    ("kex_exchange_identification: Connection closed by remote host",
     HostUnreachable, "closed before login"),
])
def test_diagnose(stderr: str, kind: type[SshFailure], words: str) -> None:
    error = ssh.diagnose(_tail(stderr), EP)
    assert isinstance(error, kind)
    assert words in error.message
    assert error.hint


def test_diagnose_unknown_output() -> None:
    assert ssh.diagnose(["stderr: something else entirely"], EP) is None


def test_pinned_ignores_comments_markers_and_other_names(tmp_path: Path) -> None:
    key, _ = _keypair(tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text(f"# luv {key.type} {key.blob}\n@revoked luv {key.type} {key.blob}\n"
                     f"luvx {key.type} {key.blob}\nchew,luv {key.type} {key.blob}\n")
    assert ssh.pinned(known, "luv") == [key]
