"""Shared test helpers: the integration layer's one config builder (:class:`Sandbox`: a
config whose ``[paths]`` live in a tmp directory, plus the tables a test adds) and a way
to run the real CLI on it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


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


def phobos_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("PHOBOS_CONFIG", None)
    return env


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
