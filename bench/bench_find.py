"""Benchmark: ``phobos find`` on a repository of a few hundred small archives.

Builds a repository of ``--archives`` archives (default 300) of a small tree, a host's
holding folder and local files, a few files changing between archives, as nightly
archives would. Then times, each as a whole ``phobos find`` process:

- *first find* (the baseline): an empty catalog, so every archive is listed with
  ``borg list`` once: what a search without a catalog costs every time;
- *find*: the catalog is current, one ``borg list`` of the archives to confirm it;
- *find after a night*: one new archive to list into the catalog;
- *find --cached*: the catalog alone, no Borg at all.

    .venv/bin/python bench/bench_find.py [--archives 300] [--files 60]

Prints each time and the ratio of the first find to the others (goal: a daily find
costs seconds, not a listing of every archive), the catalog's size, and checks that
every find gives the same answer.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PATTERN = "luv:/etc/fstab"


def env(base: Path) -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{VENV_BIN}:{out.get('PATH', '/usr/bin:/bin')}"
    out.update(BORG_PASSCOMMAND=f"cat {base}/pass", BORG_BASE_DIR=str(base / "borgbase"))
    out.pop("PHOBOS_CONFIG", None)
    return out


def borg(base: Path, *args: str) -> None:
    subprocess.run([str(VENV_BIN / "borg"), *args], env=env(base), check=True,
                   capture_output=True)


def night(base: Path, repo: Path, index: int) -> None:
    """One night's archive; fstab changes every 10th night, a log file every night."""
    etc = base / "backup" / "holding" / "luv" / "etc"
    if index % 10 == 0:
        (etc / "fstab").write_text(f"# fstab, version {index // 10}\n" + "x" * (index // 10))
    (base / "local" / "log.txt").write_text(f"night {index}\n")
    borg(base, "create", f"{repo}::nightly-{index:04d}", str(base / "backup" / "holding"),
         str(base / "local"))


def build(base: Path, archives: int, files: int) -> Path:
    (base / "pass").write_text("bench passphrase\n")
    repo = base / "backup" / "borg"
    borg(base, "init", "-e", "repokey-blake2", "--make-parent-dirs", str(repo))
    for directory in (base / "backup" / "holding" / "luv" / "etc", base / "local"):
        directory.mkdir(parents=True, exist_ok=True)
        for index in range(files // 2):
            (directory / f"file{index:03d}.conf").write_text(f"setting {index}\n")
    started = time.perf_counter()
    for index in range(archives):
        night(base, repo, index)
        if index % 50 == 49:
            print(f"  {index + 1} archives made ({time.perf_counter() - started:.0f}s)",
                  flush=True)
    return repo


def write_config(base: Path, repo: Path) -> Path:
    config = base / "phobos.toml"
    config.write_text(f"""\
[paths]
state = "{base}/state"
run = "{base}/run"

[storage]
root = "{base}/backup"
holding = "{base}/backup/holding"

[repos.main]
path = "{repo}"
passcommand = "cat {base}/pass"
base_dir = "{base}/borgbase"

[hosts.luv]
address = "luv.invalid"
""")
    return config


def find(base: Path, config: Path, *extra: str) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    out = subprocess.run([str(VENV_BIN / "python"), "-m", "phobos", "-c", str(config), "find",
                          PATTERN, "--json", *extra], env=env(base), check=True,
                         capture_output=True, text=True).stdout
    answer: dict[str, object] = json.loads(out)
    return time.perf_counter() - started, answer


def versions(answer: dict[str, object]) -> list[tuple[str, int]]:
    matches = answer["matches"]
    assert isinstance(matches, list)
    return [(v["archive"], v["archives"]) for m in matches for v in m["versions"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archives", type=int, default=300, help="archives in the repo")
    parser.add_argument("--files", type=int, default=60, help="files per archive")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each cached find")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phobos-bench-find-") as tmp:
        base = Path(tmp)
        print(f"building {args.archives} archives of {args.files + 2} files...", flush=True)
        repo = build(base, args.archives, args.files)
        config = write_config(base, repo)
        first, answer = find(base, config)
        assert answer["catalog"]["listed_now"] == args.archives  # type: ignore[index]
        warm = [find(base, config) for _ in range(args.repeat)]
        cached = [find(base, config, "--cached") for _ in range(args.repeat)]
        night(base, repo, args.archives)
        after_night, later = find(base, config)
        size = (base / "state" / "catalog" / "main.sqlite").stat().st_size
    expected = versions(answer)
    assert all(versions(a) == expected for _, a in (*warm, *cached)), "answers differ"
    assert len(versions(later)) >= len(expected)
    _report(args, first, [t for t, _ in warm], [t for t, _ in cached], after_night, size,
            len(expected))
    return 0


def _report(args: argparse.Namespace, first: float, warm: list[float], cached: list[float],
            after_night: float, size: int, found: int) -> None:
    warm_s, cached_s = statistics.median(warm), statistics.median(cached)
    print(f"phobos find {PATTERN} on {args.archives} archives ({found} versions found)")
    print(f"  first find (lists every archive: baseline) {first:8.2f} s")
    print(f"  find, catalog current (median of {len(warm)})    {warm_s:8.2f} s   "
          f"{first / warm_s:6.1f}x faster")
    print(f"  find after a night (lists 1 archive)      {after_night:8.2f} s   "
          f"{first / after_night:6.1f}x faster")
    print(f"  find --cached (no Borg; median of {len(cached)})     {cached_s:8.2f} s   "
          f"{first / cached_s:6.1f}x faster")
    print(f"  catalog: {size / 1024:.0f} KiB for {args.archives} archives")


if __name__ == "__main__":
    raise SystemExit(main())
