"""Restores and drills from an off-site drive's copy, for real: loop-device ext4 "drives"
(``unlock = "none"``), a real Borg repository, the real backup mount namespace, the
real CLI. The drive is mounted read-only only inside the namespace, only while the
restore or drill runs, and is unmounted again on every path: after success, after a
path the copy does not hold, and after Borg fails in the middle of extracting (the
target filesystem full)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_drive_sync as drives

from conftest import Sandbox


@pytest.fixture
def rig(sandbox: Sandbox) -> Iterator[drives.Rig]:
    rig = drives.Rig(sandbox=sandbox, loops=drives.Loops(sandbox.root))
    try:
        yield rig
    finally:
        rig.teardown()


DRILL = """
    [jobs.drill-a]
    kind = "drill"
    repo = "main"
    from_drive = "ext-a"
    sample = 5
    """


def synced_drive(rig: drives.Rig) -> str:
    """ext-a holds archive a1; the NAS's repository has a1 and a2 (newer) by then."""
    drives.make_repo(rig.repo, rig.borg_base, rig.root / "data", 2, archive="a1")
    device = rig.loops.attach(rig.loops.image("a"))
    rig.configure({"ext-a": drives.uuid_of(device)}, extra=DRILL)
    synced = rig.sandbox.phobos("drive", "attached", "--uuid", drives.uuid_of(device))
    assert synced.returncode == 0, synced.stderr
    drives.make_repo(rig.repo, rig.borg_base, rig.root / "data", 1, archive="a2")
    return device


def events(rig: drives.Rig) -> list[str]:
    state = json.loads((rig.sandbox.state / "drives.json").read_text())
    return [e["event"] for e in state["events"] if e["drive"] == "ext-a"]


@pytest.mark.usefixtures("each_borg")  # with Borg 1.4 and 1.2
def test_restore_from_the_drive_copy_and_release_it(rig: drives.Rig) -> None:
    device = synced_drive(rig)
    data = rig.root / "data"
    target = rig.root / "restore"
    out = rig.sandbox.phobos("restore", f"{data}/a1-0.bin", "--to", str(target),
                             "--from-drive", "ext-a", "--json")
    assert out.returncode == 0, out.stderr
    done: dict[str, Any] = json.loads(out.stdout)
    assert (done["archive"], done["drive"], done["repo"]) == ("a1", "ext-a", "main")
    restored = target / str(data).lstrip("/") / "a1-0.bin"
    assert restored.read_bytes() == (data / "a1-0.bin").read_bytes()
    assert "mounted read-only" in out.stderr
    drives.not_mounted_anywhere(rig, device)
    assert events(rig)[-2:] == ["mounted", "released"]

    # The NAS's repository has a2; the drive's older copy does not.
    newer = rig.sandbox.phobos("restore", f"{data}/a2-0.bin", "--to", str(target),
                               "--from-drive", "ext-a")
    assert newer.returncode == 1
    assert "no archive of repository main on drive ext-a holds" in newer.stderr
    drives.not_mounted_anywhere(rig, device)
    from_nas = rig.sandbox.phobos("restore", f"{data}/a2-0.bin", "--to", str(target))
    assert from_nas.returncode == 0, from_nas.stderr
    runs = json.loads(rig.sandbox.phobos("history", "restore:main", "--json").stdout)["runs"]
    assert [(r["outcome"], r["stats"]["drive"]) for r in runs] == [
        ("success", None), ("failed", "ext-a"), ("success", "ext-a")]


@pytest.mark.usefixtures("each_borg")  # with Borg 1.4 and 1.2
def test_a_failure_in_the_middle_of_extracting_releases_the_drive(rig: drives.Rig) -> None:
    device = synced_drive(rig)
    small = rig.root / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)],
                   check=True)  # smaller than the 1 MiB file: Borg fails while writing it
    # Mounted after the backup namespace was made: inside it, small is another directory.
    restore = ("restore", f"{rig.root}/data/a1-0.bin", "--to", str(small), "--from-drive",
               "ext-a")
    hidden = rig.sandbox.phobos(*restore)
    assert hidden.returncode == 1 and "is another directory inside the backup mount " \
        "namespace" in hidden.stderr, hidden.stderr
    drives.not_mounted_anywhere(rig, device)

    assert rig.sandbox.phobos("ns", "destroy").returncode == 0  # made anew: small in it
    out = rig.sandbox.phobos(*restore)
    assert out.returncode == 1, out.stderr
    assert "borg failed" in out.stderr and "Traceback" not in out.stderr
    assert "unmounted" in out.stderr
    drives.not_mounted_anywhere(rig, device)
    assert list(small.iterdir()) == []  # the staging directory is gone too
    run = json.loads(rig.sandbox.phobos("history", "restore:main", "--json").stdout)["runs"][0]
    assert run["outcome"] == "failed" and "borg failed" in run["message"]


@pytest.mark.usefixtures("each_borg")  # with Borg 1.4 and 1.2
def test_a_drill_reads_the_drive_copy_and_drive_list_shows_it(rig: drives.Rig) -> None:
    device = synced_drive(rig)
    out = rig.sandbox.phobos("run", "drill-a")
    assert out.returncode == 0, out.stderr
    run = rig.history()[0]
    assert run["job"] == "drill-a" and run["outcome"] == "success"
    stats: Any = run["stats"]
    assert stats["drive"] == "ext-a" and stats["archive"] == "a1"  # the copy's newest
    assert stats["files_checked"] == 2 and stats["mismatches"] == 0
    drives.not_mounted_anywhere(rig, device)
    listed = rig.drive_list()["ext-a"]
    last: Any = listed["last_drill"]
    assert last["ok"] and last["run_id"] == run["id"]
    assert "LAST DRILL" in rig.sandbox.phobos("drive", "list").stdout

    rig.loops.detach(device)  # unplugged: nothing to drill, not a failure
    absent = rig.sandbox.phobos("run", "drill-a")
    assert absent.returncode == 3, absent.stderr
    assert rig.history()[0]["outcome"] == "skipped"
    assert Path(rig.sandbox.state / "drives.json").exists()


def test_ns_enter_finds_borg_next_to_phobos(rig: drives.Rig) -> None:
    """What `phobos drive mount` suggests works without the venv on PATH: `phobos ns
    enter borg ...` finds the Borg installed next to phobos, as phobos itself does."""
    rig.configure({"ext-a": "0b3c1a7e-0000-4000-8000-000000000001"})
    env = {**drives.phobos_env(), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    out = subprocess.run(rig.sandbox.argv("ns", "enter", "borg", "--version"), env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("borg 1.")
