"""What the fuzz tests share: running phobos in-process (``phobos.__main__.main``) or as a
real process with a 10-second limit, the outcome of one call, the secrets of the fuzz
config, and the tally printed at the end of the session."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from hypothesis import HealthCheck, settings

from phobos.__main__ import main
from phobos.errors import ExitCode
from suite_summary import add_section

HANG_SECONDS = 10.0
TALLY: Counter[str] = Counter()
SLOWEST: dict[str, tuple[float, str]] = {}
# Reproducible in CI (derandomized runs are also fixed by the test's source); printed in
# the summary. PHOBOS_FUZZ_SEED changes it, PHOBOS_FUZZ_EXAMPLES scales the runs.
SEED = int(os.environ.get("PHOBOS_FUZZ_SEED", "17"))
SCALE = float(os.environ.get("PHOBOS_FUZZ_SCALE", "1"))


def examples(count: int) -> int:
    return max(1, round(count * SCALE))


class Hang(BaseException):
    """A call ran past HANG_SECONDS (BaseException: phobos's own handlers let it pass)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    seconds: float

    def problems(self, secrets: Sequence[str] = ()) -> list[str]:
        """Why this call broke a promise: a traceback, exit 70, a secret in its output."""
        found = []
        if self.code == ExitCode.INTERNAL or "Traceback (most recent call last)" in self.stderr:
            found.append(f"internal error (exit {self.code}):\n{self.stderr[-3000:]}")
        for secret in secrets:
            if secret in self.stdout or secret in self.stderr:
                found.append(f"secret {secret[:6]}... in the output")
        return [f"{' '.join(self.argv)!r}: {p}" for p in found]


def _alarm(_signum: int, _frame: FrameType | None) -> None:
    raise Hang


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_inprocess(argv: Sequence[str], kind: str) -> Outcome:
    """``phobos ARGV`` in this process, stdout and stderr captured; Hang past the limit."""
    out, err = io.StringIO(), io.StringIO()
    namespace_before = os.stat("/proc/self/ns/mnt").st_ino
    started = time.monotonic()
    try:
        with time_limit(HANG_SECONDS), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
                code = exc.code if isinstance(exc.code, int) else 2
    except Hang:
        code, seconds = -1, time.monotonic() - started
        err.write(f"\nHANG: still running after {seconds:.1f}s")
    seconds = time.monotonic() - started
    # A verb that joins the backup namespace (setns) would take this test process with it
    # and every later call would run inside: such verbs belong in JOINING (run as processes).
    assert os.stat("/proc/self/ns/mnt").st_ino == namespace_before, \
        f"phobos {' '.join(argv)} joined a mount namespace in the test process"
    record(kind, code, seconds, argv)
    return Outcome(tuple(argv), code, out.getvalue(), err.getvalue(), seconds)


def run_process(argv: Sequence[str], kind: str, cwd: Path | None = None) -> Outcome:
    """``python -m phobos ARGV`` as a real process (in ``cwd``), killed past the limit."""
    started = time.monotonic()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("PHOBOS_CONFIG", None)
    try:
        done = subprocess.run([sys.executable, "-m", "phobos", *argv], capture_output=True,
                              text=True, timeout=HANG_SECONDS, env=env,
                              stdin=subprocess.DEVNULL, errors="replace")
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired:
        code, stdout, stderr = -1, "", f"HANG: killed after {HANG_SECONDS}s"
    seconds = time.monotonic() - started
    record(kind, code, seconds, argv)
    return Outcome(tuple(argv), code, stdout, stderr, seconds)


def record(kind: str, code: int, seconds: float, argv: Sequence[str]) -> None:
    TALLY[f"{kind}: calls"] += 1
    TALLY[f"{kind}: exit {code}"] += 1
    if seconds > SLOWEST.get(kind, (0.0, ""))[0]:
        SLOWEST[kind] = (seconds, " ".join(argv)[:160])


def hang_problems(outcome: Outcome) -> list[str]:
    if outcome.code == -1:
        return [f"{' '.join(outcome.argv)!r}: ran longer than {HANG_SECONDS}s"]
    return []


# Every fuzz test: a fixed seed, no example database, no deadline (the 10-second limit
# per call is ours).
settings.register_profile(
    "phobos", derandomize=False, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
settings.load_profile("phobos")


def summary_lines() -> list[str]:
    """How many configs and calls ran, their exit codes, the slowest call of each kind."""
    if not TALLY:
        return []
    lines = [f"seed {SEED} (PHOBOS_FUZZ_SEED changes it, PHOBOS_FUZZ_SCALE scales the runs)"]
    lines += [f"  {key}: {TALLY[key]}" for key in sorted(TALLY)]
    lines += [f"  slowest {kind}: {seconds:.2f}s ({argv})"
              for kind, (seconds, argv) in sorted(SLOWEST.items())]
    return lines


add_section("phobos fuzz", summary_lines)
