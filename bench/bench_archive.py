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
progress on/off <= 1.01 (progress costs at most 1 % of an archive's wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env(), check=True, capture_output=True)
    return time.perf_counter() - started


def fresh_repo(base: Path, repo: Path) -> None:
    shutil.rmtree(repo, ignore_errors=True)
    subprocess.run([str(VENV_BIN / "borg"), "init", "-e", "repokey-blake2", str(repo)],
                   env={**env(), "BORG_PASSCOMMAND": f"cat {base}/pass",
                        "BORG_BASE_DIR": str(base / "borgbase")},
                   check=True, capture_output=True)


Times = tuple[float, float, float]  # phobos with progress, phobos without, script


def one_round(base: Path, configs: tuple[Path, Path], script: Path, rotation: int,
              tree: Path, seed: int) -> tuple[Times, Times]:
    """(full, incremental) seconds of (phobos, phobos --no-progress, script)."""
    for name in ("phobos-repo", "quiet-repo", "script-repo"):
        fresh_repo(base, base / name)
    on = [str(VENV_BIN / "python"), "-m", "phobos", "-c", str(configs[0]), "run", "-q",
          "nightly"]
    off = [str(VENV_BIN / "python"), "-m", "phobos", "-c", str(configs[1]), "run", "-q",
           "--no-progress", "nightly"]
    shell = ["sh", str(script)]
    runs = [on, off, shell]
    order = runs[rotation % 3:] + runs[:rotation % 3]
    full = {id(a): timed(a) for a in order}
    touch_one_percent(tree, seed)
    time.sleep(1.1)  # distinct archive names (one-second resolution)
    incremental = {id(a): timed(a) for a in order}
    return (tuple(full[id(a)] for a in runs),  # type: ignore[return-value]
            tuple(incremental[id(a)] for a in runs))


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
    _report(args, results)
    return 0


def _report(args: argparse.Namespace, results: list[tuple[Times, Times]]) -> None:
    print(f"archive job on a {args.mib} MiB tree, {args.rounds} rounds "
          "(create + prune + compact); seconds")
    print("            full: progress  no-progress  script |  1% changed: progress  "
          "no-progress  script | on/off full  on/off 1%")
    for number, ((fp, fq, fs), (ip, iq, is_)) in enumerate(results, start=1):
        print(f"  round {number}:      {fp:8.2f}  {fq:11.2f}  {fs:6.2f} |"
              f"              {ip:8.2f}  {iq:11.2f}  {is_:6.2f} |"
              f"       {fp / fq:5.3f}      {ip / iq:5.3f}")
    full = statistics.median(q / s for (_, q, s), _ in results)
    incr = statistics.median(q / s for _, (_, q, s) in results)
    on_off = statistics.median(p / q for (p, q, _), _ in results)
    on_off_incr = statistics.median(p / q for _, (p, q, _) in results)
    fixed = statistics.median(q - s for _, (_, q, s) in results)
    print(f"median overhead ratio phobos/script, full archive:       {full:5.3f}  "
          f"(goal <= {GOAL}: {'met' if full <= GOAL else 'NOT met'})")
    print(f"median overhead ratio phobos/script, 1% changed nightly: {incr:5.3f}  "
          f"(fixed cost ~{fixed:.2f} s per run)")
    print(f"median progress on/off ratio, full archive:              {on_off:5.3f}  "
          f"(goal <= {PROGRESS_GOAL}: {'met' if on_off <= PROGRESS_GOAL else 'NOT met'})")
    print(f"median progress on/off ratio, 1% changed nightly:        {on_off_incr:5.3f}")


if __name__ == "__main__":
    sys.exit(main())
