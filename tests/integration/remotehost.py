"""The remote-host lab for pull tests and the pull benchmark: :mod:`phobos.dev.lab` (sshd per
host in its own network namespace, phobos in a client namespace) plus what tests need:
a phobos config in the lab's root, the real CLI run inside the client namespace, and
pytest fixtures. Tools missing or not root: the tests fail, never skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import paths_toml, venv_path
from phobos.dev import lab as phobos_lab
from phobos.dev.lab import RemoteHost

__all__ = ["Lab", "RemoteHost", "sh"]


def sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


def require_tools() -> None:
    missing = phobos_lab.missing_tools()
    if missing:
        pytest.fail(f"missing tools for the remote-host lab: {', '.join(missing)} "
                    "(install openssh-server openssh-client rsync iproute2: scripts/setup)")
    if os.geteuid() != 0:
        pytest.fail("the remote-host lab needs root (network namespaces)")


class Lab(phobos_lab.Lab):
    """``count`` hosts h1..hN, a config in ``root`` with holding area root/backup/holding."""

    def __init__(self, root: Path, count: int) -> None:
        require_tools()
        super().__init__(root=root, names=tuple(f"h{i}" for i in range(1, count + 1)))
        self.holding.mkdir(parents=True)
        self.base = paths_toml(root) + textwrap.dedent(f"""\
            [storage]
            root = "{root}/backup"
            holding = "{self.holding}"
            """)
        self.write_config("")

    @property
    def config(self) -> Path:
        return self.root / "phobos.toml"

    @property
    def holding(self) -> Path:
        return self.root / "backup" / "holding"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    def write_config(self, body: str) -> None:
        self.config.write_text(self.base + "\n" + textwrap.dedent(body))

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.client, sys.executable, "-m", "phobos", "-c",
                str(self.config), *args]

    def phobos(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run the real phobos CLI inside the client namespace."""
        return subprocess.run(self.argv(*args), capture_output=True, text=True,
                              timeout=timeout, env=_env(), stdin=subprocess.DEVNULL)

    def start_phobos(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env(),
                                stdin=subprocess.DEVNULL)

    def in_client(self, *argv: str, check: bool = False  # type: ignore[override]
                  ) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.client, *argv, check=check)

    def add_host(self, host: RemoteHost, *paths: str, restricted: bool = True,
                 root: Path | None = None) -> dict[str, Any]:
        """`phobos host add` (pins the key, --yes) and authorize the pull key on the host:
        with the printed rrsync line, or (``restricted=False``) without any restriction."""
        root = root or host.srv
        args = ["host", "add", host.name, host.address, "--root", str(root), "--yes",
                "--json"]
        for path in paths:
            args += ["--path", path]
        out = self.phobos(*args)
        assert out.returncode == 0, out.stderr
        added: dict[str, Any] = json.loads(out.stdout)
        host.authorize(added["authorized_keys"] if restricted else added["public_key"])
        return added

    def holding_copy(self, host: RemoteHost, remote_path: Path | str) -> Path:
        """Where ``remote_path`` of ``host`` lands in the holding area."""
        return self.holding / host.name / str(remote_path).lstrip("/")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = venv_path(env.get("PATH"))
    env.pop("PHOBOS_CONFIG", None)
    return env


@pytest.fixture
def lab3(tmp_path: Path) -> Iterator[Lab]:
    with Lab(tmp_path, 3) as lab:
        yield lab


@pytest.fixture
def lab1(tmp_path: Path) -> Iterator[Lab]:
    with Lab(tmp_path, 1) as lab:
        yield lab
