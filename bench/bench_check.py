"""Benchmark: sliced repository checks ("nights") versus one full check.

Builds a repository of incompressible data (default 4 GiB in 8 MiB segments, so a
slice ends close to its deadline), times one full ``borg check --repository-only`` as
the baseline, then runs a phobos check job with ``max_duration`` night after night
until a pass completes. For each night it prints the time Borg held the repository
(the borg process's wall time, which contains its exclusive lock) against
``max_duration``, and the coverage reached.

    .venv/bin/python bench/bench_check.py [--gib 4] [--max-duration 2] [--nights 2]

Goals: per-night exclusive-lock time <= max_duration + 10 %; prints the number of nights
to full coverage (about full-check time / max_duration, rounded up). ``--nights`` runs
that many further passes to show the calibrated steady state.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
SLACK = 1.10


def env(base: Path) -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{VENV_BIN}:{out.get('PATH', '/usr/bin:/bin')}"
    out.update(BORG_PASSCOMMAND=f"cat {base}/pass", BORG_BASE_DIR=str(base / "borgbase"))
    out.pop("PHOBOS_CONFIG", None)
    return out


def borg(base: Path, *args: str) -> None:
    subprocess.run([str(VENV_BIN / "borg"), *args], env=env(base), check=True,
                   capture_output=True)


def build_repo(base: Path, gib: float) -> Path:
    (base / "pass").write_text("bench passphrase\n")
    repo = base / "repo"
    borg(base, "init", "-e", "repokey-blake2", str(repo))
    borg(base, "config", str(repo), "max_segment_size", str(8 << 20))
    data = base / "data"
    data.mkdir()
    for index in range(math.ceil(gib * 16)):  # 64 MiB files
        with (data / f"blob{index:03d}").open("wb") as out:
            for _ in range(64):
                out.write(os.urandom(1 << 20))
    borg(base, "create", "--compression", "none", f"{repo}::data", str(data))
    return repo


def write_config(base: Path, repo: Path, max_duration: float) -> Path:
    config = base / "phobos.toml"
    config.write_text(f"""\
[paths]
state = "{base}/state"
run = "{base}/run"
log = "{base}/log"
keys = "{base}/keys"

[storage]
root = "{base}"
holding = "{base}/holding"

[repos.main]
path = "{repo}"
passcommand = "cat {base}/pass"
base_dir = "{base}/borgbase"

[jobs.nightly-check]
kind = "check"
repo = "main"
max_duration = {max_duration}
""")
    return config


def night(base: Path, config: Path) -> dict[str, float]:
    phobos = [str(VENV_BIN / "python"), "-m", "phobos", "-c", str(config)]
    subprocess.run([*phobos, "run", "-q", "nightly-check"], env=env(base), check=True,
                   capture_output=True)
    out = subprocess.run([*phobos, "history", "--json", "--limit", "1"], env=env(base),
                         check=True, capture_output=True, text=True).stdout
    stats: dict[str, float] = json.loads(out)["runs"][0]["stats"]
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=4.0, help="repository size (GiB)")
    parser.add_argument("--max-duration", type=float, default=2.0, help="seconds per night")
    parser.add_argument("--nights", type=int, default=1,
                        help="further complete passes after the first (steady state)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phobos-bench-check-") as tmp:
        base = Path(tmp)
        repo = build_repo(base, args.gib)
        started = time.perf_counter()
        borg(base, "check", "--repository-only", str(repo))
        full = time.perf_counter() - started
        config = write_config(base, repo, args.max_duration)
        passes = [_one_pass(base, config) for _ in range(1 + args.nights)]
    _report(args, full, passes)
    return 0


def _one_pass(base: Path, config: Path) -> list[dict[str, float]]:
    nights = []
    while True:
        nights.append(night(base, config))
        if nights[-1]["pass_complete"] or len(nights) > 200:
            return nights


def _report(args: argparse.Namespace, full: float, passes: list[list[dict[str, float]]]) -> None:
    limit = args.max_duration * SLACK
    print(f"repository {args.gib} GiB; one full repository check: {full:.2f} s "
          f"(would hold the exclusive lock that long)")
    print(f"sliced: max_duration = {args.max_duration:g} s (limit {limit:.2f} s)")
    worst = 0.0
    for number, nights in enumerate(passes, start=1):
        print(f"pass {number}: {len(nights)} nights to full coverage")
        for index, stats in enumerate(nights, start=1):
            worst = max(worst, stats["lock_seconds"])
            print(f"  night {index}: lock {stats['lock_seconds']:5.2f} s "
                  f"(--max-duration {stats['max_duration_arg']:g}), coverage "
                  f"{100 * stats['coverage']:5.1f}%")
    print(f"worst per-night exclusive-lock time: {worst:.2f} s = "
          f"{worst / args.max_duration:.2f} x max_duration  (goal <= {SLACK:.2f}: "
          f"{'met' if worst <= limit else 'NOT met'})")
    print(f"nights to full coverage: {', '.join(str(len(n)) for n in passes)} "
          f"(full check / max_duration = {full / args.max_duration:.1f})")


if __name__ == "__main__":
    sys.exit(main())
