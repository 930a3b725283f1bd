"""`phobos repo init/info/list/key-export` on a real Borg repository, and the
passphrase never reaching argv, logs or history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from borgbox import PASSPHRASE, BorgBox, initialized, wait_for

from conftest import phobos_env
from phobos.tools import borg as borgtool

# Borg integration: every test runs with the venv's Borg 1.4 and Debian's 1.2.
pytestmark = pytest.mark.usefixtures("each_borg")


def test_init_info_list_key_export(sandbox: Any) -> None:
    box = initialized(sandbox)
    assert (box.repo / "config").is_file()
    assert (box.root / "borgbase").is_dir()  # keys/cache/security kept out of ~

    again = box.phobos("repo", "init", "main")
    assert again.returncode == 1
    assert "already exists" in again.stderr

    listing = json.loads(box.ok("repo", "list", "--json").stdout)["repos"]
    assert [(r["name"], r["initialized"], r["last_archive"]) for r in listing] == [
        ("main", True, None)]

    box.ok("run", "nightly")
    archives = json.loads(box.ok("repo", "list", "main", "--json").stdout)["archives"]
    assert len(archives) == 1 and archives[0]["name"].startswith("nightly-")

    info = json.loads(box.ok("repo", "info", "main", "--json").stdout)
    assert info["borg"]["encryption"]["mode"] == "repokey-blake2"
    assert info["repo"]["last_archive"]["archive"] == archives[0]["name"]
    text = box.ok("repo", "info", "main").stdout
    assert "last archive: nightly-" in text and "by job nightly" in text

    key = box.root / "main.key"
    box.ok("repo", "key-export", "main", str(key))
    assert key.read_text().startswith("BORG_KEY ")
    # The export is remembered (path and time, never the key) for `phobos doctor`.
    exports = json.loads((box.root / "state" / "key-exports.json").read_text())
    assert exports["main"]["path"] == str(key)
    assert "BORG_KEY" not in json.dumps(exports)


def test_passphrase_never_in_history_or_output(sandbox: Any) -> None:
    box = initialized(sandbox)
    runs = [box.phobos("run", "nightly") for _ in range(2)]
    assert all(r.returncode == 0 for r in runs)
    database = b"".join(p.read_bytes() for p in (box.root / "state").iterdir() if p.is_file())
    assert PASSPHRASE.encode() not in database
    assert all(PASSPHRASE not in r.stdout + r.stderr for r in runs)
    steps = json.loads(box.ok("log", str(box.last_run("nightly")["id"]), "--json").stdout)
    assert steps["steps"][0]["argv"][1] == "create"
    assert PASSPHRASE not in json.dumps(steps)


def test_wrong_passphrase_fails_with_meaning(sandbox: Any, each_borg: tuple[int, ...]) -> None:
    box = initialized(sandbox)
    (box.root / "borg.pass").write_text("not the passphrase\n")
    result = box.phobos("run", "nightly")
    assert result.returncode == 1
    message = box.last_run("nightly")["message"]
    if each_borg >= (1, 4):  # a modern exit code phobos explains
        assert "exit code 52 (wrong passphrase)" in message
    else:  # Borg 1.2 exits 2 for every error: its own line says which
        assert "exit code 2 (error: " in message
        assert "BORG_PASSPHRASE_FD is incorrect" in message
    assert message in result.stdout


def test_unknown_repo_and_uninitialized(sandbox: Any) -> None:
    box = BorgBox(sandbox)
    box.write("")
    result = box.phobos("repo", "info", "mian")
    assert result.returncode == 2 and "did you mean 'main'" in result.stderr
    listing = box.ok("repo", "list").stdout
    assert "not initialized" in listing
    missing = box.phobos("repo", "list", "main")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert not Path(box.repo).exists()


BORG = borgtool.Borg(path="borg", version=(1, 4, 5))


def test_host_id_is_the_same_in_a_network_namespace_without_mac() -> None:
    """Borg's own default would be random there (uuid.getnode() finds no MAC)."""
    probe = [sys.executable, "-c",
             "from phobos.tools.borg_repository import host_id; print(host_id())"]
    env = {k: v for k, v in os.environ.items() if k != "BORG_HOST_ID"}
    inside = [subprocess.run(["unshare", "--net", *probe], capture_output=True, text=True,
                             env=env, check=True).stdout.strip() for _ in range(2)]
    outside = subprocess.run(probe, capture_output=True, text=True, env=env,
                             check=True).stdout.strip()
    assert inside == [outside, outside]
    machine_id = Path("/etc/machine-id").read_text().strip()
    assert outside.endswith(f"@{machine_id}")


def test_a_stale_lock_from_a_unit_without_network_is_cleared(sandbox: Any) -> None:
    """A Borg killed inside a network namespace with no MAC address (a unit with
    PrivateNetwork=yes) leaves its lock behind. Borg removes a stale lock only if it
    names this host; by default it names the host by a MAC address, random in such a
    namespace. phobos gives Borg a stable host id, so the next run, in another such
    namespace, clears the lock instead of waiting for lock_wait."""
    box = initialized(sandbox)
    box.write("", repo_extra='lock_wait = "5m"')
    env = {**phobos_env(), **borgtool.access(BORG, box.repo, lock_wait=60,
                                             base_dir=box.root / "borgbase").env,
           "BORG_PASSPHRASE": PASSPHRASE}
    holder = subprocess.Popen(["unshare", "--net", "borg", "with-lock", str(box.repo),
                               "sleep", "600"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (box.repo / "lock.exclusive").exists(), what="the Borg lock")
    finally:
        subprocess.run(["pkill", "-KILL", "-f", f"borg with-lock {box.repo}"], check=False)
        holder.wait(timeout=30)
        subprocess.run(["pkill", "-KILL", "-f", "^sleep 600$"], check=False)
    assert (box.repo / "lock.exclusive").exists()  # stale now

    started = time.monotonic()
    listed = subprocess.run(["unshare", "--net", *sandbox.argv("repo", "list", "main",
                                                                  "--json")],
                            capture_output=True, text=True, timeout=240, env=phobos_env())
    assert listed.returncode == 0, listed.stderr
    assert "stale" in listed.stderr, listed.stderr
    assert time.monotonic() - started < 60  # not lock_wait (5 min)
    assert not (box.repo / "lock.exclusive").exists()
