"""Helpers for the Borg integration tests: a sandboxed config with a real repository,
direct Borg calls for setting up and verifying, generated source trees.

The tests run the real ``phobos`` CLI in new processes and the real ``borg`` first on
PATH: the venv's Borg 1.4, or the one conftest's ``each_borg`` put in front (Debian's
1.2.4). The test's own Borg calls use that same Borg. Nothing touches ~: Borg's keys,
cache and security dirs live under the sandbox (BORG_BASE_DIR).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import venv_path

PASSPHRASE = "correct horse battery staple 42"


@dataclass
class BorgBox:
    """A sandbox with ``[storage]`` and ``[repos.main]`` (passphrase file, base dir)."""

    sandbox: Any  # conftest.Sandbox

    @property
    def root(self) -> Path:
        return Path(self.sandbox.root)

    @property
    def repo(self) -> Path:
        return self.root / "backup" / "borg"

    @property
    def holding(self) -> Path:
        return self.root / "backup" / "holding"

    def write(self, jobs: str, repo_extra: str = "") -> None:
        (self.root / "borg.pass").write_text(PASSPHRASE + "\n")
        self.sandbox.write(f"""\
            [storage]
            root = "{self.root}/backup"
            holding = "{self.holding}"

            [hosts.luv]
            address = "luv.invalid"

            [repos.main]
            path = "{self.repo}"
            passphrase_file = "{self.root}/borg.pass"
            base_dir = "{self.root}/borgbase"
            {repo_extra}
            """ + textwrap.dedent(jobs))

    def phobos(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.sandbox.phobos(*args, timeout=timeout)
        return result

    def ok(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = self.phobos(*args, timeout=timeout)
        assert result.returncode == 0, f"phobos {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def borg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Borg directly (test side): the passphrase in the environment is fine here."""
        env = {**os.environ, "BORG_PASSPHRASE": PASSPHRASE,
               "BORG_BASE_DIR": str(self.root / "borgbase"), "BORG_EXIT_CODES": "modern"}
        env["PATH"] = venv_path(env["PATH"])
        result = subprocess.run(["borg", *args], capture_output=True, text=True, env=env,
                                timeout=600, check=False)
        if check:
            assert result.returncode == 0, f"borg {' '.join(args)}: {result.stderr}"
        return result

    def archives(self) -> list[str]:
        out = self.borg("list", "--json", str(self.repo)).stdout
        return [a["name"] for a in json.loads(out)["archives"]]

    def last_run(self, job: str) -> dict[str, Any]:
        runs: list[dict[str, Any]] = json.loads(
            self.ok("history", job, "--json", "--limit", "1").stdout)["runs"]
        return runs[0]

    def log_text(self, run_id: int) -> str:
        return self.ok("log", str(run_id)).stdout


def make_tree(root: Path, files: int = 40, size: int = 20_000, seed: int = 1) -> Path:
    """A deterministic tree of incompressible files in a few directories."""
    rng = random.Random(seed)
    for index in range(files):
        path = root / f"dir{index % 4}" / f"file{index:04d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return root


def wait_for(predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def initialized(sandbox: Any) -> BorgBox:
    """A BorgBox with an archive job ``nightly`` over ``src/`` and an initialized repo."""
    box = BorgBox(sandbox)
    make_tree(box.root / "src")
    box.write(f"""\
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/src"]
        keep = {{ daily = 7 }}
        """)
    box.ok("repo", "init", "main")
    return box
