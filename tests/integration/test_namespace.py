"""The backup mount namespace for real: created by the CLI, the storage device mounted only
inside it, invisible outside, host mounts made later invisible inside, jobs that touch
the storage run inside it, and destroy leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_drive_sync import Loops, sh

from conftest import Sandbox, phobos_env
from phobos.config.load import load
from phobos.core.history import History
from phobos.repos.summary import summary


@dataclass
class Storage:
    sandbox: Sandbox
    device: str
    root: Path

    def host_mounts(self) -> list[str]:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
        return [line.split()[4] for line in lines
                if line.split()[4].startswith(str(self.sandbox.root))]


@pytest.fixture
def storage(sandbox: Sandbox) -> Iterator[Storage]:
    """A loop-device ext4 holding ``marker``, configured as ``[storage] device``."""
    loops = Loops(sandbox.root)
    content = sandbox.root / "content"
    content.mkdir()
    (content / "marker").write_text("only inside\n")
    img = sandbox.root / "storage.img"
    sh("truncate", "-s", "32M", str(img))
    sh("mkfs.ext4", "-q", "-d", str(content), str(img))
    device = loops.attach(img)
    root = sandbox.root / "backup"
    with _configured(sandbox, loops, device, root, f"""
        [jobs.inside]
        kind = "command"
        argv = ["cat", "{root}/marker"]
        reads = ["storage"]

        [repos.main]
        path = "{root}/borg"
        encryption = "none"
        base_dir = "{sandbox.root}/borgbase"

        [jobs.outside]
        kind = "command"
        argv = ["cat", "{root}/marker"]
        writes = ["custom:other"]
        """) as fixture:
        yield fixture


@contextlib.contextmanager
def _configured(sandbox: Sandbox, loops: Loops, device: str, root: Path,
                jobs: str) -> Iterator[Storage]:
    """The config with ``device`` as the storage at ``root`` plus ``jobs``; afterwards
    the namespace, every mount under the sandbox and the loop devices are gone."""
    sandbox.write(f"""
        [storage]
        root = "{root}"
        holding = "{root}/holding"
        device = "{device}"
        """ + jobs)
    fixture = Storage(sandbox=sandbox, device=device, root=root)
    try:
        yield fixture
    finally:
        sandbox.phobos("ns", "destroy", "--force")
        for point in reversed(fixture.host_mounts()):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        loops.cleanup()


def status(sandbox: Sandbox) -> dict[str, object]:
    out = sandbox.phobos("ns", "status", "--json")
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_storage_is_mounted_only_inside(storage: Storage) -> None:
    out = storage.sandbox.phobos("ns", "create")
    assert out.returncode == 0, out.stderr

    got = status(storage.sandbox)
    assert got["alive"] is True and got["invisible_outside"] is True
    hidden = {m["mountpoint"]: m for m in got["hidden"]}  # type: ignore[attr-defined]
    assert hidden[str(storage.root)]["source"] == storage.device
    # outside: not a mount point, the file is not there
    assert str(storage.root) not in storage.host_mounts()
    assert not (storage.root / "marker").exists()
    inside = storage.sandbox.phobos("ns", "enter", "cat", str(storage.root / "marker"))
    assert inside.returncode == 0 and inside.stdout == "only inside\n"
    text = storage.sandbox.phobos("ns", "status").stdout
    assert f"{storage.root}  ext4 {storage.device}  outside: not mounted" in text
    assert "invisible outside: yes" in text


def test_create_is_idempotent_even_when_racing(storage: Storage) -> None:
    racers = [storage.sandbox.start("ns", "create") for _ in range(4)]
    for racer in racers:
        _, err = racer.communicate(timeout=60)
        assert racer.returncode == 0, err
    first = status(storage.sandbox)
    assert storage.sandbox.phobos("ns", "create").returncode == 0
    assert status(storage.sandbox)["id"] == first["id"]
    ns_file = str(storage.sandbox.run_dir / "ns" / "mnt")
    assert storage.host_mounts().count(ns_file) == 1
    assert storage.host_mounts().count(str(storage.sandbox.run_dir / "ns")) == 1
    inside = storage.sandbox.phobos("ns", "enter", "grep", "-c", str(storage.root),
                                    "/proc/self/mountinfo")
    assert inside.stdout.strip() == "1"  # the storage was mounted once


def test_host_mounts_made_later_are_invisible_inside(storage: Storage) -> None:
    assert storage.sandbox.phobos("ns", "create").returncode == 0
    later = storage.sandbox.root / "later"
    later.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=1m", "later-tmpfs", str(later))
    try:
        inside = storage.sandbox.phobos("ns", "enter", "grep", "later-tmpfs",
                                        "/proc/self/mountinfo")
        assert inside.returncode == 1  # not found inside
    finally:
        sh("umount", str(later))


def test_jobs_touching_the_storage_run_inside(storage: Storage) -> None:
    inside = storage.sandbox.phobos("run", "inside")
    assert inside.returncode == 0, inside.stderr
    assert "joining the backup mount namespace" in inside.stderr
    assert "only inside" in inside.stderr  # the job's output, echoed

    outside = storage.sandbox.phobos("run", "outside")
    assert outside.returncode == 1
    assert "No such file or directory" in outside.stderr


def test_repo_verbs_work_on_the_hidden_storage(storage: Storage) -> None:
    """`phobos repo init` puts the repository on the storage inside the namespace, not
    under the empty mount point the host sees; the other repo verbs find it there."""
    box = storage.sandbox
    init = box.phobos("repo", "init", "main")
    assert init.returncode == 0, init.stderr
    assert "joining the backup mount namespace" in init.stderr
    assert not (storage.root / "borg").exists()
    inside = box.phobos("ns", "enter", "test", "-f", str(storage.root / "borg" / "config"))
    assert inside.returncode == 0, inside.stderr
    listing = box.phobos("repo", "list", "main", "--json")
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout)["archives"] == []
    every = box.phobos("repo", "list", "--json")
    assert every.returncode == 0, every.stderr
    assert [r["initialized"] for r in json.loads(every.stdout)["repos"]] == [True]
    # A process outside (the web dashboard) cannot see the files: unknown, not missing.
    config = load(box.config)
    history = History.open(config.paths.state)
    try:
        outside = summary(config, "main", history)
    finally:
        history.close()
    assert (outside["hidden"], outside["initialized"], outside["segments"]) == (
        True, None, None)


def test_destroy_leaves_nothing_behind(storage: Storage) -> None:
    assert storage.sandbox.phobos("ns", "create").returncode == 0
    assert storage.host_mounts()

    out = storage.sandbox.phobos("ns", "destroy")

    assert out.returncode == 0, out.stderr
    assert "backup namespace dropped" in out.stdout
    assert storage.host_mounts() == []
    devno = sh("lsblk", "-dno", "MAJ:MIN", storage.device).stdout.strip()
    assert list(Path(f"/sys/dev/block/{devno}/holders").iterdir()) == []
    gone = storage.sandbox.phobos("ns", "status")
    assert gone.returncode == 3 and "no backup namespace" in gone.stdout
    again = storage.sandbox.phobos("ns", "destroy")
    assert again.returncode == 0 and "no backup namespace to drop" in again.stdout


# --- the storage mounted in a unit's own namespace (PHOBOS_STORAGE_MOUNT=private) ----------


@pytest.fixture
def shared_storage(sandbox: Sandbox) -> Iterator[Storage]:
    """Storage whose mount point lies on a *shared* mount, as / is on a systemd host: a
    mount made there in the host's namespace would show in every namespace."""
    loops = Loops(sandbox.root)
    img = sandbox.root / "storage.img"
    sh("truncate", "-s", "32M", str(img))
    sh("mkfs.ext4", "-q", str(img))
    device = loops.attach(img)
    top = sandbox.root / "shared"
    top.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=1m", "phobos-shared", str(top))
    sh("mount", "--make-shared", str(top))
    root = top / "backup"
    root.mkdir()
    # The job writes where it may (its repository) and fails if it can write elsewhere.
    script = f"echo written > {root}/borg/mark && if touch {root}/stray; then exit 9; fi"
    with _configured(sandbox, loops, device, root, f"""
        [repos.main]
        path = "{root}/borg"

        [jobs.writer]
        kind = "command"
        argv = ["sh", "-c", "{script}"]
        writes = ["repo:main"]
        """) as fixture:
        yield fixture


def _run_private(storage: Storage, *wrapper: str) -> subprocess.CompletedProcess[str]:
    env = {**phobos_env(), "PHOBOS_STORAGE_MOUNT": "private"}
    return subprocess.run([*wrapper, *storage.sandbox.argv("run", "writer")], env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_unit_mounts_the_storage_in_its_own_namespace(shared_storage: Storage) -> None:
    """What the units of storage-only jobs do: the mount stays in the unit's (slave)
    namespace, writable only where the job writes, and never shows outside."""
    done = _run_private(shared_storage, "unshare", "--mount", "--propagation", "slave")
    assert done.returncode == 0, done.stderr
    assert "step mount-storage: mount" in done.stderr
    assert "step storage-read-only" in done.stderr  # the touch of stray failed: exit 0
    assert "Read-only file system" in done.stderr
    assert shared_storage.host_mounts() == [str(shared_storage.root.parent)]
    inside = shared_storage.sandbox.phobos("ns", "enter", "cat",
                                           str(shared_storage.root / "borg" / "mark"))
    assert inside.stdout == "written\n", inside.stderr


def test_private_storage_mount_refused_where_it_would_propagate(
        shared_storage: Storage) -> None:
    done = _run_private(shared_storage)  # the host's own namespace: the mount would show
    assert done.returncode != 0
    assert "would propagate out of this mount namespace" in done.stderr, done.stderr
    assert shared_storage.host_mounts() == [str(shared_storage.root.parent)]


# What `phobos ns create` does, on CPU $1: exit 0 when the kernel keeps the namespace there.
PROBE = """
D=$(mktemp -d) && mount --bind "$D" "$D" && mount --make-private "$D" && touch "$D/mnt"
taskset --cpu-list "$1" unshare --mount="$D/mnt" --propagation private true 2>/dev/null
rc=$?; umount "$D/mnt" 2>/dev/null; umount "$D"; rm -rf "$D"; exit $rc
"""

# In a mount namespace made on CPU $1 (as a container's is): which CPUs the kernel keeps a
# new namespace on, then `phobos ns create` free to use every CPU, then its status.
NESTED = """
for cpu in $CPUS; do
    if sh -c "$PROBE" probe "$cpu"; then echo "probe: ok $cpu"; else echo "probe: refused $cpu"; fi
done
taskset --cpu-list "$ALL" "$@" ns create 2>&1 && "$@" ns status --json
"""


def test_create_in_a_nested_namespace_tries_each_cpu(sandbox: Sandbox) -> None:
    """Inside a container (a mount namespace that is not the first) this kernel keeps a
    new namespace only when it was made on some CPUs: phobos tries each in turn."""
    sandbox.write("")
    cpus = sorted(os.sched_getaffinity(0))
    retried = []
    for outer in cpus:
        env = {**phobos_env(), "PROBE": PROBE, "CPUS": " ".join(map(str, cpus)),
               "ALL": ",".join(map(str, cpus))}
        done = subprocess.run(["taskset", "--cpu-list", str(outer), "unshare", "--mount",
                               "--propagation", "private", "sh", "-c", NESTED, "nested",
                               *sandbox.argv()], capture_output=True, text=True, env=env,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        verdicts = dict(reversed(line.split()[1:]) for line in lines
                        if line.startswith("probe: "))
        first_ok = next(cpu for cpu in cpus if verdicts[str(cpu)] == "ok")
        attempts = [line for line in lines if line.startswith("step ns-create:")]
        assert attempts == [f"step ns-create: taskset --cpu-list {cpu} unshare "
                            f"--mount={sandbox.run_dir}/ns/mnt --propagation private true"
                            for cpu in cpus if cpu <= first_ok], done.stdout
        assert "backup namespace ready" in done.stdout
        assert json.loads(done.stdout[done.stdout.index("{"):])["alive"] is True
        if first_ok != cpus[0]:
            retried.append(outer)
            assert "Invalid argument" in done.stdout
    # Nothing of it outside: the nested namespaces ended with their processes.
    assert str(sandbox.run_dir / "ns" / "mnt") not in Path("/proc/self/mountinfo").read_text()
    print(f"namespaces made on CPU {retried} needed a retry on another CPU")
