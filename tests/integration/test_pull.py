"""Pull jobs against real sshd "remote hosts" in their own network namespaces (see
remotehost.py), through the real `phobos` CLI: host add/test/rekey, restricted
(rrsync) and unrestricted keys, a changed host key, unreachable hosts, parallel pulls
with one failing host, bad input (missing path, holding missing/read-only/full) and
interruption."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from remotehost import Lab, RemoteHost, sh

pytestmark = pytest.mark.root

ACL_UNDEFINED = 0xFFFFFFFF


@pytest.fixture
def lab1(tmp_path: Path) -> Iterator[Lab]:
    with Lab(tmp_path, 1) as lab:
        yield lab


@pytest.fixture
def lab3(tmp_path: Path) -> Iterator[Lab]:
    with Lab(tmp_path, 3) as lab:
        yield lab


# --- helpers --------------------------------------------------------------------------


def acl_with_user(uid: int) -> bytes:
    """A POSIX access ACL (the kernel's xattr format) granting ``uid`` read access."""
    entries = [(0x01, 6, ACL_UNDEFINED), (0x02, 4, uid), (0x04, 4, ACL_UNDEFINED),
               (0x10, 4, ACL_UNDEFINED), (0x20, 0, ACL_UNDEFINED)]
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def make_tree(host: RemoteHost) -> list[str]:
    """A small tree with the things a backup must keep; returns the paths to pull."""
    etc, home = host.srv / "etc", host.srv / "home" / "ann"
    etc.mkdir(parents=True)
    home.mkdir(parents=True)
    (etc / "hostname").write_text(f"{host.name}\n")
    (etc / "passwd").write_text("root:x:0:0\n")
    (home / "notes.txt").write_text("remember the milk\n")
    os.link(home / "notes.txt", home / "notes.hardlink")
    os.symlink("notes.txt", home / "latest")
    os.chown(home / "notes.txt", 4242, 4343)
    os.setxattr(home / "notes.txt", "user.phobos.test", b"kept")
    os.setxattr(etc / "passwd", "system.posix_acl_access", acl_with_user(4242))
    os.utime(etc / "hostname", (1_600_000_000, 1_600_000_000))
    return [str(host.srv / "etc"), str(host.srv / "home")]


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def setup(lab: Lab, *hosts: RemoteHost, restricted: bool = True, extra: str = "",
          host_extra: str = "", tree: bool = True) -> None:
    """Add each host with `phobos host add` and write the config from its snippets."""
    snippets = []
    for host in hosts:
        paths = make_tree(host) if tree else [str(host.srv / "data")]
        added = lab.add_host(host, *paths, restricted=restricted)
        snippet = added["config"]
        if not restricted:  # an unrestricted key sees the host's real paths
            snippet = "\n".join(line for line in snippet.splitlines()
                                if not line.startswith("rrsync_root"))
        snippet = snippet.replace(f'rrsync_root = "{host.srv}"\n',
                                  f'rrsync_root = "{host.srv}"\n{host_extra}')
        if not restricted:
            snippet = snippet.replace("paths = [", f"{host_extra}paths = [", 1)
        snippets.append(snippet)
    lab.write_config("\n".join(snippets) + "\n" + extra)


def run(lab: Lab, job: str, timeout: float = 180) -> dict[str, Any]:
    out = lab.phobos("run", job, "--json", "-q", timeout=timeout)
    result: dict[str, Any] = json.loads(out.stdout)
    result["stderr"] = out.stderr
    assert result["exit_code"] == out.returncode
    return result


def last_run(lab: Lab, job: str) -> dict[str, Any]:
    out = lab.phobos("history", job, "--json", "--limit", "1")
    assert out.returncode == 0, out.stderr
    runs: dict[str, Any] = json.loads(out.stdout)["runs"][0]
    return runs


def steps(lab: Lab, run_id: int) -> list[dict[str, Any]]:
    out = lab.phobos("log", str(run_id), "--json")
    assert out.returncode == 0, out.stderr
    found: list[dict[str, Any]] = json.loads(out.stdout)["steps"]
    return found


# --- host add / test ------------------------------------------------------------------------


def test_host_add_pins_after_confirmation_and_prints_a_read_only_line(lab1: Lab) -> None:
    host = lab1.hosts[0]
    before = lab1.config.read_text()
    args = ("host", "add", "h1", host.address, "--root", str(host.srv), "--path",
            str(host.srv / "etc"))

    refused = lab1.phobos(*args)  # no terminal, no --yes: nothing is pinned
    assert refused.returncode == 2
    assert "refusing to pin a host key without confirmation" in refused.stderr
    assert host.fingerprint() in refused.stderr  # shown before asking
    assert not (lab1.keys / "known_hosts").exists()

    wrong = lab1.phobos(*args, "--fingerprint", "SHA256:" + "A" * 43)
    assert wrong.returncode == 2 and "does not offer a key" in wrong.stderr

    out = lab1.phobos(*args, "--fingerprint", host.fingerprint())
    assert out.returncode == 0, out.stderr
    assert host.fingerprint() in out.stdout
    public = (lab1.keys / "pull_ed25519.pub").read_text().strip()
    line = f'command="/usr/bin/rrsync -ro {host.srv}",restrict {public}'
    assert line in out.stdout
    assert f"[hosts.h1]\naddress = \"{host.address}\"" in out.stdout
    assert "phobos host test h1" in out.stdout
    assert lab1.config.read_text() == before  # the config file is never edited
    known = (lab1.keys / "known_hosts").read_text().split()
    assert known[0] == "h1" and known[1] == "ssh-ed25519"
    assert oct((lab1.keys / "pull_ed25519").stat().st_mode & 0o777) == "0o600"

    again = json.loads(lab1.phobos(*args, "--json").stdout)  # already pinned: no question
    assert again["pull_key_created"] is False and again["newly_pinned"] is False
    assert again["host_keys"][0]["fingerprint"] == host.fingerprint()
    assert again["authorized_keys"] == line


def test_host_test_tells_a_read_only_key_from_a_writable_one(lab1: Lab) -> None:
    host = lab1.hosts[0]
    setup(lab1, host)
    out = lab1.phobos("host", "test", "h1", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True
    names = [c["check"] for c in report["checks"]]
    assert names == ["reachable", "host key", "login", f"path {host.srv}/etc",
                     f"path {host.srv}/home", "read-only"]
    assert "sending to read-only server is not allowed" in report["checks"][-1]["detail"]

    added = json.loads((lab1.phobos("host", "add", "h1", host.address, "--json",
                                    "--yes")).stdout)
    host.authorize(added["public_key"])  # the same key without the rrsync restriction
    setup_text = lab1.config.read_text().replace(f'rrsync_root = "{host.srv}"\n', "")
    lab1.config.write_text(setup_text)
    out = lab1.phobos("host", "test", "h1")
    assert out.returncode == 1
    assert "the key can WRITE to the host" in out.stdout
    assert 'hint (read-only): restrict it on h1' in out.stdout
    assert not list(host.srv.rglob(".phobos-write-probe"))  # the probe was a dry run


def test_host_test_names_missing_paths_and_a_refused_key(lab1: Lab) -> None:
    host = lab1.hosts[0]
    setup(lab1, host)
    lab1.config.write_text(lab1.config.read_text().replace(
        f'"{host.srv}/home"', f'"{host.srv}/nope"'))
    report = json.loads(lab1.phobos("host", "test", "h1", "--json").stdout)
    failed = {c["check"]: c for c in report["checks"] if not c["ok"]}
    assert list(failed) == [f"path {host.srv}/nope"]
    assert "No such file or directory" in failed[f"path {host.srv}/nope"]["detail"]

    host.authorize()  # the key is no longer accepted
    report = json.loads(lab1.phobos("host", "test", "h1", "--json").stdout)
    assert [c["check"] for c in report["checks"]] == ["reachable", "host key", "login"]
    assert "refused phobos's key" in report["checks"][-1]["detail"]


# --- pulling ---------------------------------------------------------------------------------


def test_restricted_pull_mirrors_the_host_and_records_stats(lab1: Lab) -> None:
    host = lab1.hosts[0]
    setup(lab1, host)
    result = run(lab1, "pull-h1")
    assert result["outcome"] == "success", result

    etc, home = lab1.holding_copy(host, host.srv / "etc"), lab1.holding_copy(
        host, host.srv / "home" / "ann")
    assert (etc / "hostname").read_text() == "h1\n"
    assert (etc / "hostname").stat().st_mtime == 1_600_000_000
    notes = home / "notes.txt"
    assert notes.read_text() == "remember the milk\n"
    assert notes.stat().st_ino == (home / "notes.hardlink").stat().st_ino  # -H
    assert os.readlink(home / "latest") == "notes.txt"
    assert (notes.stat().st_uid, notes.stat().st_gid) == (4242, 4343)  # --numeric-ids
    assert os.getxattr(notes, "user.phobos.test") == b"kept"  # -X
    assert os.getxattr(etc / "passwd", "system.posix_acl_access") == acl_with_user(4242)

    stats = last_run(lab1, "pull-h1")["stats"]
    assert stats["hosts"]["h1"]["outcome"] == "success"
    # etc, hostname, passwd, home, ann, notes.txt, notes.hardlink, latest
    assert stats["files"] == stats["hosts"]["h1"]["files"] == 8
    assert stats["bytes_total"] == len("h1\nroot:x:0:0\nremember the milk\n") + len(
        "remember the milk\n") + len("notes.txt")
    assert stats["bytes_transferred"] > 0

    # The next pull updates in place: changes and deletions arrive, nothing else moves.
    (host.srv / "etc" / "passwd").write_text("root:x:0:0\nann:x:1000:1000\n")
    (host.srv / "etc" / "hostname").unlink()
    assert run(lab1, "pull-h1")["outcome"] == "success"
    assert not (etc / "hostname").exists()
    assert "ann:x" in (etc / "passwd").read_text()
    stats = last_run(lab1, "pull-h1")["stats"]["hosts"]["h1"]
    assert stats["files_deleted"] == 1 and stats["files_transferred"] == 1


def test_files_vanishing_during_the_pull_are_a_warning(lab1: Lab) -> None:
    host = lab1.hosts[0]
    data = host.srv / "data"
    for index in range(40):
        write_random(data / f"f{index:02d}.bin", 100 << 10)
    setup(lab1, host, tree=False, host_extra='bwlimit = "1m"\n')
    pull = lab1.start_phobos("run", "pull-h1", "--json", "-q")
    deadline = time.monotonic() + 30
    while "rsync" not in _client_processes(lab1):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # the file list is sent; the last files are still to come
    for index in range(30, 40):
        (data / f"f{index:02d}.bin").unlink()
    stdout, _ = pull.communicate(timeout=60)
    result = json.loads(stdout)
    assert pull.returncode == 0
    assert result["outcome"] == "warning", result
    assert "exit code 24 (some files vanished during the transfer" in result["message"]
    copy = lab1.holding_copy(host, data)
    assert sorted(p.name for p in copy.glob("*.bin")) == [f"f{i:02d}.bin" for i in range(30)]


def test_unrestricted_key_gives_the_same_layout(lab1: Lab) -> None:
    host = lab1.hosts[0]
    setup(lab1, host, restricted=False)
    assert "rrsync_root" not in lab1.config.read_text()
    assert run(lab1, "pull-h1")["outcome"] == "success"
    assert (lab1.holding_copy(host, host.srv / "etc") / "hostname").read_text() == "h1\n"


def test_changed_host_key_fails_until_the_admin_rekeys(lab1: Lab) -> None:
    host = lab1.hosts[0]
    setup(lab1, host)
    assert run(lab1, "pull-h1")["outcome"] == "success"
    old = host.fingerprint()
    known_before = (lab1.keys / "known_hosts").read_text()
    host.stop()
    host.new_host_key()  # reinstalled, or someone in the middle
    host.start()
    (host.srv / "etc" / "hostname").write_text("changed\n")

    result = run(lab1, "pull-h1")
    assert result["outcome"] == "failed" and result["exit_code"] == 1
    message = result["message"]
    assert f"the host key of h1 ({host.address}:22) has CHANGED" in message
    assert old in message and host.fingerprint() in message
    assert "if it matches, accept it with `phobos host rekey h1`" in message
    assert (lab1.keys / "known_hosts").read_text() == known_before  # never auto-accepted
    copy = lab1.holding_copy(host, host.srv / "etc") / "hostname"
    assert copy.read_text() == "h1\n"  # the previous copy is intact

    test = lab1.phobos("host", "test", "h1")
    assert test.returncode == 1 and "has CHANGED" in test.stdout

    refused = lab1.phobos("host", "rekey", "h1")
    assert refused.returncode == 2
    assert old in refused.stderr and host.fingerprint() in refused.stderr
    assert (lab1.keys / "known_hosts").read_text() == known_before

    out = lab1.phobos("host", "rekey", "h1", "--fingerprint", host.fingerprint(), "--json")
    assert out.returncode == 0, out.stderr
    rekeyed = json.loads(out.stdout)
    assert rekeyed["changed"] is True
    assert [k["fingerprint"] for k in rekeyed["old"]] == [old]
    assert [k["fingerprint"] for k in rekeyed["new"]] == [host.fingerprint()]

    assert run(lab1, "pull-h1")["outcome"] == "success"
    assert copy.read_text() == "changed\n"
    again = json.loads(lab1.phobos("host", "rekey", "h1", "--json").stdout)
    assert again["changed"] is False


def test_unreachable_hosts_fail_fast_with_the_reason(lab1: Lab) -> None:
    host = lab1.hosts[0]
    setup(lab1, host)
    host.stop()
    started = time.monotonic()
    result = run(lab1, "pull-h1")
    assert result["outcome"] == "failed"
    assert result["message"].startswith(f"host h1 ({host.address}:22) is unreachable: "
                                        "Connection refused (hint: check that h1 is up")
    assert "sshd listens there" in result["message"]

    lab1.config.write_text(lab1.config.read_text().replace(host.address, "10.231.250.2"))
    result = run(lab1, "pull-h1")
    assert result["message"].startswith("host h1 (10.231.250.2:22) is unreachable: "
                                        "Network is unreachable (hint: ")
    assert time.monotonic() - started < 30

    add = lab1.phobos("host", "add", "h9", "10.231.250.2", "--yes")
    assert add.returncode == 1
    assert "host h9 (10.231.250.2:22) is unreachable: Network is unreachable" in add.stderr


def test_a_refused_key_and_an_unpinned_host(lab1: Lab) -> None:
    host = lab1.hosts[0]
    setup(lab1, host)
    host.authorize()  # the client forgot (or revoked) our key
    result = run(lab1, "pull-h1")
    assert result["message"].startswith(f"host h1 ({host.address}:22) refused phobos's "
                                        f"key {lab1.keys}/pull_ed25519 for user root")
    assert "~root/.ssh/authorized_keys" in result["message"]
    (lab1.keys / "known_hosts").write_text("")
    result = run(lab1, "pull-h1")
    assert result["message"].startswith("no host key is pinned for h1")
    assert f"phobos host add h1 {host.address}" in result["message"]


def test_unknown_host_names_are_config_errors(lab1: Lab) -> None:
    setup(lab1, lab1.hosts[0], extra='[jobs.typo]\nkind = "pull"\nhosts = ["h1", "h1x"]\n')
    out = lab1.phobos("config", "check")
    assert out.returncode == 2
    assert "jobs.typo.hosts.[1]: no host named 'h1x' (did you mean 'h1'?)" in out.stderr
    lab1.config.write_text(lab1.config.read_text().replace('"h1", "h1x"', '"h1"'))
    test = lab1.phobos("host", "test", "h2")
    assert test.returncode == 2 and "no host named 'h2'" in test.stderr


@pytest.mark.parametrize("restricted", [True, False], ids=["rrsync", "plain"])
def test_missing_remote_path_keeps_the_previous_copy(lab1: Lab, restricted: bool) -> None:
    host = lab1.hosts[0]
    setup(lab1, host, restricted=restricted)
    assert run(lab1, "pull-h1")["outcome"] == "success"
    sh("rm", "-rf", str(host.srv / "home"))
    (host.srv / "etc" / "passwd").unlink()

    result = run(lab1, "pull-h1")
    assert result["outcome"] == "failed"
    assert "No such file or directory" in result["message"]
    assert "a remote path does not exist on the host" in result["message"]
    assert "phobos host test h1" in result["message"]
    notes = lab1.holding_copy(host, host.srv / "home" / "ann" / "notes.txt")
    assert notes.read_text() == "remember the milk\n"  # not deleted
    assert (lab1.holding_copy(host, host.srv / "etc") / "passwd").exists()  # not deleted


def test_holding_area_missing_or_read_only(lab1: Lab) -> None:
    host = lab1.hosts[0]
    setup(lab1, host)
    holding = lab1.holding
    holding.rename(lab1.root / "elsewhere")
    result = run(lab1, "pull-h1")
    assert result["message"].startswith(f"the holding area {holding} does not exist "
                                        "(is the backup filesystem mounted?)")
    assert not holding.exists()  # never created: it could be an unmounted mount point

    holding.mkdir()
    with tmpfs(holding, "ro,size=1m"):
        result = run(lab1, "pull-h1")
    assert result["message"].startswith(f"cannot write to the holding folder "
                                        f"{holding}/h1 for host h1: Read-only file system")
    assert "mounted read-write" in result["message"]


def test_full_holding_disk_keeps_the_previous_copy(lab1: Lab) -> None:
    host = lab1.hosts[0]
    lab1.holding.rmdir()
    lab1.holding.mkdir()
    with tmpfs(lab1.holding, "size=2m"):
        setup(lab1, host)
        assert run(lab1, "pull-h1")["outcome"] == "success"
        write_random(host.srv / "home" / "ann" / "big.bin", 4 << 20)
        (host.srv / "etc" / "hostname").unlink()

        result = run(lab1, "pull-h1")
        assert result["outcome"] == "failed"
        assert "No space left on device" in result["message"]
        assert "the holding filesystem is full" in result["message"]
        home = lab1.holding_copy(host, host.srv / "home" / "ann")
        assert (home / "notes.txt").read_text() == "remember the milk\n"
        assert not (home / "big.bin").exists()  # no half file in the tree
        assert (lab1.holding_copy(host, host.srv / "etc") / "hostname").exists()


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[None]:
    sh("mount", "-t", "tmpfs", "-o", options, "phobos-test", str(where))
    try:
        yield
    finally:
        sh("umount", "-l", str(where), check=False)


# --- several hosts -------------------------------------------------------------------------

PARALLEL_JOBS = """
[jobs.pull-all]
kind = "pull"
hosts = ["h1", "h2", "h3"]
max_parallel = 3

[jobs.pull-serial]
kind = "pull"
hosts = ["h1", "h2", "h3"]
max_parallel = 1
"""


def _overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["started"] < b["ended"] and b["started"] < a["ended"])


def test_three_hosts_in_parallel_one_failing(lab3: Lab) -> None:
    h1, h2, h3 = lab3.hosts
    for host in lab3.hosts:
        write_random(host.srv / "data" / "blob.bin", 1 << 20)
    setup(lab3, *lab3.hosts, tree=False, extra=PARALLEL_JOBS, host_extra='bwlimit = "1m"\n')
    h2.stop()

    result = run(lab3, "pull-all")
    assert result["outcome"] == "failed" and result["exit_code"] == 1
    assert result["message"].startswith("1 of 3 hosts failed (h2); the others were pulled.")
    assert "h2: host h2 (10.231.2.2:22) is unreachable: Connection refused" in \
        result["message"]
    for host in (h1, h3):
        copy = lab3.holding_copy(host, host.srv / "data" / "blob.bin")
        assert digest(copy) == digest(host.srv / "data" / "blob.bin")

    stats = last_run(lab3, "pull-all")["stats"]
    assert stats["failed_hosts"] == ["h2"]
    assert {n: s["outcome"] for n, s in stats["hosts"].items()} == {
        "h1": "success", "h2": "failed", "h3": "success"}
    assert stats["hosts"]["h1"]["bytes_total"] == 1 << 20
    assert stats["bytes_total"] == 2 << 20
    pulls = {s["name"]: s for s in steps(lab3, result["run_id"]) if s["name"] in
             ("pull h1", "pull h3")}
    assert _overlap(pulls["pull h1"], pulls["pull h3"])  # really in parallel

    h2.start()
    result = run(lab3, "pull-serial")
    assert result["outcome"] == "success", result
    pulls = {s["name"]: s for s in steps(lab3, result["run_id"]) if
             s["name"].startswith("pull ")}
    assert len(pulls) == 3
    assert not any(_overlap(pulls[a], pulls[b]) for a, b in
                   (("pull h1", "pull h2"), ("pull h2", "pull h3"), ("pull h1", "pull h3")))


def test_interrupted_parallel_pull_stops_every_rsync_and_resumes(lab3: Lab) -> None:
    for host in lab3.hosts:
        write_random(host.srv / "data" / "blob.bin", 6 << 20)
    setup(lab3, *lab3.hosts, tree=False, extra=PARALLEL_JOBS, host_extra='bwlimit = "1m"\n')
    runner = lab3.start_phobos("run", "pull-all", "--json", "-q")
    partials = [lab3.holding_copy(h, h.srv / "data") / ".phobos-partial" for h in lab3.hosts]
    deadline = time.monotonic() + 30
    while not _transferring(lab3):
        assert time.monotonic() < deadline, "the pulls never started"
        time.sleep(0.1)
    time.sleep(2.0)  # of about 6 s per host: every host has part of its file
    runner.send_signal(signal.SIGTERM)
    stdout, _ = runner.communicate(timeout=30)
    assert runner.returncode == 4, stdout
    assert json.loads(stdout)["outcome"] == "interrupted"
    assert _client_processes(lab3) == []  # no rsync or ssh left behind
    assert all(p.is_dir() for p in partials)  # what arrived is kept for the next pull

    lab3.config.write_text(lab3.config.read_text().replace('bwlimit = "1m"\n', ""))
    result = run(lab3, "pull-all")
    assert result["outcome"] == "success", result
    stats = last_run(lab3, "pull-all")["stats"]["hosts"]
    for host in lab3.hosts:
        copy = lab3.holding_copy(host, host.srv / "data" / "blob.bin")
        assert digest(copy) == digest(host.srv / "data" / "blob.bin")
        # Resumed: less than the whole file crossed the wire the second time.
        assert stats[host.name]["bytes_received"] < (6 << 20) * 0.9
    assert not any(p.exists() for p in partials)


def _client_processes(lab: Lab) -> list[str]:
    pids = sh("ip", "netns", "pids", lab.client).stdout.split()
    names = []
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
    return names


def _transferring(lab: Lab) -> bool:
    return _client_processes(lab).count("rsync") >= 3


def test_a_reader_of_the_holding_folder_does_not_run_during_the_pull(lab1: Lab) -> None:
    host = lab1.hosts[0]
    write_random(host.srv / "data" / "blob.bin", 2 << 20)
    reader = ('[jobs.archive-h1]\nkind = "command"\nargv = ["true"]\n'
              'reads = ["holding:h1"]\non_busy = "skip"\n')
    setup(lab1, host, tree=False, extra=reader, host_extra='bwlimit = "1m"\n')
    pull = lab1.start_phobos("run", "pull-h1", "-q")
    deadline = time.monotonic() + 30
    while "rsync" not in _client_processes(lab1):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    skipped = run(lab1, "archive-h1")
    assert skipped["outcome"] == "skipped" and skipped["exit_code"] == 3
    assert "holding:h1 is busy: held by job pull-h1" in skipped["message"]
    assert pull.wait(timeout=60) == 0
    assert run(lab1, "archive-h1")["outcome"] == "success"


def test_lab_teardown_leaves_nothing(tmp_path: Path) -> None:
    with Lab(tmp_path, 2) as lab:
        names = lab.namespaces()
        sshd = [h.sshd.pid for h in lab.hosts if h.sshd is not None]
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in names)
    assert not any(Path(f"/proc/{pid}").exists() for pid in sshd)
