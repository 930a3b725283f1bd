"""Drive sync throughput: phobos's third strand against plain `cp -a`, then incremental.

A real Borg repository of about ``--gigabytes`` GB (incompressible data, 500 MB
segments as Borg writes them) is copied to an ext4 "drive" on a loop device (direct
I/O, so writes reach the disk as a real drive's would):

1. baseline: ``cp -a REPO DRIVE/borg`` + ``sync --file-system`` on a fresh drive,
   mount and unmount included;
2. full sync: ``phobos drive attached --uuid`` (namespace, mount, ``borg with-lock
   rsync -a --delete``, flush, verify, unmount) on another fresh drive of the same
   kind, wall time of the whole command;
3. incremental: a new archive adds about 1 % to the repo, then the same command again.

Twice: with the loop device as fast as this host's disk, and with its writes throttled
(cgroup v1 blkio, that device only) to ``--drive-mbps`` MB/s, what a USB 3 hard disk
sustains. The source is evicted from the page cache before each copy (its own pages
only), so both read from the disk. Best of ``--trials`` for each figure.

Goals (issue 5): full sync throughput >= 0.9x cp -a; incremental <= 10 % of the full
sync. Needs root. About 2 minutes at the default 2 GB.

    PATH=$PWD/.venv/bin:$PATH .venv/bin/python bench/bench_drive_sync.py [--gigabytes 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CHUNK = 8 << 20


def run(*argv: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(argv, check=True, capture_output=True, text=True, env=env)
    return out.stdout


def write_random(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(CHUNK, left)))
            left -= CHUNK


def make_repo(root: Path, size: int) -> tuple[Path, dict[str, str]]:
    repo = root / "backup" / "borg"
    repo.parent.mkdir(parents=True)
    env = {**os.environ, "BORG_BASE_DIR": str(root / "borgbase")}
    run("borg", "init", "--encryption=none", str(repo), env=env)
    data = root / "data"
    data.mkdir()
    for index in range(max(1, size // (64 << 20))):
        write_random(data / f"file-{index:04d}", 64 << 20)
    run("borg", "create", "--compression", "none", f"{repo}::full", str(data), env=env)
    shutil.rmtree(data)
    return repo, env


def evict(tree: Path) -> None:
    """Drop the tree's pages from the page cache (this tree only, unlike drop_caches), so
    a copy reads from the disk as it would from a NAS that did not just write it."""
    for path in tree.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


THROTTLE = Path("/sys/fs/cgroup/blkio/blkio.throttle.write_bps_device")


def attach(img: Path, mbps: float | None) -> str:
    """A direct-I/O loop device for ``img``, its writes throttled to ``mbps`` MB/s."""
    device = run("losetup", "--direct-io=on", "-f", "--show", str(img)).strip()
    if mbps:
        rdev = os.stat(device).st_rdev
        THROTTLE.write_text(f"{os.major(rdev)}:{os.minor(rdev)} {int(mbps * 1e6)}\n")
    return device


def detach(device: str) -> None:
    rdev = os.stat(device).st_rdev
    with contextlib.suppress(OSError):  # no rule, or no blkio controller
        THROTTLE.write_text(f"{os.major(rdev)}:{os.minor(rdev)} 0\n")
    subprocess.run(["losetup", "-d", device], check=False)


def fresh_image(root: Path, name: str, size: int) -> Path:
    img = root / f"{name}.img"
    img.unlink(missing_ok=True)
    run("truncate", "-s", str(size), str(img))
    # No lazy init: the kernel would zero inode tables in the background during the copy.
    run("mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-L", "extbackup",
        str(img))
    return img


@contextmanager
def loop_drive(root: Path, name: str, size: int, mbps: float | None) -> Iterator[str]:
    img = fresh_image(root, name, size)
    device = attach(img, mbps)
    try:
        yield device
    finally:
        detach(device)
        img.unlink()


def baseline_cp(root: Path, repo: Path, device: str) -> float:
    point = root / "cp-target"
    point.mkdir(exist_ok=True)
    started = time.perf_counter()
    run("mount", "-o", "nodev,nosuid,noexec,noatime", device, str(point))
    try:
        run("cp", "-a", str(repo), str(point / "borg"))
        run("sync", "--file-system", str(point))
    finally:
        run("umount", str(point))
    return time.perf_counter() - started


def write_config(root: Path, repo: Path, uuid: str) -> Path:
    config = root / "phobos.toml"
    config.write_text(textwrap.dedent(f"""\
        [paths]
        state = "{root}/state"
        run = "{root}/run"
        log = "{root}/log"
        keys = "{root}/keys"

        [repos.main]
        path = "{repo}"
        base_dir = "{root}/borgbase"
        encryption = "none"

        [drives.bench]
        luks_uuid = "{uuid}"
        unlock = "none"

        [jobs.offsite]
        kind = "drive-sync"
        repo = "main"
        drives = ["bench"]
        """))
    return config


def phobos_sync(config: Path, uuid: str) -> tuple[float, dict[str, float]]:
    """Wall time of `phobos drive attached`, and the run's stats and step durations."""
    cli = [sys.executable, "-m", "phobos", "-c", str(config)]
    started = time.perf_counter()
    run(*cli, "drive", "attached", "--quiet", "--uuid", uuid)
    wall = time.perf_counter() - started
    last = json.loads(run(*cli, "history", "--json", "--limit", "1"))["runs"][0]
    assert last["outcome"] == "success", last
    log = json.loads(run(*cli, "log", str(last["id"]), "--json"))
    steps = {s["name"]: s["ended"] - s["started"] for s in log["steps"]}
    return wall, {**last["stats"]["drives"]["bench"], **steps}


def add_one_percent(repo: Path, env: dict[str, str], root: Path, size: int) -> None:
    data = root / "more"
    data.mkdir()
    write_random(data / "new", size // 100)
    name = f"more-{time.time_ns()}"
    run("borg", "create", "--compression", "none", f"{repo}::{name}", str(data), env=env)
    shutil.rmtree(data)


@dataclass(frozen=True, slots=True)
class Figures:
    cp: float
    full: float
    copy: float
    incremental: float
    copied: float


def measure(root: Path, repo: Path, env: dict[str, str], mbps: float | None,
            trials: int) -> Figures:
    """Alternate cp -a and phobos full syncs on fresh drives, then incremental syncs on
    the last one; best time of each."""
    total = tree_bytes(repo)
    size = int(total * 1.3) + (256 << 20)
    cp = full = copy = incremental = float("inf")
    copied = 0.0
    for trial in range(trials):
        with loop_drive(root, "cp", size, mbps) as device:
            evict(repo)
            cp = min(cp, baseline_cp(root, repo, device))
        device = attach(fresh_image(root, "phobos", size), mbps)
        try:
            uuid = run("blkid", "-p", "-o", "value", "-s", "UUID", device).strip()
            config = write_config(root, repo, uuid)
            evict(repo)
            wall, stats = phobos_sync(config, uuid)
            full, copy = min(full, wall), min(copy, stats["copy-repo"])
            if trial == trials - 1:
                for _ in range(trials):
                    add_one_percent(repo, env, root, total)
                    evict(repo)
                    wall, stats = phobos_sync(config, uuid)
                    incremental, copied = min(incremental, wall), stats["copied_bytes"]
        finally:
            subprocess.run([sys.executable, "-m", "phobos", "-c", str(root / "phobos.toml"),
                            "ns", "destroy", "--force"], check=False, capture_output=True)
            detach(device)
    return Figures(cp=cp, full=full, copy=copy, incremental=incremental, copied=copied)


def report(title: str, total: int, got: Figures) -> None:
    ratio, share = got.cp / got.full, got.incremental / got.full
    print(title)
    print(f"  cp -a + sync:        {got.cp:6.2f}s  {total / got.cp / 1e6:6.1f} MB/s")
    print(f"  phobos full sync:    {got.full:6.2f}s  {total / got.full / 1e6:6.1f} MB/s  "
          f"(copy step alone {got.copy:.2f}s, {total / got.copy / 1e6:.1f} MB/s)")
    print(f"  phobos incremental:  {got.incremental:6.2f}s  after adding 1 % "
          f"({got.copied / 1e6:.1f} MB copied)")
    print(f"  full sync vs cp -a:  {ratio:.2f}x end to end, {got.cp / got.copy:.2f}x copy step"
          f"  (goal >= 0.9x: {'ok' if ratio >= 0.9 else 'missed'})")
    print(f"  incremental / full:  {share:.1%}  (goal <= 10%: "
          f"{'ok' if share <= 0.10 else 'missed'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--trials", type=int, default=3, help="best of N (default 3)")
    parser.add_argument("--drive-mbps", type=float, default=200.0,
                        help="write speed of the throttled drive (default 200 MB/s)")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"),
                        help="where the repo and drive images go (default /var/tmp)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="phobos-bench-drive-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        repo, env = make_repo(root, int(args.gigabytes * 1e9))
        total = tree_bytes(repo)
        print(f"repo: {total / 1e9:.2f} GB in {len(list(repo.rglob('*')))} entries "
              f"(made in {time.perf_counter() - t0:.1f}s); best of {args.trials} trials")
        report("drive as fast as this host's disk:", total,
               measure(root, repo, env, None, args.trials))
        report(f"drive writing at {args.drive_mbps:.0f} MB/s (a USB 3 hard disk):",
               tree_bytes(repo), measure(root, repo, env, args.drive_mbps, args.trials))
        print(f"bench took {time.perf_counter() - t0:.0f}s")
    finally:
        for line in run("losetup", "-a").splitlines():
            if str(root) in line:
                detach(line.split(":")[0])
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
