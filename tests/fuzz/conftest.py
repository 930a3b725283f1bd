"""The fuzz suite's settings (hypothesis: a fixed seed on every test, no example
database, no deadline: the 10-second limit per call is ours) and its summary: how many
configs and calls ran, their exit codes, the slowest call of each kind, and the seed."""

from __future__ import annotations

from typing import Any

from fuzzlib import SEED, SLOWEST, TALLY
from hypothesis import HealthCheck, settings

settings.register_profile(
    "phobos", derandomize=False, database=None, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
settings.load_profile("phobos")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY:
        return
    write = terminalreporter.write_line
    terminalreporter.section("phobos fuzz")
    write(f"seed {SEED} (PHOBOS_FUZZ_SEED changes it, PHOBOS_FUZZ_SCALE scales the runs)")
    for key in sorted(TALLY):
        write(f"  {key}: {TALLY[key]}")
    for kind, (seconds, argv) in sorted(SLOWEST.items()):
        write(f"  slowest {kind}: {seconds:.2f}s ({argv})")
