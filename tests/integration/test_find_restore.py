"""``phobos find`` and ``phobos restore`` against a real Borg repository, through the real
CLI: versions newest first with unchanged files once, each archive listed into the
catalog once, the catalog answering alone while a job holds the repository, pruned
archives forgotten; restores of a pulled host's file and directory and of a local
path, by time and by archive, and every refusal (the running root, an existing path,
a symbolic link in the way), each recorded in history."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
from borgbox import BorgBox, make_tree

from phobos.core.locks import LockSet, repo
from phobos.core.model import BusyPolicy

# Borg integration: every test runs with the venv's Borg 1.4 and Debian's 1.2.
pytestmark = pytest.mark.usefixtures("each_borg")


@pytest.fixture
def box(sandbox: Any) -> BorgBox:
    """Two archives of the holding area (host luv) and a local tree; luv's fstab changed
    in between, its hosts file did not."""
    box = BorgBox(sandbox)
    etc = box.holding / "luv" / "etc"
    etc.mkdir(parents=True)
    (etc / "fstab").write_text("fstab, first version\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    make_tree(box.root / "src", files=12)
    box.write(f"""\
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{box.holding}", "{box.root}/src"]
        archive_name = "{{job}}-{{now:%Y-%m-%dT%H:%M:%S.%f}}"
        """)
    box.ok("repo", "init", "main")
    box.ok("run", "nightly", "-q")
    # Borg (1.2.4 and 1.4.5 alike) records an archive's time in whole seconds: two
    # archives of one second tie for "newest", which a NAS's jobs never make.
    time.sleep(1.01 - time.time() % 1)
    (etc / "fstab").write_text("fstab, the second and longer version\n")
    box.ok("run", "nightly", "-q")
    return box


def find(box: BorgBox, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(box.ok("find", *args, "--json").stdout)
    return result


def test_find_versions_newest_first_each_archive_listed_once(box: BorgBox) -> None:
    first, second = box.archives()
    found = find(box, "fstab")
    assert found["catalog"]["listed_now"] == 2 and found["catalog"]["fresh"]
    [match] = found["matches"]
    assert (match["path"], match["host"]) == ("luv:/etc/fstab", "luv")
    assert match["archive_path"] == f"{str(box.holding).strip('/')}/luv/etc/fstab"
    assert [(v["archive"], v["size"], v["archives"]) for v in match["versions"]] == [
        (second, 37, 1), (first, 21, 1)]
    hosts = find(box, "luv:/etc/hosts")
    assert hosts["catalog"]["listed_now"] == 0  # both archives are in the catalog now
    [version] = hosts["matches"][0]["versions"]  # unchanged: one version, two archives
    assert (version["archive"], version["archives"]) == (second, 2)
    assert version["first"] < version["time"]

    text = box.ok("find", "/etc/*", "--host", "luv")
    assert "luv:/etc/fstab" in text.stdout and "luv:/etc/hosts" in text.stdout
    assert "catalog up to date; 0 archives listed now" in text.stdout
    assert find(box, "dir1/*", "--limit", "2")["more"] == 1  # 3 files in dir1

    cached = box.ok("find", "fstab", "--cached")
    assert "luv:/etc/fstab" in cached.stdout
    assert "not compared with the repository now" in cached.stdout

    box.borg("delete", f"{box.repo}::{first}")  # pruned
    again = find(box, "fstab")
    assert [v["archive"] for v in again["matches"][0]["versions"]] == [second]
    assert again["catalog"]["archives"] == 1


def test_a_busy_repository_is_answered_from_the_catalog(box: BorgBox) -> None:
    find(box, "fstab")
    held = LockSet(box.sandbox.run_dir / "locks", "nightly", 99)
    held.acquire([repo("main", write=True)], BusyPolicy.FAIL, 0.0)
    try:
        started = time.monotonic()
        found = find(box, "fstab")
    finally:
        held.release()
    assert time.monotonic() - started < 30  # no waiting for the job
    assert not found["catalog"]["fresh"] and found["catalog"]["age"] is not None
    note = found["catalog"]["note"]
    assert "job nightly" in note and "answered from the catalog alone" in note, note
    assert len(found["matches"][0]["versions"]) == 2


def restore(box: BorgBox, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(box.ok("restore", *args, "--json").stdout)
    return result


def test_restore_keeps_the_path_by_time_archive_and_whole_directory(box: BorgBox) -> None:
    first, second = box.archives()
    target = box.root / "restore"
    done = restore(box, "luv:/etc/fstab", "--to", str(target))
    assert done["destination"] == str(target / "luv" / "etc" / "fstab")
    assert (done["archive"], done["type"], done["items"]) == (second, "file", 1)
    assert (target / "luv/etc/fstab").read_text() == "fstab, the second and longer version\n"

    refused = box.phobos("restore", "luv:/etc/fstab", "--to", str(target))
    assert refused.returncode == 2 and "exists" in refused.stderr and "--overwrite" in \
        refused.stderr
    older = restore(box, "luv:/etc/fstab", "--to", str(target), "--overwrite",
                    "--archive", first)
    assert older["archive"] == first
    assert (target / "luv/etc/fstab").read_text() == "fstab, first version\n"
    when = find(box, "luv:/etc/fstab")["matches"][0]["versions"][1]["time"]
    by_time = restore(box, "luv:/etc/fstab", "--to", str(box.root / "r2"), "--at", when)
    assert by_time["archive"] == first

    whole = box.phobos("restore", "luv:/etc", "--to", str(box.root / "r3"))
    assert whole.returncode == 0, whole.stderr
    assert sorted(p.name for p in (box.root / "r3/luv/etc").iterdir()) == ["fstab", "hosts"]
    assert "restored 3 of 3 items" in whole.stderr  # the progress count: etc, fstab, hosts
    assert "(directory) from archive" in whole.stdout

    local = restore(box, f"{box.root}/src/dir2", "--to", str(box.root / "r4"))
    copy = box.root / "r4" / str(box.root / "src" / "dir2").lstrip("/")
    assert local["items"] == 4 and sorted(p.name for p in copy.iterdir()) == sorted(
        p.name for p in (box.root / "src" / "dir2").iterdir())
    assert (copy / "file0002.bin").read_bytes() == (
        box.root / "src/dir2/file0002.bin").read_bytes()

    runs = json.loads(box.ok("history", "restore:main", "--json").stdout)["runs"]
    assert [(r["kind"], r["outcome"]) for r in runs] == [("restore", "success")] * 5
    assert runs[-1]["stats"]["archive"] == second and runs[-1]["stats"]["path"] == \
        "luv:/etc/fstab"
    assert "borg extract of" in box.ok("log", str(runs[0]["id"])).stdout


def test_restore_refuses_and_never_writes_outside_the_target(box: BorgBox) -> None:
    root = box.phobos("restore", "luv:/etc/fstab", "--to", "/")
    assert root.returncode == 2 and "running system's root" in root.stderr

    target = box.root / "restore"
    outside = box.root / "outside"
    outside.mkdir()
    (outside / "fstab").write_text("not to be touched\n")
    target.mkdir()
    (target / "luv").symlink_to(outside)  # a link in the way: refused, even overwriting
    linked = box.phobos("restore", "luv:/fstab", "--to", str(target), "--overwrite")
    assert linked.returncode == 2 and "is a symbolic link" in linked.stderr
    (target / "luv").unlink()
    (target / "luv" / "etc").mkdir(parents=True)
    (target / "luv" / "etc" / "fstab").symlink_to(outside / "fstab")  # the file itself
    restore(box, "luv:/etc/fstab", "--to", str(target), "--overwrite")
    assert (outside / "fstab").read_text() == "not to be touched\n"
    assert not (target / "luv/etc/fstab").is_symlink()
    assert [p.name for p in target.iterdir()] == ["luv"]  # no staging directory left

    missing = box.phobos("restore", "luv:/etc/shadow", "--to", str(target))
    assert missing.returncode == 1 and "holds luv:/etc/shadow" in missing.stderr
    assert "phobos find luv:/etc/shadow" in missing.stderr
    unknown = box.phobos("restore", "luv:/etc/fstab", "--to", str(target), "--overwrite",
                         "--archive", "x")
    assert unknown.returncode == 2 and "has no archive named 'x'" in unknown.stderr
    for args in (["lvu:/etc/fstab"], ["etc/fstab"]):
        bad = box.phobos("restore", *args, "--to", str(target))
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr
    runs = json.loads(box.ok("history", "restore:main", "--json").stdout)["runs"]
    assert [r["outcome"] for r in runs][:2] == ["failed", "failed"]
    assert runs[1]["message"] == "no archive of repository main holds luv:/etc/shadow"
    assert os.listdir(target / "luv" / "etc") == ["fstab"]
