"""rsync as phobos runs it: the pull's argv as tables (rsh, transfer, prune), remote sources
under an rrsync root, --stats parsing, exit-code explanations, and the holding
filesystem's feature probe."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from phobos.tools import rsync, ssh
from phobos.tools.rsync import Pull, pull_argv, remote_sources
from phobos.tools.ssh import Endpoint

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
        (*BASE, "--acls", "--xattrs", *TAIL, "-e", RSH, "--", "root@luv:/etc", "root@luv:/home",
         "/backup/holding/luv/"),
    ),
    (  # a filesystem without ACLs and xattrs: neither is asked for
        Pull(login="root@luv", rsh=RSH, sources=("/etc",), dest=DEST, acls=False,
             xattrs=False),
        (*BASE, *TAIL, "-e", RSH, "--", "root@luv:/etc", "/backup/holding/luv/"),
    ),
    (  # xattrs without ACLs
        Pull(login="root@luv", rsh=RSH, sources=("/etc",), dest=DEST, acls=False),
        (*BASE, "--xattrs", *TAIL, "-e", RSH, "--", "root@luv:/etc", "/backup/holding/luv/"),
    ),
    (  # excludes, bandwidth limit and extra options, in that order, before -e
        Pull(login="backup@[fe80::1]", rsh=RSH, sources=("var/lib",), dest=DEST / "srv",
             exclude=("*/.cache", "/home/*/Downloads"), bwlimit="5m",
             extra=("--one-file-system",)),
        (*BASE, "--acls", "--xattrs", *TAIL, "--exclude=*/.cache",
         "--exclude=/home/*/Downloads", "--bwlimit=5m", "--one-file-system", "-e", RSH, "--",
         "backup@[fe80::1]:var/lib", "/backup/holding/luv/srv/"),
    ),
]


@pytest.mark.parametrize(("pull", "argv"), PULL_TABLE)
def test_pull_argv(pull: Pull, argv: tuple[str, ...]) -> None:
    assert pull_argv(pull) == argv


PRUNE = ("rsync", "--archive", "--relative", "--delete", "--existing", "--ignore-existing",
         "--stats", "--no-human-readable")


@pytest.mark.parametrize(("pull", "argv"), [
    (PULL_TABLE[0][0], (*PRUNE, "-e", RSH, "--", "root@luv:/etc", "root@luv:/home",
                        "/backup/holding/luv/")),
    (  # excludes keep their files from deletion too; no bandwidth limit needed
        PULL_TABLE[3][0],
        (*PRUNE, "--exclude=*/.cache", "--exclude=/home/*/Downloads", "--one-file-system",
         "-e", RSH, "--", "backup@[fe80::1]:var/lib", "/backup/holding/luv/srv/"),
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


def test_other_argv_builders() -> None:
    assert ssh.keyscan_argv("luv", 2222) == ("ssh-keyscan", "-T", "10", "-p", "2222", "--",
                                             "luv")
    assert ssh.keygen_argv(Path("/k/pull"), "c") == (
        "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "c", "-f", "/k/pull")
    assert rsync.list_argv("root@luv", "ssh", "etc") == (
        "rsync", "--list-only", "--dirs", "-e", "ssh", "--", "root@luv:etc")
    assert rsync.write_probe_argv("root@luv", "ssh", Path("/tmp/e"), "etc/.p/") == (
        "rsync", "--dry-run", "--recursive", "-e", "ssh", "--", "/tmp/e/", "root@luv:etc/.p/")


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
