"""The pull's rsync and ssh argv as tables, --stats parsing, exit-code explanations,
ssh failure diagnosis, host-key fingerprints and the known_hosts file."""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from phobos.tools import rsync, ssh
from phobos.tools.errors import (
    HostKeyChanged,
    HostKeyUnknown,
    HostUnreachable,
    LoginRefused,
    SshFailure,
)
from phobos.tools.rsync import Pull, pull_argv, remote_sources
from phobos.tools.ssh import Endpoint, HostKey

KEYS = Path("/etc/phobos/keys")
EP = Endpoint(name="luv", address="luv.example.org", port=22, user="root",
              identity=KEYS / "pull_ed25519", known_hosts=KEYS / "known_hosts")
RSH = ("ssh -p 22 -i /etc/phobos/keys/pull_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes "
       "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/phobos/keys/known_hosts "
       "-o GlobalKnownHostsFile=/dev/null -o HostKeyAlias=luv -o UpdateHostKeys=no "
       "-o ConnectTimeout=20 -o ServerAliveInterval=15 -o ServerAliveCountMax=4")
BASE = ("rsync", "--archive", "--relative", "--numeric-ids", "--hard-links")
TAIL = ("--partial", "--partial-dir=.phobos-partial", "--stats", "--no-human-readable")
DEST = Path("/backup/holding/luv")


def test_rsh_pins_the_host_key_and_never_prompts() -> None:
    assert ssh.rsh(EP) == RSH


def test_rsh_quotes_paths_with_spaces_for_rsync_and_ssh() -> None:
    ep = Endpoint(name="x", address="10.0.0.1", port=2222, user="backup",
                  identity=Path("/k dir/id"), known_hosts=Path("/k dir/known"))
    words = shlex.split(ssh.rsh(ep))  # rsync splits -e like a shell does
    assert words[1:5] == ["-p", "2222", "-i", "/k dir/id"]
    assert 'UserKnownHostsFile="/k dir/known"' in words


PULL_TABLE = [
    (  # the default: ACLs and xattrs where the holding filesystem has them
        Pull(login="root@luv", rsh=RSH, sources=("/etc", "/home"), dest=DEST),
        (*BASE, "--acls", "--xattrs", *TAIL, "-e", RSH, "root@luv:/etc", "root@luv:/home",
         "/backup/holding/luv/"),
    ),
    (  # a filesystem without ACLs and xattrs: neither is asked for
        Pull(login="root@luv", rsh=RSH, sources=("/etc",), dest=DEST, acls=False,
             xattrs=False),
        (*BASE, *TAIL, "-e", RSH, "root@luv:/etc", "/backup/holding/luv/"),
    ),
    (  # xattrs without ACLs
        Pull(login="root@luv", rsh=RSH, sources=("/etc",), dest=DEST, acls=False),
        (*BASE, "--xattrs", *TAIL, "-e", RSH, "root@luv:/etc", "/backup/holding/luv/"),
    ),
    (  # excludes, bandwidth limit and extra options, in that order, before -e
        Pull(login="backup@[fe80::1]", rsh=RSH, sources=("var/lib",), dest=DEST / "srv",
             exclude=("*/.cache", "/home/*/Downloads"), bwlimit="5m",
             extra=("--one-file-system",)),
        (*BASE, "--acls", "--xattrs", *TAIL, "--exclude=*/.cache",
         "--exclude=/home/*/Downloads", "--bwlimit=5m", "--one-file-system", "-e", RSH,
         "backup@[fe80::1]:var/lib", "/backup/holding/luv/srv/"),
    ),
]


@pytest.mark.parametrize(("pull", "argv"), PULL_TABLE)
def test_pull_argv(pull: Pull, argv: tuple[str, ...]) -> None:
    assert pull_argv(pull) == argv


PRUNE = ("rsync", "--archive", "--relative", "--delete", "--existing", "--ignore-existing",
         "--stats", "--no-human-readable")


@pytest.mark.parametrize(("pull", "argv"), [
    (PULL_TABLE[0][0], (*PRUNE, "-e", RSH, "root@luv:/etc", "root@luv:/home",
                        "/backup/holding/luv/")),
    (  # excludes keep their files from deletion too; no bandwidth limit needed
        PULL_TABLE[3][0],
        (*PRUNE, "--exclude=*/.cache", "--exclude=/home/*/Downloads", "--one-file-system",
         "-e", RSH, "backup@[fe80::1]:var/lib", "/backup/holding/luv/srv/"),
    ),
])
def test_prune_argv_deletes_only(pull: Pull, argv: tuple[str, ...]) -> None:
    assert rsync.prune_argv(pull) == argv


def test_the_transfer_never_deletes() -> None:
    for pull, _ in PULL_TABLE:
        assert not [a for a in pull_argv(pull) if a.startswith("--delete")]


SOURCES_TABLE = [
    (("/etc", "/home/"), None, ("/etc", "/home"), ""),
    (("/",), None, ("/",), ""),
    (("/etc", "/home"), "/", ("etc", "home"), ""),
    (("/srv/backup/etc", "/srv/backup"), "/srv/backup/", ("etc", "."), "srv/backup"),
]


@pytest.mark.parametrize(("paths", "root", "sources", "below"), SOURCES_TABLE)
def test_remote_sources(paths: tuple[str, ...], root: str | None, sources: tuple[str, ...],
                        below: str) -> None:
    assert remote_sources(paths, root) == (sources, below)


def test_remote_sources_refuses_paths_outside_the_rrsync_root() -> None:
    with pytest.raises(ValueError, match="outside rrsync_root"):
        remote_sources(["/etc"], "/srv")
    with pytest.raises(ValueError, match="outside"):
        remote_sources(["/srvx"], "/srv")


def test_endpoint_login_and_where() -> None:
    assert EP.login == "root@luv.example.org"
    assert EP.where == "luv.example.org:22"
    v6 = Endpoint(name="v", address="fd00::2", port=2200, identity=KEYS, known_hosts=KEYS)
    assert (v6.login, v6.where) == ("root@[fd00::2]", "[fd00::2]:2200")


def test_ssh_argv_ends_options_before_the_address() -> None:
    argv = ssh.ssh_argv(EP, "true")
    assert argv[:3] == ("ssh", "-p", "22")
    assert argv[-6:] == ("-T", "-l", "root", "--", "luv.example.org", "true")


def test_other_argv_builders() -> None:
    assert ssh.keyscan_argv("luv", 2222) == ("ssh-keyscan", "-T", "10", "-p", "2222", "--",
                                             "luv")
    assert ssh.keygen_argv(Path("/k/pull"), "c") == (
        "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "c", "-f", "/k/pull")
    assert rsync.list_argv("root@luv", "ssh", "etc") == (
        "rsync", "--list-only", "--dirs", "-e", "ssh", "root@luv:etc")
    assert rsync.write_probe_argv("root@luv", "ssh", Path("/tmp/e"), "etc/.p/") == (
        "rsync", "--dry-run", "--recursive", "-e", "ssh", "/tmp/e/", "root@luv:etc/.p/")


# --- --stats -----------------------------------------------------------------------------

STATS_OUTPUT = """\

Number of files: 1,234 (reg: 1,000, dir: 234)
Number of created files: 4 (reg: 2, dir: 2)
Number of deleted files: 3
Number of regular files transferred: 10
Total file size: 12,345,678 bytes
Total transferred file size: 45678 bytes
Literal data: 45678 bytes
Matched data: 0 bytes
File list size: 108
File list generation time: 0.001 seconds
File list transfer time: 0.000 seconds
Total bytes sent: 92
Total bytes received: 46,225

sent 92 bytes  received 46,225 bytes  211.33 bytes/sec
total size is 12,345,678  speedup is 0.03
stderr: rsync warning: some files vanished before they could be transferred (code 24)
"""


def test_parse_stats() -> None:
    assert rsync.parse_stats(STATS_OUTPUT.splitlines()) == {
        "files": 1234, "files_created": 4, "files_deleted": 3, "files_transferred": 10,
        "bytes_total": 12345678, "bytes_transferred": 45678, "bytes_sent": 92,
        "bytes_received": 46225}


def test_parse_stats_of_nothing() -> None:
    assert rsync.parse_stats(["rsync error: something (code 23)"]) == {}


@pytest.mark.parametrize(("code", "words"), [
    (23, "partial transfer"), (24, "vanished"), (12, "refused"), (255, "ssh failed"),
    (11, "holding area full"), (30, "timeout"), (99, "does not document"),
    (-15, "signal"),
])
def test_explain(code: int, words: str) -> None:
    assert words in rsync.explain(code)


def test_every_documented_rsync_code_is_explained() -> None:
    documented = (1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 20, 21, 22, 23, 24, 25, 30, 35)
    assert all(code in rsync.EXIT_CODES for code in documented)
    assert rsync.WARN_CODES == (24,)


# --- host keys -----------------------------------------------------------------------------


def _keypair(tmp_path: Path, name: str = "k") -> tuple[HostKey, str]:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True)
    kind, blob = path.with_suffix(".pub").read_text().split()[:2]
    oracle = subprocess.run(["ssh-keygen", "-l", "-f", str(path.with_suffix(".pub"))],
                            capture_output=True, text=True, check=True).stdout.split()[1]
    return HostKey(kind, blob), oracle


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


# --- ssh's failures ------------------------------------------------------------------------

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


# --- the holding filesystem ----------------------------------------------------------------


def test_target_features_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    found = rsync.target_features(tmp_path)
    assert isinstance(found.acls, bool) and isinstance(found.xattrs, bool)
    assert list(tmp_path.iterdir()) == []


def test_target_features_refuses_an_unwritable_directory(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(OSError):
        rsync.target_features(blocked / "sub")
    if os.geteuid() != 0:  # root writes anywhere; the mode check means nothing then
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(PermissionError):
            rsync.target_features(ro)
