"""``phobos demo``: the whole flow on an embedded default config, in a sandbox.

It writes a complete config into a temporary directory (or ``--dir``), makes sample
data, and runs the seed's day through the one real code path (``run_job``): jobs
that conflict over a resource are started at the same time to show that phobos
serializes them, a failing job shows how a failure is recorded, and finally
status and history are printed. Nothing outside the sandbox is touched.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
from pathlib import Path

DEMO_CONFIG = """\
# phobos demo config: everything lives under {root}
[paths]
state = "{root}/state"
run = "{root}/run"
log = "{root}/log"
keys = "{root}/keys"

[storage]
root = "{root}/backup"
holding = "{root}/backup/holding"

[jobs.sync-luv]
kind = "command"
description = "pull 'luv' into the holding area (stand-in for a pull job)"
argv = ["rsync", "-a", "--delete", "--stats", "{root}/luv/", "{root}/backup/holding/luv/"]
writes = ["holding-area:luv"]
schedule = "*-*-* 06:00"

[jobs.nightly]
kind = "command"
description = "archive the holding area (stand-in for a Borg archive job)"
argv = ["sh", "-c", "sleep 1; tar -C {root}/backup/holding -cf {root}/backup/nightly.tar ."]
reads = ["holding-area:luv"]
writes = ["archive:main"]
schedule = "*-*-* 03:00"

[jobs.broken]
kind = "command"
description = "a job that fails, to show how failures are recorded"
argv = ["sh", "-c", "echo 'disk on fire' >&2; exit 3"]
"""


def _say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


def _make_sample_data(root: Path) -> None:
    for index in range(200):
        path = root / "luv" / f"dir{index % 10}" / f"file{index}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"sample file {index}\n" * (index + 1))
    (root / "backup" / "holding").mkdir(parents=True, exist_ok=True)


def run_demo(directory: Path | None) -> int:
    """Run the demo; returns 0 when every step behaved as the demo expects."""
    from .__main__ import main

    keep = directory is not None
    root = Path(tempfile.mkdtemp(prefix="phobos-demo-")) if directory is None else directory
    root.mkdir(parents=True, exist_ok=True)
    config_file = root / "phobos.toml"
    config_file.write_text(DEMO_CONFIG.format(root=root))
    _say(f"sandbox: {root} (config: {config_file})")
    _make_sample_data(root)
    ok = _run_day(config_file)
    for verb in (["status"], ["history"]):
        _say("phobos " + " ".join(verb))
        main(["-c", str(config_file), *verb])
    if keep:
        _say(f"sandbox kept at {root}; try: phobos -c {config_file} log 1")
    else:
        shutil.rmtree(root)
        _say("sandbox removed (use --dir DIR to keep it)")
    return 0 if ok else 1


def _phobos(config_file: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "phobos", "-c", str(config_file), *args]


def _run_day(config_file: Path) -> bool:
    """Start jobs as separate `phobos run` processes, as systemd timers would."""
    from . import proc

    _say("sync-luv and nightly start at the same moment as two processes: they share "
         "holding-area:luv, so phobos makes one wait for the other")
    codes: dict[str, int] = {}

    def run(name: str) -> None:
        result = proc.run(_phobos(config_file, "run", name, "--trigger", "timer"),
                          sink=lambda _stream, line: print(line, file=sys.stderr),
                          check=False)
        codes[name] = result.returncode

    threads = [threading.Thread(target=run, args=(name,)) for name in ("sync-luv", "nightly")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _say("a failing job: recorded as failed (exit 1), with its stderr in the message")
    run("broken")
    return codes == {"sync-luv": 0, "nightly": 0, "broken": 1}
