"""Benchmark: a phobos archive job versus the same Borg commands in a shell script, and
phobos with its progress reporting versus without.

On a fixed generated tree (incompressible and compressible files, seeded), each round
makes three fresh repositories and times, in rotating order:

- ``phobos run nightly``: an archive job (create, prune, compact), the whole CLI
  process: Python start-up, config, history, locks, Borg lookup, the three Borg runs,
  with progress reporting as a timer runs it (no terminal: Borg's ``--progress
  --log-json`` read line by line, the live state file, a progress line a minute);
- ``phobos run --no-progress nightly``: the same without any of that;
- ``sh script``: exactly the argv phobos planned for the same job without progress
  (read from the history of the first round), with the same environment, one after
  another.

Then the same again on the now populated repositories after changing 1 % of the tree
(the nightly steady state), where the fixed costs weigh more.

    .venv/bin/python bench/bench_archive.py [--mib 600] [--rounds 3]

Goals: overhead ratio phobos (no progress)/script <= 1.03 on the first (full) archive;
progress costs at most 1 % of an archive's wall time. Progress is measured three ways:
the wall-time ratio of whole runs with and without it; the CPU seconds (user + system,
phobos and Borg together) it adds, as a share of the archive's wall time without it
(what it would cost on an otherwise idle machine); both are blurred by other users of a
shared machine by more than the 1 % sought, so lastly phobos's own part alone: Borg's
recorded progress output of the full archive fed through the same code a run uses
(pipe, line splitting, the Borg reader, the live state file), timed against feeding
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
GOAL = 1.03
PROGRESS_GOAL = 1.01
PASSPHRASE = "bench passphrase, not secret"


def make_tree(root: Path, mib: int) -> None:
    """Half incompressible, half text-like, in files of 64 KiB..8 MiB (seeded)."""
    rng = random.Random(2026)
    words = [rng.randbytes(6).hex() for _ in range(2000)]
    left, index = mib << 20, 0
    while left > 0:
        size = min(left, rng.choice((64 << 10, 512 << 10, 2 << 20, 8 << 20)))
        path = root / f"d{index % 16:02d}" / f"f{index:05d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if index % 2:
            path.write_bytes(rng.randbytes(size))
        else:
            text = " ".join(rng.choices(words, k=size // 12 + 1)).encode()
            path.write_bytes(text[:size])
        left -= size
        index += 1


def touch_one_percent(root: Path, seed: int) -> None:
    rng = random.Random(seed)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for path in rng.sample(files, max(1, len(files) // 100)):
        path.write_bytes(rng.randbytes(path.stat().st_size))


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PATH"] = f"{VENV_BIN}:{out.get('PATH', '/usr/bin:/bin')}"
    out.pop("PHOBOS_CONFIG", None)
    return out


def write_config(base: Path, tree: Path, repo: Path) -> Path:
    (base / "pass").write_text(PASSPHRASE + "\n")
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

[jobs.nightly]
kind = "archive"
repo = "main"
sources = ["{tree}"]
keep = {{ daily = 7, weekly = 4, monthly = 12 }}
""")
    return config


def phobos(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "python"), "-m", "phobos", "-c", str(config), *args],
                          capture_output=True, text=True, env=env(), check=True)


def planned_script(config: Path, base: Path, planned_repo: Path, repo: Path) -> str:
    """The argv phobos ran in its last run (on ``planned_repo``, with ``base``'s
    passphrase and Borg base directory), as a shell script on ``repo`` with the same
    environment (the archive name keeps its Borg placeholder, so each run makes a new
    name)."""
    runs = json.loads(phobos(config, "history", "--json", "--limit", "1").stdout)["runs"]
    steps = json.loads(phobos(config, "log", str(runs[0]["id"]), "--json").stdout)["steps"]
    lines = ["set -e",
             f"export BORG_PASSCOMMAND={shlex.quote(f'cat {base}/pass')}",
             f"export BORG_BASE_DIR={shlex.quote(str(base / 'borgbase'))}",
             "export BORG_EXIT_CODES=modern BORG_RELOCATED_REPO_ACCESS_IS_OK=no",
             "export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=no BORG_DISPLAY_PASSPHRASE=no"]
    for step in steps:
        argv = [a.replace(str(planned_repo), str(repo)) for a in step["argv"]]
        lines.append(shlex.join(argv) + " >/dev/null")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Measured:
    wall: float
    cpu: float  # user + system seconds of the command and every process it started


def timed(argv: list[str]) -> Measured:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env(), check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Measured(wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)


def fresh_repo(base: Path, repo: Path) -> None:
    shutil.rmtree(repo, ignore_errors=True)
    subprocess.run([str(VENV_BIN / "borg"), "init", "-e", "repokey-blake2", str(repo)],
                   env={**env(), "BORG_PASSCOMMAND": f"cat {base}/pass",
                        "BORG_BASE_DIR": str(base / "borgbase")},
                   check=True, capture_output=True)


VARIANTS = ("progress", "no-progress", "script")
Times = dict[str, Measured]  # by variant


def one_round(base: Path, configs: tuple[Path, Path], script: Path, rotation: int,
              tree: Path, seed: int) -> tuple[Times, Times]:
    """(full, incremental) times of each variant, run in a rotating order."""
    for name in ("phobos-repo", "quiet-repo", "script-repo"):
        fresh_repo(base, base / name)
    argv = {"progress": [str(VENV_BIN / "python"), "-m", "phobos", "-c", str(configs[0]),
                         "run", "-q", "nightly"],
            "no-progress": [str(VENV_BIN / "python"), "-m", "phobos", "-c", str(configs[1]),
                            "run", "-q", "--no-progress", "nightly"],
            "script": ["sh", str(script)]}
    order = VARIANTS[rotation % 3:] + VARIANTS[:rotation % 3]
    full = {variant: timed(argv[variant]) for variant in order}
    touch_one_percent(tree, seed)
    time.sleep(1.1)  # distinct archive names (one-second resolution)
    incremental = {variant: timed(argv[variant]) for variant in order}
    return full, incremental


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=600, help="size of the tree (MiB)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (odd: median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phobos-bench-archive-") as tmp:
        base = Path(tmp)
        tree = base / "tree"
        make_tree(tree, args.mib)
        config = write_config(base, tree, base / "phobos-repo")
        quiet = base / "quiet"
        quiet.mkdir()
        quiet_config = write_config(quiet, tree, base / "quiet-repo")
        fresh_repo(base, base / "phobos-repo")
        fresh_repo(quiet, base / "quiet-repo")
        phobos(config, "run", "-q", "nightly")  # warm caches
        # The script runs what phobos plans without progress output.
        phobos(quiet_config, "run", "-q", "--no-progress", "nightly")
        script = base / "script.sh"
        script.write_text(planned_script(quiet_config, quiet, base / "quiet-repo",
                                         base / "script-repo"))
        results = [one_round(base, (config, quiet_config), script, index, tree, index)
                   for index in range(args.rounds)]
        lines = borg_progress_lines(base, tree)
        own = phobos_side_cost(base, lines)
    _report(args, results)
    wall = statistics.median(full["no-progress"].wall for full, _ in results)
    share = own / wall
    print(f"phobos's own work on one full archive's progress ({len(lines)} lines of Borg "
          f"output read, parsed, the live state written): {own * 1000:.1f} ms, "
          f"{share:.3%} of its wall time (goal <= {PROGRESS_GOAL - 1:.0%}: "
          f"{'met' if share <= PROGRESS_GOAL - 1 else 'NOT met'})")
    return 0


def borg_progress_lines(base: Path, tree: Path) -> list[str]:
    """What ``borg create --progress --log-json`` of the tree writes on stderr."""
    repo = base / "lines-repo"
    fresh_repo(base, repo)
    out = subprocess.run([str(VENV_BIN / "borg"), "create", "--progress", "--log-json",
                          "--json", f"{repo}::lines", str(tree)],
                         env={**env(), "BORG_PASSCOMMAND": f"cat {base}/pass",
                              "BORG_BASE_DIR": str(base / "borgbase")},
                         check=True, capture_output=True)
    return out.stderr.decode().splitlines()


def phobos_side_cost(base: Path, lines: list[str], repeat: int = 15) -> float:
    """Seconds phobos spends on those lines in a run: read from the pipe, split, parsed
    by the Borg reader, told to the run's tracker (which writes the state file): the
    fastest of ``repeat`` runs of ``cat`` of them, less the fastest of ``cat`` of nothing
    (starting a process is not the progress's cost)."""
    from phobos.core import proc
    from phobos.core.progress import RunTracker
    from phobos.tools import borg_progress

    recorded, empty = base / "progress-lines", base / "empty"
    recorded.write_text("\n".join(lines) + "\n")
    empty.write_text("")

    def once(path: Path, read: bool) -> float:
        tracker = RunTracker(base / "progress", run_id=1, job="nightly")
        tracker.step_started(1, "create")
        started = time.perf_counter()
        proc.run(["cat", str(path)], reader=borg_progress.reader() if read else None,
                 on_progress=lambda told: tracker.update(1, told))
        spent = time.perf_counter() - started
        tracker.close()
        return spent

    with_lines = min(once(recorded, True) for _ in range(repeat))
    without = min(once(empty, False) for _ in range(repeat))
    return max(0.0, with_lines - without)


def _report(args: argparse.Namespace, results: list[tuple[Times, Times]]) -> None:
    print(f"archive job on a {args.mib} MiB tree, {args.rounds} rounds "
          "(create + prune + compact); wall seconds (CPU seconds)")
    print("           full archive: progress     no-progress    script |"
          " 1% changed: progress     no-progress    script")
    for number, times in enumerate(results, start=1):
        cells = [f"{t[v].wall:6.2f} ({t[v].cpu:5.2f})" if v != "script" else f"{t[v].wall:6.2f}"
                 for t in times for v in VARIANTS]
        print(f"  round {number}:      {cells[0]}  {cells[1]}  {cells[2]} |"
              f"           {cells[3]}  {cells[4]}  {cells[5]}")
    for label, index in (("full archive", 0), ("1% changed nightly", 1)):
        _verdicts(label, [r[index] for r in results], headline=index == 0)


def _verdicts(label: str, times: list[Times], *, headline: bool) -> None:
    """phobos/script, and what progress costs: the wall ratio on/off (noisy where others
    share the machine) and the CPU seconds progress adds as a share of the wall time
    without it (what it would cost on an idle machine)."""
    overhead = statistics.median(t["no-progress"].wall / t["script"].wall for t in times)
    on_off = statistics.median(t["progress"].wall / t["no-progress"].wall for t in times)
    best = (min(t["progress"].wall for t in times)
            / min(t["no-progress"].wall for t in times))
    cost = statistics.median((t["progress"].cpu - t["no-progress"].cpu)
                             / t["no-progress"].wall for t in times)
    fixed = statistics.median(t["no-progress"].wall - t["script"].wall for t in times)
    print(f"{label}:")
    goal = f" (goal <= {GOAL}: {'met' if overhead <= GOAL else 'NOT met'})" if headline else ""
    print(f"  median overhead ratio phobos/script:        {overhead:6.3f}{goal}; "
          f"fixed cost ~{fixed:.2f} s per run")
    print(f"  progress on/off, wall: median ratio {on_off:6.3f}, ratio of the fastest "
          f"{best:6.3f}")
    goal = (f" (goal <= {PROGRESS_GOAL - 1:.0%}: "
            f"{'met' if cost <= PROGRESS_GOAL - 1 else 'NOT met'})")
    print(f"  progress cost, CPU seconds added / wall:    {cost:6.2%}{goal}")


if __name__ == "__main__":
    sys.exit(main())
