"""Shared test helpers: the integration layer's one config builder (:class:`Sandbox`: a
config whose ``[paths]`` live in a tmp directory, plus the tables a test adds), a way
to run the real CLI on it, and the Borg the tests run.

Which Borg: the venv's (Borg 1.4, pip-installed by scripts/setup) is first on PATH for
every test and every process a test starts. A module that touches Borg adds
``pytestmark = pytest.mark.usefixtures("each_borg")``: each of its tests then runs twice,
once with the venv's Borg and once with Debian's (``/usr/bin/borg``, 1.2.4 on Debian 12;
``PHOBOS_TEST_BORG12`` names another), put in front of the venv on PATH.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
# The Borgs each_borg runs a test with: id -> (binary, the major.minor it must be).
BORGS = {
    "borg1.4": (VENV_BIN / "borg", "1.4"),
    "borg1.2": (Path(os.environ.get("PHOBOS_TEST_BORG12", "/usr/bin/borg")), "1.2"),
}


@dataclass
class Sandbox:
    root: Path
    config: Path

    @property
    def state(self) -> Path:
        return self.root / "state"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def write(self, body: str) -> Path:
        """Write the config: a [paths] table into the sandbox plus ``body``."""
        self.config.write_text(paths_toml(self.root) + textwrap.dedent(body))
        return self.config

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "phobos", "-c", str(self.config), *args]

    def phobos(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in a new process; returns the completed process."""
        return subprocess.run(self.argv(*args), capture_output=True, text=True,
                              timeout=timeout, env=phobos_env())

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=phobos_env())


def paths_toml(root: Path, *, keys: Path | None = None) -> str:
    """``[paths]`` with everything phobos writes below ``root`` (keys may live elsewhere)."""
    return textwrap.dedent(f"""\
        [paths]
        state = "{root}/state"
        run = "{root}/run"
        log = "{root}/log"
        keys = "{keys or root / 'keys'}"
        """)


def venv_path(path: str | None = None) -> str:
    """``path`` (default: our PATH) with the venv's bin in front unless it is already on
    it: a Borg that each_borg put in front of the venv stays in front."""
    path = os.environ.get("PATH", "/usr/bin:/bin") if path is None else path
    return path if str(VENV_BIN) in path.split(os.pathsep) else f"{VENV_BIN}:{path}"


def phobos_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = venv_path(env.get("PATH"))
    env.pop("PHOBOS_CONFIG", None)
    return env


def pytest_configure(config: pytest.Config) -> None:
    """In-process code (``borg.find``, the runner in unit tests) sees the PATH the CLI
    processes get: the venv's Borg 1.4 before Debian's /usr/bin/borg, also when pytest
    is started without the venv on PATH.

    Ctrl-C works in the processes the tests start, also when pytest was started in the
    background of a script (``cmd &`` without job control ignores SIGINT, the ignoring
    is inherited, and Python then installs no KeyboardInterrupt handler)."""
    os.environ["PATH"] = venv_path()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def borg_shims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One directory per Borg of BORGS holding just a ``borg`` link to it."""
    shims = {}
    for name, (binary, _series) in BORGS.items():
        shim = tmp_path_factory.mktemp(name)
        (shim / "borg").symlink_to(binary)
        shims[name] = shim
    return shims


@pytest.fixture(params=list(BORGS))
def each_borg(request: pytest.FixtureRequest, borg_shims: dict[str, Path],
              monkeypatch: pytest.MonkeyPatch) -> tuple[int, ...]:
    """Run the test with each Borg of BORGS first on PATH (for phobos, borgmatic and the
    test's own Borg calls); the value is the Borg's version, e.g. ``(1, 2, 4)``. A Borg
    that is missing or of another series fails the test: CI must not pass by running one
    Borg twice."""
    binary, series = BORGS[request.param]
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             check=False).stdout if binary.exists() else ""
    found = re.search(r"(\d+\.\d+)\.\d+", version)
    assert found and found.group(1) == series, (
        f"{binary}: want Borg {series}.x, got {version.strip() or 'nothing'} "
        "(scripts/setup installs Debian's borgbackup and the venv's Borg 1.4)")
    monkeypatch.setenv("PATH", f"{borg_shims[request.param]}:{venv_path()}")
    return tuple(int(part) for part in found.group(0).split("."))


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    return Sandbox(root=tmp_path, config=tmp_path / "phobos.toml")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The sections suites registered (see tests/suite_summary.py)."""
    from suite_summary import SECTIONS

    for title, lines in SECTIONS.items():
        text = lines()
        if text:
            terminalreporter.section(title)
            for line in text:
                terminalreporter.write_line(line)
