"""Benchmark: pulling 4 rate-limited hosts with phobos (max_parallel = 4) versus the
seed's way, one pull after another in a shell script, in the same run.

Each host is a real sshd in its own network namespace (tests/integration/remotehost.py),
its link shaped with tc tbf to 40 Mbit/s on the host's side (a pull's data flows from
the host), each serving the same data. The serial baseline runs exactly the rsync
commands phobos plans (transfer and prune pass per host) from `sh` in the same client
namespace; both start from an empty holding area.

    sudo .venv/bin/python bench/bench_pull.py [--mib 24] [--rate 40mbit]

Goal: phobos's window <= 0.35 x the serial one. Prints both times and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests"))  # conftest: the config builder remotehost uses

from remotehost import Lab  # noqa: E402

from phobos.config.load import load  # noqa: E402
from phobos.jobs.pull import plan_host  # noqa: E402
from phobos.tools import rsync  # noqa: E402

HOSTS = 4
GOAL = 0.35


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=24, help="data per host (MiB)")
    parser.add_argument("--rate", default="40mbit", help="tc tbf rate per host link")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phobos-bench-pull-") as tmp, \
            Lab(Path(tmp), HOSTS) as lab:
        _prepare(lab, args.mib, args.rate)
        serial = _time_serial(lab)
        _empty(lab.holding)
        parallel = _time_phobos(lab)
        _verify(lab)
    ratio = parallel / serial
    print(f"pull of {HOSTS} hosts x {args.mib} MiB over {args.rate} links")
    print(f"serial shell loop (seed):     {serial:6.2f} s")
    print(f"phobos max_parallel={HOSTS}:      {parallel:6.2f} s")
    print(f"ratio phobos/serial:          {ratio:6.3f}  (goal <= {GOAL}: "
          f"{'met' if ratio <= GOAL else 'NOT met'})")
    return 0


def _prepare(lab: Lab, mib: int, rate: str) -> None:
    """Same data on every host, hosts added with `phobos host add`, links shaped."""
    blob = Path(lab.root) / "blob.bin"
    blob.write_bytes(os.urandom(mib << 18))  # a quarter: four files make `mib`
    snippets = []
    for host in lab.hosts:
        data = host.srv / "data"
        data.mkdir()
        for part in range(4):  # a few files, as a real tree would have
            shutil.copyfile(blob, data / f"part{part}.bin")
        added = lab.add_host(host, str(data))
        snippets.append(added["config"])
        host.shape(rate)
    names = ", ".join(f'"{h.name}"' for h in lab.hosts)
    lab.write_config("\n".join(snippets) + f"""
[jobs.pull-all]
kind = "pull"
hosts = [{names}]
max_parallel = {HOSTS}
""")
    blob.unlink()


def _script(lab: Lab) -> str:
    """The seed's way: the same rsync commands phobos plans, one host after another."""
    config = load(lab.config)
    lines = ["set -e"]
    for host in lab.hosts:
        folder = lab.holding / host.name
        folder.mkdir(parents=True, exist_ok=True)
        plan = plan_host(config, host.name, rsync.target_features(folder))
        plan.dest.mkdir(parents=True, exist_ok=True)
        lines += [shlex.join(plan.pull.argv) + " >/dev/null",
                  shlex.join(plan.prune.argv) + " >/dev/null"]
    return "\n".join(lines) + "\n"


def _time_serial(lab: Lab) -> float:
    script = lab.root / "serial.sh"
    script.write_text(_script(lab))
    started = time.monotonic()
    lab.in_client("sh", str(script), check=True)
    return time.monotonic() - started


def _time_phobos(lab: Lab) -> float:
    started = time.monotonic()
    out = lab.phobos("run", "pull-all", "-q")
    elapsed = time.monotonic() - started
    if out.returncode != 0:
        raise SystemExit(f"phobos run failed: {out.stdout}{out.stderr}")
    return elapsed


def _empty(holding: Path) -> None:
    for child in holding.iterdir():
        shutil.rmtree(child)


def _verify(lab: Lab) -> None:
    for host in lab.hosts:
        for part in range(4):
            copy = lab.holding_copy(host, host.srv / "data" / f"part{part}.bin")
            source = host.srv / "data" / f"part{part}.bin"
            if subprocess.run(["cmp", "-s", str(copy), str(source)]).returncode != 0:
                raise SystemExit(f"{copy} differs from {source}")


if __name__ == "__main__":
    sys.exit(main())
