"""Remote Borg repositories over SSH, for real: a lab host (sshd in a network namespace)
serves the repository with ``borg serve`` under the forced command `phobos repo trust`
prints; phobos runs in the lab's client namespace. Covered: trust (pinning rules, the
authorized_keys line), init/info/list/key-export, archive with prune through the
append-only key, sliced checks, a drill, the key confined to its repository, a changed
or unknown host key refused with the fix named, and a network drop in the middle of a
create: a clear failure, a checkpoint kept, a repository that passes ``borg check``.

The tests that run Borg through the repository do so with each Borg (conftest's
``each_borg``: the venv's 1.4 and Debian's 1.2.4), the server's ``borg serve`` being the
same Borg as the client's; the network drop, the slowest, with the venv's Borg only."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from remotehost import Lab, RemoteHost, sh

pytestmark = pytest.mark.root

PASSPHRASE = "remote horse battery staple 7"


@pytest.fixture
def lab1(tmp_path: Path) -> Iterator[Lab]:
    with Lab(tmp_path, 1) as lab:
        yield lab


def server_repo(host: RemoteHost) -> Path:
    return host.dir / "borg" / "offsite"


def borg_on_path() -> str:
    """The Borg the test runs (each_borg puts one first on PATH): the server's too."""
    found = shutil.which("borg")
    assert found is not None, "no borg on PATH (./scripts/setup installs it)"
    return found


def configure(lab: Lab, host: RemoteHost, jobs: str = "", extra: str = "") -> None:
    (lab.root / "borg.pass").write_text(PASSPHRASE + "\n")
    src = lab.root / "src"
    if not src.exists():
        for sub in range(3):
            (src / f"d{sub}").mkdir(parents=True)
            for index in range(10):
                (src / f"d{sub}" / f"f{index}.bin").write_bytes(os.urandom(4000 + index))
    lab.write_config(f"""\
        [repos.offsite]
        url = "ssh://root@{host.address}{server_repo(host)}"
        passphrase_file = "{lab.root}/borg.pass"
        base_dir = "{lab.root}/borgbase"
        remote_path = "{borg_on_path()}"
        lock_wait = "120s"
        {extra}

        [jobs.nightly]
        kind = "archive"
        repo = "offsite"
        sources = ["{src}"]
        keep = {{ last = 1 }}

        [jobs.check-slice]
        kind = "check"
        repo = "offsite"
        max_duration = "1s"

        [jobs.check-full]
        kind = "check"
        repo = "offsite"

        [jobs.drill]
        kind = "drill"
        repo = "offsite"
        sample = 10
        """ + textwrap.dedent(jobs))


def trusted(lab: Lab, host: RemoteHost, jobs: str = "", extra: str = "") -> dict[str, Any]:
    configure(lab, host, jobs, extra)
    out = lab.phobos("repo", "trust", "offsite", "--yes", "--json")
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    host.authorize(result["authorized_keys"])
    return result


def ok(lab: Lab, *args: str, timeout: float = 300) -> str:
    out = lab.phobos(*args, timeout=timeout)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


def last_run(lab: Lab, job: str) -> dict[str, Any]:
    runs: list[dict[str, Any]] = json.loads(ok(lab, "history", job, "--json"))["runs"]
    return runs[0]


def test_trust_pins_the_server_key_and_prints_a_confined_append_only_line(lab1: Lab) -> None:
    host = lab1.hosts[0]
    configure(lab1, host)
    refused = lab1.phobos("repo", "trust", "offsite")  # no terminal, no --yes
    assert refused.returncode == 2 and "without confirmation" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (lab1.keys / "known_hosts").exists()
    wrong = lab1.phobos("repo", "trust", "offsite", "--fingerprint", "SHA256:" + "A" * 43)
    assert wrong.returncode == 2 and "nothing was pinned" in wrong.stderr
    out = json.loads(ok(lab1, "repo", "trust", "offsite", "--fingerprint",
                        host.fingerprint(), "--json"))
    public = (lab1.keys / "repo-offsite_ed25519.pub").read_text().strip()
    assert out["authorized_keys"] == (
        f'command="{borg_on_path()} serve --append-only --restrict-to-repository '
        f'{server_repo(host)}",restrict {public}')
    assert public.startswith("ssh-ed25519 ") and out["newly_pinned"]
    pinned = (lab1.keys / "known_hosts").read_text().split()
    assert pinned[0] == "repo:offsite" and pinned[1] == "ssh-ed25519"
    # A key of its own: the pull key (if any) is another file.
    assert not (lab1.keys / "pull_ed25519").exists()
    again = json.loads(ok(lab1, "repo", "trust", "offsite", "--json"))  # no question now
    assert not again["newly_pinned"] and not again["key_created"]
    local = lab1.phobos("repo", "trust", "nope")
    assert local.returncode == 2 and "no repository named 'nope'" in local.stderr


@pytest.mark.usefixtures("each_borg")
def test_everything_that_uses_a_repository_works_over_ssh(lab1: Lab) -> None:
    host = lab1.hosts[0]
    trusted(lab1, host)
    ok(lab1, "repo", "init", "offsite")
    assert (server_repo(host) / "config").is_file()
    info = json.loads(ok(lab1, "repo", "info", "offsite", "--json"))
    assert info["borg"]["encryption"]["mode"] == "repokey-blake2"
    assert info["repo"]["path"].startswith("ssh://") and info["repo"]["remote"]

    ok(lab1, "run", "nightly")
    first = last_run(lab1, "nightly")["stats"]
    assert first["nfiles"] == 30
    ok(lab1, "run", "nightly")  # prune keeps the last one
    run = last_run(lab1, "nightly")
    assert run["stats"]["pruned"] == 1 and "compact_freed" not in run["stats"]
    log = ok(lab1, "log", str(run["id"]))
    assert "no compact: repository offsite is reached through an append-only key" in log
    archives = json.loads(ok(lab1, "repo", "list", "offsite", "--json"))["archives"]
    assert len(archives) == 1 and archives[0]["name"].startswith("nightly-")
    # Append-only: the pruned archive's data is still on the server, in a log of
    # transactions the server's admin can roll back to.
    assert (server_repo(host) / "transactions").read_text().count("transaction") >= 3

    key = lab1.root / "offsite.key"
    ok(lab1, "repo", "key-export", "offsite", str(key))
    assert key.read_text().startswith("BORG_KEY ")

    ok(lab1, "run", "check-slice")
    sliced = last_run(lab1, "check-slice")["stats"]
    assert sliced["mode"] == "slice" and "pass_complete" in sliced
    assert "coverage" not in sliced  # the server's segments are out of sight
    ok(lab1, "run", "check-full")
    full = last_run(lab1, "check-full")["stats"]
    assert full["pass_complete"] is True and full["last_full_pass"] is not None

    ok(lab1, "run", "drill")
    drill = last_run(lab1, "drill")["stats"]
    assert drill["files_checked"] == 10 and drill["mismatches"] == 0

    wanted = lab1.root / "src" / "d1" / "f3.bin"
    found = ok(lab1, "find", str(wanted), "--repo", "offsite")
    assert str(wanted) in found
    target = lab1.root / "restored"
    ok(lab1, "restore", str(wanted), "--to", str(target), "--repo", "offsite")
    assert (target / str(wanted).lstrip("/")).read_bytes() == wanted.read_bytes()

    status = json.loads(ok(lab1, "repo", "list", "--json"))["repos"][0]
    assert status["remote"] and status["last_check"]["job"] == "check-full"


def test_the_key_reaches_its_repository_and_nothing_else(lab1: Lab,
                                                         each_borg: tuple[int, ...]) -> None:
    host = lab1.hosts[0]
    trusted(lab1, host)
    ok(lab1, "repo", "init", "offsite")
    other = server_repo(host).parent / "other"
    config = lab1.config.read_text()
    lab1.config.write_text(config.replace(f"{server_repo(host)}\"", f"{other}\"", 1))
    refused = lab1.phobos("repo", "init", "offsite")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    if each_borg >= (1, 4):  # a modern exit code phobos explains
        assert "does not allow this repository path" in refused.stderr
    else:  # Borg 1.2 exits 2 for every error; its own line names the cause
        assert "Repository path not allowed" in refused.stderr
    assert not other.exists()
    # No shell either: the forced command runs whatever the client asks for as borg serve.
    shell = lab1.in_client("ssh", "-n", "-i", str(lab1.keys / "repo-offsite_ed25519"),
                           "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", f"root@{host.address}",
                           f"touch {host.dir}/pwned")
    assert shell.returncode != 0 and not (host.dir / "pwned").exists()


@pytest.mark.usefixtures("each_borg")
def test_a_changed_or_unknown_server_key_is_refused_with_the_fix(lab1: Lab) -> None:
    host = lab1.hosts[0]
    trusted(lab1, host)
    ok(lab1, "repo", "init", "offsite")
    host.stop()
    host.new_host_key()
    host.start()
    failed = lab1.phobos("run", "nightly")
    assert failed.returncode == 1
    run = last_run(lab1, "nightly")
    assert "the host key of the server of repository offsite" in run["message"]
    assert "has CHANGED" in run["message"]
    assert "phobos repo trust offsite --rekey" in run["message"]
    cli = lab1.phobos("repo", "list", "offsite")
    assert cli.returncode == 1 and "has CHANGED" in cli.stderr and "Traceback" not in cli.stderr
    plain = lab1.phobos("repo", "trust", "offsite", "--yes")  # never replaced silently
    assert plain.returncode == 2 and "has CHANGED" in plain.stderr
    ok(lab1, "repo", "trust", "offsite", "--rekey", "--fingerprint", host.fingerprint())
    ok(lab1, "run", "nightly")

    (lab1.keys / "known_hosts").write_text("")
    unknown = lab1.phobos("repo", "info", "offsite")
    assert unknown.returncode == 1
    assert "no host key is pinned for the server of repository offsite" in unknown.stderr
    assert "phobos repo trust offsite" in unknown.stderr


def test_a_network_drop_mid_create_fails_clearly_and_keeps_a_checkpoint(lab1: Lab) -> None:
    host = lab1.hosts[0]
    trusted(lab1, host, jobs="""
        [jobs.big]
        kind = "archive"
        repo = "offsite"
        sources = ["{big}"]
        checkpoint_interval = "2s"
        compression = "none"
        """.replace("{big}", str(lab1.root / "big")))
    ok(lab1, "repo", "init", "offsite")
    big = lab1.root / "big"
    big.mkdir()
    for index in range(16):  # 16 MiB of random data at 4 Mbit/s: about half a minute
        (big / f"part{index:02d}.bin").write_bytes(os.urandom(1 << 20))
    lab1.in_client("tc", "qdisc", "add", "dev", "c1", "root", "tbf", "rate", "4mbit",
                   "burst", "32kbit", "latency", "400ms", check=True)
    running = lab1.start_phobos("run", "big")
    time.sleep(12)  # a few checkpoints are on the server by now
    assert running.poll() is None, running.communicate()
    sh("ip", "-n", host.ns, "link", "set", "eth0", "down")
    try:
        _, stderr = running.communicate(timeout=240)
    finally:
        sh("ip", "-n", host.ns, "link", "set", "eth0", "up")
    assert running.returncode == 1, stderr
    assert "Traceback" not in stderr
    failed = last_run(lab1, "big")
    assert failed["outcome"] == "failed"
    assert "the server of repository offsite" in failed["message"]
    assert "unreachable" in failed["message"] or "broke" in failed["message"] \
        or "closed" in failed["message"], failed["message"]
    lab1.in_client("tc", "qdisc", "del", "dev", "c1", "root", check=True)

    # The repository is whole: Borg's full check passes.
    ok(lab1, "run", "check-full", timeout=600)
    # The checkpoint kept what was sent: the next create sends only the rest.
    ok(lab1, "run", "big", timeout=600)
    stats = last_run(lab1, "big")["stats"]
    assert stats["original_size"] >= 16 << 20
    assert stats["deduplicated_size"] < stats["original_size"] * 0.9, stats
