"""Start-up cost of `phobos --help` and `phobos status` with 10,000 runs in history.

Target (issue 2): `phobos status` ≤ 150 ms on this machine. Printed against a
baseline measured in the same run: a bare `python -c pass` start. Also lists which
heavy modules, if any, the status command imports.

    .venv/bin/python bench/bench_startup.py [--runs 10000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from phobos.core.history import History
from phobos.core.model import Outcome

HEAVY = ("rich", "sqlite3.dump", "asyncio", "email", "jinja2", "starlette", "apprise",
         "pyudev", "yaml")


def fill_history(state: Path, runs: int, jobs: int) -> None:
    history = History.open(state)
    history.db.execute("BEGIN")
    for index in range(runs):
        run_id = history.start_run(job=f"job-{index % jobs}", kind="command", trigger="timer")
        history.db.execute("UPDATE runs SET ended = started + 1, outcome = ?, exit_code = 0 "
                           "WHERE id = ?", (str(Outcome.SUCCESS), run_id))
    history.db.execute("COMMIT")
    history.close()


def timed(argv: list[str], repeat: int) -> float:
    """Median wall time in seconds of running argv ``repeat`` times."""
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def heavy_imports(config: Path) -> list[str]:
    code = ("import sys; from phobos.__main__ import main; main(['-c', sys.argv[1], 'status']);"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True,
                         text=True, check=True)
    loaded = set(out.stderr.split())
    return [name for name in HEAVY if name in loaded]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = root / "phobos.toml"
        jobs = "".join(f'[jobs.job-{i}]\nkind = "command"\nargv = ["true"]\n'
                       f'schedule = "*-*-* 0{i % 10}:00"\n' for i in range(10))
        config.write_text(f'[paths]\nstate = "{root}/state"\nrun = "{root}/run"\n{jobs}')
        fill_history(root / "state", args.runs, 10)
        phobos = [sys.executable, "-m", "phobos", "-c", str(config)]
        baseline = timed([sys.executable, "-c", "pass"], args.repeat)
        help_time = timed([*phobos, "--help"], args.repeat)
        status_time = timed([*phobos, "status"], args.repeat)
        heavy = heavy_imports(config)
    print(f"python -c pass (baseline): {baseline * 1000:7.1f} ms")
    print(f"phobos --help:             {help_time * 1000:7.1f} ms  "
          f"({help_time / baseline:.2f}x baseline)")
    print(f"phobos status ({args.runs} runs): {status_time * 1000:7.1f} ms  "
          f"({status_time / baseline:.2f}x baseline; target <= 150 ms: "
          f"{'met' if status_time <= 0.150 else 'NOT met'})")
    print(f"heavy modules imported by status: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
