"""Render time of the dashboard's pages with a history of 100 jobs × 1,000 runs.

Target (issue 11): a page renders in under 200 ms on this machine. Each page is
requested through the whole ASGI app in this process (the token/Host guard, the route,
a fresh read-only connection, the template), without the network; the figure is the
median (and p95) wall time. Printed against a baseline measured in the same run: the
same pages with a history of 100 jobs × 10 runs.

Rows are inserted directly through :class:`phobos.core.history.History` (its connection and
schema): 70 command, 20 archive (with Borg stats) and 10 check jobs (with coverage),
one run every six hours each, some failed or with warnings; one run has a 5,000-line log.

    .venv/bin/python bench/bench_web.py [--jobs 100] [--runs 1000] [--repeat 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from phobos.config.load import load
from phobos.config.model import Config
from phobos.core.history import History
from phobos.web.app import create_app

TARGET_MS = 200.0
PAGES = ("/", "/jobs/job-042", "/timeline", "/drives", "/runs/{log_run}", "/metrics",
         "/api/status")


def kind_of(index: int) -> str:
    return "archive" if index % 10 in (1, 4) else "check" if index % 10 == 7 else "command"


def write_config(root: Path, jobs: int) -> Path:
    lines = [f'[paths]\nstate = "{root}/state"\nrun = "{root}/run"\nlog = "{root}/log"\n'
             f'keys = "{root}/keys"\n\n[repos.main]\npath = "{root}/borg"\n',
             '[drives.ext-a]\nluks_uuid = "2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11"\n'
             '[drives.ext-b]\nluks_uuid = "a2ea-96ed"\n'
             '[jobs.offsite]\nkind = "drive-sync"\nrepo = "main"\ndrives = ["ext-a", "ext-b"]\n']
    for index in range(jobs - 1):
        kind = kind_of(index)
        body = {"archive": 'repo = "main"\nsources = ["/etc"]\n',
                "check": 'repo = "main"\n',
                "command": 'argv = ["true"]\nwrites = ["storage"]\n'}[kind]
        lines.append(f'[jobs.job-{index:03d}]\nkind = "{kind}"\n{body}'
                     f'schedule = "*-*-* {index % 24:02d}:{(index * 7) % 60:02d}"\n')
    lines.append('[notify.led]\ndriver = "none"\n\n[web]\n')
    root.mkdir(parents=True, exist_ok=True)
    path = root / "phobos.toml"
    path.write_text("\n".join(lines))
    return path


def stats_for(kind: str, rng: random.Random) -> dict[str, Any]:
    if kind == "archive":
        size = rng.randint(10**6, 10**9)
        return {"archive": "a", "repo": "main", "deduplicated_size": size,
                "original_size": size * 40, "nfiles": rng.randint(1000, 90000)}
    if kind == "check":
        return {"repo": "main", "segments": 5000, "checked_segments": 1200,
                "coverage": round(rng.random(), 4), "pass_complete": False,
                "last_full_pass": time.time() - 86400 * rng.randint(1, 30)}
    return {}


def fill(config: Config, runs: int, rng: random.Random) -> int:
    """Insert ``runs`` runs per job; returns the id of the run given a long log."""
    history = History.open(config.paths.state)
    now = time.time()
    rows = []
    for name, job in config.jobs.items():
        kind = str(job.kind)
        for index in range(runs):
            started = now - (runs - index) * 6 * 3600 + rng.uniform(0, 600)
            locked = started + rng.choice((0.05, 0.05, 0.05, 30.0))
            ended = locked + rng.uniform(20, 3600)
            outcome = rng.choices(("success", "warning", "failed"), (90, 6, 4))[0]
            rows.append((name, kind, "timer", started, locked, ended, outcome,
                         0 if outcome != "failed" else 1,
                         None if outcome == "success" else "step x: exit 1",
                         json.dumps(stats_for(kind, rng)), 1, 1))
    rows.sort(key=lambda r: r[3])  # ids in time order, as real runs get them
    db = history.db
    db.execute("BEGIN")
    db.executemany("INSERT INTO runs (job, kind, trigger, started, locked, ended, outcome, "
                   "exit_code, message, stats, pid, pid_start) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    log_run = int(db.execute("SELECT MAX(id) FROM runs WHERE job = 'job-042'").fetchone()[0])
    db.executemany("INSERT INTO log VALUES (?, ?, ?, ?, ?)",
                   [(log_run, seq, now, "stdout", f"line {seq}: /home/user/file-{seq}.txt")
                    for seq in range(1, 5001)])
    db.execute("COMMIT")
    history.close()
    return log_run


async def request(app: Any, path: str) -> tuple[int, int]:
    """GET ``path`` through the ASGI app; (status, body bytes)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": [(b"host", b"127.0.0.1:8470")],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8470)}
    status, size = 0, 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, size
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    await app(scope, receive, send)
    return status, size


def measure(app: Any, path: str, repeat: int) -> tuple[float, float, int]:
    """(median ms, p95 ms, body bytes) of ``repeat`` requests after two warm-ups."""

    async def run() -> tuple[list[float], int]:
        samples, size = [], 0
        for attempt in range(repeat + 2):
            started = time.perf_counter()
            status, size = await request(app, path)
            elapsed = (time.perf_counter() - started) * 1000
            assert status == 200, (path, status)
            if attempt >= 2:
                samples.append(elapsed)
        return samples, size

    samples, size = asyncio.run(run())
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))], size


def setup(root: Path, jobs: int, runs: int) -> tuple[Any, int]:
    config = load(write_config(root, jobs))
    started = time.perf_counter()
    log_run = fill(config, runs, random.Random(11))
    print(f"  history: {jobs} jobs × {runs} runs inserted in "
          f"{time.perf_counter() - started:.1f} s")
    return create_app(config, token=None), log_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("baseline:")
        base_app, base_log = setup(Path(tmp) / "base", args.jobs, 10)
        print("measured:")
        app, log_run = setup(Path(tmp) / "big", args.jobs, args.runs)
        print(f"\n{'page':<16} {'median':>9} {'p95':>9} {'size':>9} {'vs 10 runs':>11}  "
              f"target {TARGET_MS:.0f} ms")
        worst = 0.0
        for page in PAGES:
            base, _, _ = measure(base_app, page.format(log_run=base_log), args.repeat)
            median, p95, size = measure(app, page.format(log_run=log_run), args.repeat)
            worst = max(worst, median)
            verdict = "ok" if median < TARGET_MS else "OVER"
            print(f"{page:<16} {median:7.1f}ms {p95:7.1f}ms {size / 1024:7.0f}KB "
                  f"{median / base:10.2f}×  {verdict}")
        print(f"\nslowest page median {worst:.1f} ms vs target {TARGET_MS:.0f} ms: "
              f"{'PASS' if worst < TARGET_MS else 'FAIL'}")


if __name__ == "__main__":
    main()
