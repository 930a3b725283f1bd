"""phobos at scale: 100 hosts pulled over shaped links, and the views with a big history.

1. **Pull window and memory.** 100 lab hosts (sshd in network namespaces,
   :mod:`phobos.dev.lab`), each serving a small tree over a link shaped with tc tbf on
   the host's side, pulled by one job with ``max_parallel = 8``. The *ideal* window is
   the total bytes over the aggregate link rate at 8 parallel (8 × the rate): what the
   links allow if nothing else cost time. The baseline, measured in the same run: the
   same rsync commands (transfer and prune pass per host) from a shell, ``xargs -P 8``;
   it shows what this machine's CPUs and the shaped links allow. Printed: the ideal,
   the baseline, phobos's window and its ratios to both (target ≤ 1.15 × ideal), and
   the peak memory of the phobos process tree during the run, sampled
   every 0.1 s: the sum of its processes' RSS (rsync and ssh included) and of their PSS
   (shared pages counted once), target ≤ 150 MB.
2. **Views at 100 hosts and 1,000,000 history rows.** A config with the 100 hosts and the
   Borg and off-site jobs of a NAS, its history filled with 1,000,000 runs (and a log
   for the newest run of each job), the hosts pulled by one job (as in part 1; 6 jobs
   in all) and then by one job per host (105 jobs). Printed: median wall time of
   ``phobos status`` (target 150 ms), ``phobos schedule --days 7`` (target 300 ms),
   and the dashboard's overview page through the ASGI app (target 200 ms), each
   against the same config with 10 runs per job, measured alternately in the same run
   (what the history's size costs, whatever the machine's load).

    sudo .venv/bin/python bench/bench_scale.py [--hosts 100] [--parallel 8]
        [--kib 4096] [--rate 4mbit] [--rows 1000000] [--pull-jobs 1 100]
        [--skip-pull] [--skip-views]

The pull part takes three to four minutes, the views part two to three; not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_web import request  # noqa: E402
from phobos.config.load import load  # noqa: E402
from phobos.core.history import History  # noqa: E402
from phobos.dev.lab import Lab, sh  # noqa: E402
from phobos.jobs.pull import plan_host  # noqa: E402
from phobos.tools import rsync  # noqa: E402
from phobos.web.app import create_app  # noqa: E402

RATIO_TARGET = 1.15
MEMORY_TARGET_MB = 150.0
TARGETS_MS = {"status": 150.0, "schedule --days 7": 300.0, "web overview": 200.0}
FILES_PER_HOST = 16


# --- 1. the pull --------------------------------------------------------------------------


def rate_bytes(rate: str) -> float:
    """Bytes per second of a tc rate such as ``8mbit``."""
    units = {"kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8}
    for unit, factor in units.items():
        if rate.endswith(unit):
            return float(rate.removesuffix(unit)) * factor
    raise SystemExit(f"unknown rate {rate!r}: use kbit, mbit or gbit")


def prepare_hosts(lab: Lab, root: Path, kib: int, rate: str) -> int:
    """Trees, pinned keys, the pull key authorized read-only, links shaped; returns the
    total bytes to pull. Keys are pinned from the hosts' own files (what `phobos host
    add` would pin after confirmation), which keeps 100 hosts' set-up short."""
    keys = root / "keys"
    keys.mkdir(mode=0o700)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f",
       str(keys / "pull_ed25519"))
    public = (keys / "pull_ed25519.pub").read_text().strip()
    known, total = [], 0
    size = kib * 1024 // FILES_PER_HOST
    for host in lab.hosts:
        tree = host.srv / "data"
        tree.mkdir()
        for index in range(FILES_PER_HOST):
            (tree / f"f{index:02d}.bin").write_bytes(os.urandom(size))
            total += size
        kind, blob = host.host_key.with_suffix(".pub").read_text().split()[:2]
        known.append(f"{host.name} {kind} {blob}\n")
        host.authorize(f'command="/usr/bin/rrsync -ro {host.srv}",restrict {public}')
        host.shape(rate)
    (keys / "known_hosts").write_text("".join(known))
    return total


def pull_config(lab: Lab, root: Path, parallel: int) -> Path:
    hosts = "".join(f'[hosts.{h.name}]\naddress = "{h.address}"\npaths = ["{h.srv}/data"]\n'
                    f'rrsync_root = "{h.srv}"\n\n' for h in lab.hosts)
    names = ", ".join(f'"{h.name}"' for h in lab.hosts)
    config = root / "phobos.toml"
    config.write_text(textwrap.dedent(f"""\
        [paths]
        state = "{root}/state"
        run = "{root}/run"
        log = "{root}/log"
        keys = "{root}/keys"

        [storage]
        root = "{root}/backup"
        holding = "{root}/backup/holding"

        """) + hosts + f'[jobs.pull-all]\nkind = "pull"\nhosts = [{names}]\n'
        f"max_parallel = {parallel}\n")
    (root / "backup" / "holding").mkdir(parents=True)
    return config


def baseline_script(config_path: Path, root: Path, parallel: int) -> Path:
    """The same rsync commands phobos plans (transfer and prune pass per host), run by
    ``xargs -P PARALLEL`` from a shell: what this machine and these links do without
    phobos, measured in the same run."""
    config = load(config_path)
    scripts = root / "baseline"
    scripts.mkdir()
    for name in config.hosts:
        folder = config.storage.holding / name
        folder.mkdir(parents=True, exist_ok=True)
        plan = plan_host(config, name, rsync.target_features(folder))
        plan.dest.mkdir(parents=True, exist_ok=True)
        (scripts / f"{name}.sh").write_text(f"{shlex.join(plan.pull.argv)} >/dev/null\n"
                                            f"{shlex.join(plan.prune.argv)} >/dev/null\n")
    runner = root / "baseline.sh"
    runner.write_text(f"set -e\ncd {shlex.quote(str(scripts))}\n"
                      f"ls | xargs -P {parallel} -n 1 sh -e\n")
    return runner


def empty(holding: Path) -> None:
    for child in holding.iterdir():
        shutil.rmtree(child)


def tree_of(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in KiB of ``pids`` (gone ones count 0)."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


class Sampler(threading.Thread):
    """Peak memory of a process tree, sampled every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_rss = self.peak_pss = self.peak_processes = self.peak_own = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pids = tree_of(self.pid)
            rss, pss = memory_kib(pids)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, len(pids))
            self.peak_own = max(self.peak_own, memory_kib([self.pid])[0])
            time.sleep(self.every)


def bench_pull(args: argparse.Namespace) -> None:
    names = tuple(f"h{i}" for i in range(1, args.hosts + 1))
    with tempfile.TemporaryDirectory(prefix="phobos-bench-scale-") as tmp:
        root = Path(tmp)
        started = time.monotonic()
        with Lab(root=root / "lab", names=names) as lab:
            total = prepare_hosts(lab, root, args.kib, args.rate)
            config = pull_config(lab, root, args.parallel)
            print(f"  lab: {args.hosts} hosts ready in {time.monotonic() - started:.0f} s")
            script = baseline_script(config, root, args.parallel)
            begun = time.monotonic()
            sh(*lab.in_client("sh", str(script)), timeout=3600)
            baseline = time.monotonic() - begun
            empty(root / "backup" / "holding")
            argv = lab.phobos_argv(config, "run", "pull-all", "-q")
            begun = time.monotonic()
            child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, stdin=subprocess.DEVNULL)
            sampler = Sampler(child.pid)
            sampler.start()
            out, err = child.communicate()
            window = time.monotonic() - begun
            sampler.done.set()
            sampler.join()
            if child.returncode != 0:
                raise SystemExit(f"phobos run failed ({child.returncode}): {out}{err}")
            pulled = sum(p.stat().st_size for p in (root / "backup" / "holding").rglob("*")
                         if p.is_file())
            if pulled != total:
                raise SystemExit(f"pulled {pulled} bytes, expected {total}")
    ideal = total / (args.parallel * rate_bytes(args.rate))
    ratio = window / ideal
    print(f"pull of {args.hosts} hosts × {args.kib} KiB over {args.rate} links, "
          f"max_parallel = {args.parallel}")
    print(f"  ideal {ideal:7.1f} s (total bytes / ({args.parallel} × link rate))")
    print(f"  the same rsync commands, xargs -P {args.parallel} (baseline): {baseline:7.1f} s "
          f"= {baseline / ideal:.3f} × ideal")
    print(f"  phobos run: {window:7.1f} s = {ratio:.3f} × ideal (target <= {RATIO_TARGET}: "
          f"{'met' if ratio <= RATIO_TARGET else 'NOT met'}), {window / baseline:.3f} × "
          "baseline")
    rss_mb, pss_mb = sampler.peak_rss / 1024, sampler.peak_pss / 1024
    print(f"  phobos's own process: peak RSS {sampler.peak_own / 1024:.0f} MB")
    print(f"  peak memory of the phobos process tree ({sampler.peak_processes} processes "
          f"at most): RSS sum {rss_mb:.0f} MB, PSS sum {pss_mb:.0f} MB "
          f"(target <= {MEMORY_TARGET_MB:.0f} MB: "
          f"{'met' if rss_mb <= MEMORY_TARGET_MB else 'NOT met'} by RSS, "
          f"{'met' if pss_mb <= MEMORY_TARGET_MB else 'NOT met'} by PSS)")


# --- 2. the views ---------------------------------------------------------------------------


def views_config(root: Path, hosts: int, pull_jobs: int) -> Path:
    """``hosts`` hosts pulled by ``pull_jobs`` jobs (1: one job pulls them all, 8 at a
    time, as in part 1), and a NAS's Borg and off-site jobs."""
    lines = [textwrap.dedent(f"""\
        [paths]
        state = "{root}/state"
        run = "{root}/run"
        log = "{root}/log"
        keys = "{root}/keys"

        [storage]
        root = "{root}/backup"
        holding = "{root}/backup/holding"

        [repos.main]
        path = "{root}/backup/borg"

        [repos.offsite]
        url = "ssh://borg@offsite.example.org/srv/borg/nas"

        [drives.ext-a]
        luks_uuid = "2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11"

        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{root}/backup/holding"]
        schedule = "*-*-* 03:00"
        keep = {{ daily = 7, weekly = 4 }}

        [jobs.offsite-archive]
        kind = "archive"
        repo = "offsite"
        sources = ["{root}/backup/holding"]
        schedule = "*-*-* 04:00"

        [jobs.check]
        kind = "check"
        repo = "main"
        schedule = "*-*-* 05:00"
        max_duration = "1h"

        [jobs.cloud]
        kind = "cloud-sync"
        repo = "main"
        remote = "b2:bucket/nas"
        schedule = "*-*-* 06:00"

        [jobs.drive]
        kind = "drive-sync"
        repo = "main"
        drives = ["ext-a"]
        """)]
    for index in range(1, hosts + 1):
        lines.append(f'[hosts.h{index}]\naddress = "10.231.{index}.2"\npaths = ["/etc"]\n')
    for job in range(pull_jobs):
        names = ", ".join(f'"h{i}"' for i in range(1, hosts + 1) if i % pull_jobs == job)
        lines.append(f'[jobs.pull-{job}]\nkind = "pull"\nhosts = [{names}]\n'
                     f'max_parallel = 8\nschedule = "*-*-* {job % 3}:{(job * 7) % 60:02d}"\n')
    root.mkdir(parents=True, exist_ok=True)
    path = root / "phobos.toml"
    path.write_text("\n".join(lines))
    return path


def _stats(kind: str, rng: random.Random) -> str:
    if kind == "pull":
        return json.dumps({"files": rng.randint(1000, 50000), "bytes_transferred":
                           rng.randint(10**5, 10**8), "files_transferred": rng.randint(0, 99)})
    if kind == "archive":
        size = rng.randint(10**6, 10**9)
        return json.dumps({"archive": "a", "repo": "main", "deduplicated_size": size,
                           "original_size": size * 40, "nfiles": rng.randint(1000, 90000)})
    if kind == "check":
        return json.dumps({"repo": "main", "segments": 5000, "checked_segments": 1200,
                           "coverage": 0.24, "pass_complete": False, "position": 1200,
                           "last_full_pass": time.time() - 86400 * 9})
    return "{}"


def fill(config_path: Path, rows: int, rng: random.Random) -> None:
    """``rows`` runs spread over the jobs, one per job and day going back in time, in
    batches (ids in time order); the newest run of each job gets a 20-line log."""
    config = load(config_path)
    history = History.open(config.paths.state)
    db = history.db
    jobs = sorted(config.jobs.items())
    per_job = max(1, rows // len(jobs))
    now = time.time()
    db.execute("BEGIN")
    for day in range(per_job, 0, -1):
        batch = []
        for name, job in jobs:
            started = now - day * 86400 + rng.uniform(0, 3600)
            ended = started + rng.uniform(20, 900)
            outcome = rng.choices(("success", "warning", "failed"), (94, 4, 2))[0]
            batch.append((name, str(job.kind), "timer", started, started + 0.05, ended,
                          outcome, 0 if outcome != "failed" else 1,
                          None if outcome == "success" else "step x: exit 1",
                          _stats(str(job.kind), rng), 1, 1))
        db.executemany("INSERT INTO runs (job, kind, trigger, started, locked, ended, "
                       "outcome, exit_code, message, stats, pid, pid_start) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
    for name, _ in jobs:
        run_id = db.execute("SELECT MAX(id) FROM runs WHERE job = ?", (name,)).fetchone()[0]
        db.executemany("INSERT INTO log VALUES (?, ?, ?, ?, ?)",
                       [(run_id, seq, now, "stdout", f"line {seq}") for seq in range(1, 21)])
    db.execute("COMMIT")
    history.close()


def cli_env() -> dict[str, str]:
    """The environment of an installed phobos: bytecode caches are written (the first,
    untimed run writes them), as Debian's packages ship them compiled."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def cli_once(config: Path, args: list[str]) -> float:
    """Milliseconds of one ``phobos -c CONFIG ARGS``."""
    argv = [sys.executable, "-m", "phobos", "-c", str(config), *args]
    begun = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=cli_env())
    return (time.perf_counter() - begun) * 1000


def web_once(app: Any, path: str) -> float:
    """Milliseconds of one GET through the ASGI app (a fresh history connection)."""
    begun = time.perf_counter()
    status, _ = asyncio.run(request(app, path))
    if status != 200:
        raise SystemExit(f"GET {path}: {status}")
    return (time.perf_counter() - begun) * 1000


def measure_views(base: Path, big: Path, repeat: int) -> dict[str, tuple[float, float]]:
    """Per view, (median ms with the small history, median ms with the big one). The two
    are measured alternately, so that the load of a shared machine hits both alike;
    each is run once untimed first (bytecode caches, SQLite's page cache)."""
    apps = {path: create_app(load(path), token=None) for path in (base, big)}
    views: dict[str, Any] = {
        "--help": lambda p: cli_once(p, ["--help"]),
        "status": lambda p: cli_once(p, ["status"]),
        "schedule --days 7": lambda p: cli_once(p, ["schedule", "--days", "7"]),
        "web overview": lambda p: web_once(apps[p], "/"),
    }
    found = {}
    for name, once in views.items():
        samples: dict[Path, list[float]] = {base: [], big: []}
        for path in (base, big):
            once(path)
        for _ in range(repeat):
            for path in (base, big):
                samples[path].append(once(path))
        found[name] = (statistics.median(samples[base]), statistics.median(samples[big]))
    return found


def history_rows(config_path: Path) -> int:
    history = History.open(load(config_path).paths.state)
    count = int(history.db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    history.close()
    return count


def bench_views(args: argparse.Namespace, pull_jobs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="phobos-bench-views-") as tmp:
        base = views_config(Path(tmp) / "base", args.hosts, pull_jobs)
        big = views_config(Path(tmp) / "big", args.hosts, pull_jobs)
        jobs = len(load(base).jobs)
        fill(base, 10 * jobs, random.Random(1))
        started = time.monotonic()
        fill(big, args.rows, random.Random(2))
        rows = history_rows(big)
        print(f"views at {args.hosts} hosts in {pull_jobs} pull job(s), {jobs} jobs, "
              f"{rows:,} runs in history "
              f"(filled in {time.monotonic() - started:.0f} s; baseline: 10 runs per job)")
        _print_views(measure_views(base, big, args.repeat))


def _print_views(results: dict[str, tuple[float, float]]) -> None:
    for name, (small, value) in results.items():
        if name not in TARGETS_MS:  # phobos's start-up alone: this machine's floor now
            print(f"  {name:<18} {value:7.1f} ms  (phobos's start-up alone, no target: "
                  "what this machine's load costs every command)")
            continue
        target = TARGETS_MS[name]
        print(f"  {name:<18} {value:7.1f} ms  ({value / small:.2f}× the {small:.1f} ms with "
              f"10 runs per job; target <= {target:.0f} ms: "
              f"{'met' if value <= target else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--kib", type=int, default=4096, help="data per host (KiB)")
    parser.add_argument("--rate", default="4mbit", help="tc tbf rate of each host's link")
    parser.add_argument("--rows", type=int, default=1_000_000, help="runs in history")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--skip-pull", action="store_true")
    parser.add_argument("--skip-views", action="store_true")
    parser.add_argument("--pull-jobs", type=int, nargs="+", default=[1, 100],
                        help="views with the hosts in this many pull jobs (default: 1, "
                        "as in part 1, and 100: one job per host)")
    args = parser.parse_args()
    if not args.skip_pull:
        bench_pull(args)
    if not args.skip_views:
        for pull_jobs in args.pull_jobs:
            bench_views(args, pull_jobs)


if __name__ == "__main__":
    main()
