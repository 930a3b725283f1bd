"""`phobos schedule --days 7` of 100 jobs with 100,000 runs in history.

Target (issue 18): at most 300 ms for the week, simulated and rendered. The baseline,
measured in the same run on the same config and history, is the table phobos drew before
(bench/schedule_before.py, kept verbatim from commit 842edd5: every run at its timer time,
every overlapping pair listed, a rich table). Both are timed in this process, from
opening the history to the finished text, as the median of several rounds; the new one
also with its SVG. The whole command (a new `phobos schedule --days 7` process, start-up
included) is timed too, for reference.

    .venv/bin/python bench/bench_schedule.py [--runs 100000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

from phobos.config.load import load
from phobos.config.model import Config
from phobos.core.history import History
from phobos.core.model import Outcome
from phobos.oncalendar.zones import system_timezone
from phobos.schedule.picture import render_svg
from phobos.schedule.simulate import simulate
from phobos.schedule.timeline import render_text

TARGET_SECONDS = 0.300
HOSTS, REPOS = 30, 3


def the_old_table() -> ModuleType:
    """bench/schedule_before.py (bench/ is not a package)."""
    path = Path(__file__).with_name("schedule_before.py")
    spec = importlib.util.spec_from_file_location("schedule_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def job(name: str, schedule: str | None, estimate: str, **resources: list[str]) -> str:
    lines = [f"[jobs.{name}]", 'kind = "command"', 'argv = ["true"]', f'estimate = "{estimate}"']
    if schedule:
        lines.append(f'schedule = "{schedule}"')
    for key, names in resources.items():
        lines.append(f"{key} = [{', '.join(repr(n).replace(chr(39), chr(34)) for n in names)}]")
    return "\n".join(lines) + "\n"


def hundred_jobs() -> str:
    """A big home server: 30 pulls, 3 repositories with a chain of 10 archives each, 7
    weekly checks, 20 other scheduled commands and 10 triggered jobs (100 jobs)."""
    text = "".join(f'[hosts.h{i}]\naddress = "h{i}.example.org"\n' for i in range(HOSTS))
    text += "".join(f'[repos.r{i}]\npath = "/backup/borg-{i}"\n' for i in range(REPOS))
    for i in range(HOSTS):
        text += job(f"pull-{i}", f"*-*-* {(i * 7) % 24:02d}:{(i * 13) % 60:02d}", "20m",
                    writes=[f"holding:h{i}"])
    for repo in range(REPOS):
        for link in range(10):
            host = repo * 10 + link
            after = f'after = ["arc-{repo}-{link - 1}"]\n' if link else ""
            text += job(f"arc-{repo}-{link}", f"*-*-* 0{2 + repo}:00", "8m",
                        reads=[f"holding:h{host}"], writes=[f"repo:r{repo}"]) + after
    for day, name in enumerate(("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")):
        text += job(f"check-{day}", f"{name} *-*-* 07:00", "5h30m",
                    writes=[f"repo:r{day % REPOS}"])
    for i in range(20):
        text += job(f"task-{i}", f"*-*-* {(i * 5) % 24:02d}:{(i * 11) % 60:02d}", "15m",
                    reads=[f"repo:r{i % REPOS}"])
    for i in range(10):
        text += job(f"offsite-{i}", None, "5h", reads=[f"repo:r{i % REPOS}"])
    return text


def fill_history(config: Config, runs: int) -> None:
    names = list(config.jobs)
    history = History.open(config.paths.state)
    history.db.execute("BEGIN")
    now = time.time()
    for index in range(runs):
        name = names[index % len(names)]
        run_id = history.start_run(job=name, kind="command", trigger="timer")
        started = now - (runs - index) * 60.0
        history.db.execute(
            "UPDATE runs SET started = ?, locked = ?, ended = ?, outcome = ?, exit_code = 0 "
            "WHERE id = ?", (started, started + 5, started + 5 + 300 + index % 600,
                             str(Outcome.SUCCESS), run_id))
    history.db.execute("COMMIT")
    history.close()


def median_time(work: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "phobos.toml"
        path.write_text(f'[paths]\nstate = "{root}/state"\nrun = "{root}/run"\n'
                        + hundred_jobs())
        config = load(path)
        fill_history(config, args.runs)
        start = datetime.now(system_timezone()).replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(days=7)
        schedule_before = the_old_table()

        def before() -> str:
            history = History.open(config.paths.state)
            plan = schedule_before.plan_window(config, history, start, end)
            history.close()
            return str(schedule_before.render_text(plan, config))

        def after(svg: bool = False) -> str:
            history = History.open(config.paths.state)
            sim = simulate(config, history, start, end)
            history.close()
            return render_text(sim, config) + (render_svg(sim, config) if svg else "")

        old = median_time(before, args.repeat)
        new = median_time(after, args.repeat)
        with_svg = median_time(lambda: after(svg=True), args.repeat)
        command = median_time(lambda: subprocess.run(
            [sys.executable, "-m", "phobos", "-c", str(path), "schedule", "--days", "7"],
            check=True, capture_output=True), max(3, args.repeat // 2))
        lines_before, lines_after = before().count("\n"), after().count("\n")
    print(f"100 jobs, {args.runs} runs in history, 7 days, median of {args.repeat} rounds")
    print(f"before (the old table, pairwise overlaps, rich): {old * 1000:7.1f} ms  "
          f"({lines_before} lines of text)")
    print(f"now (simulation + text):                         {new * 1000:7.1f} ms  "
          f"({lines_after} lines)  {old / new:.2f}x faster; target <= 300 ms: "
          f"{'met' if new <= TARGET_SECONDS else 'NOT met'}")
    print(f"now, with the SVG too:                           {with_svg * 1000:7.1f} ms")
    print(f"`phobos schedule --days 7`, whole process:       {command * 1000:7.1f} ms "
          "(Python start-up included)")


if __name__ == "__main__":
    main()
