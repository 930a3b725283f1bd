"""`phobos completion bash|zsh|fish` in the real shells: bash and zsh interactive on a
terminal (TAB typed, the shell's completion machinery runs the script), fish through its
own `complete --do-complete`. Each shell gets the same command lines and must offer the
same words: commands, options, choices, files, and the job, host, drive and repository
names of the config named by `-c FILE` or `$PHOBOS_CONFIG` (nothing when it does not
load). zsh and fish are Debian packages scripts/setup installs: without them these
tests fail."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import shells

from conftest import Sandbox, phobos_env
from phobos.cli.parser import build_parser

CONFIG = """\
[repos.main]
path = "{root}/borg"

[repos.cloud]
path = "{root}/cloud"

[hosts.luv]
address = "luv.example.org"
paths = ["/etc"]

[hosts.chew]
address = "chew.example.org"
paths = ["/etc"]

[drives.ext-a]
luks_uuid = "2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11"

[drives.ext-b]
luks_uuid = "7c1d0e2a-5b3f-4e8a-9f61-2d4c8b0a7e35"

[jobs.nightly]
kind = "archive"
repo = "main"
sources = ["/etc"]

[jobs.backup-luv]
kind = "pull"
host = "luv"

[jobs.offsite]
kind = "drive-sync"
repo = "main"
drives = ["ext-a", "ext-b"]
"""

VERBS = sorted(next(a for a in build_parser()._actions if a.dest == "verb").choices or ())
JOBS = ["backup-luv", "nightly", "offsite"]


def cases(config: Path, broken: Path, files: Path) -> list[tuple[str, list[str]]]:
    """(command line before TAB, what every shell must offer; files by their names, as
    zsh lists them: bash and fish offer the whole path)."""
    c = f"phobos -c {config}"
    return [
        ("phobos ", VERBS),
        ("phobos dr", ["drive"]),
        ("phobos drive ", ["attached", "eject", "init", "list", "mount", "release", "sheet"]),
        ("phobos run --tr", ["--trigger"]),
        ("phobos run --trigger ", ["daemon", "device", "manual", "timer", "unit"]),
        ("phobos led set g", ["green"]),
        (f"{c} run ", JOBS),
        (f"{c} run --quiet n", ["nightly"]),
        (f"phobos --config {config} history ", JOBS),
        (f"{c} host test ", ["chew", "luv"]),
        (f"{c} host rekey l", ["luv"]),
        (f"{c} drive eject ", ["ext-a", "ext-b"]),
        (f"{c} drive release ext-", ["ext-a", "ext-b"]),
        (f"{c} run offsite --drive ", ["ext-a", "ext-b"]),
        (f"{c} find fstab --host ", ["chew", "luv"]),
        (f"{c} restore /etc/fstab --from-drive ext-", ["ext-a", "ext-b"]),
        (f"{c} repo info ", ["cloud", "main"]),
        (f"{c} repo drill --archives-of off", ["offsite"]),
        (f"{c} repo key-export main {files}/k", ["key-a", "key-b"]),  # files
        (f"{c} host add newhost ", []),  # a new name, not one from the config
        (f"phobos -c {broken} run ", []),  # quietly nothing: the config does not load
        ("phobos calendar ", []),  # free text
    ]


def names(offered: list[str]) -> list[str]:
    return sorted(word.rsplit("/", 1)[-1] for word in offered)


@pytest.fixture
def world(sandbox: Sandbox) -> Iterator[tuple[Sandbox, list[tuple[str, list[str]]]]]:
    sandbox.write(CONFIG.format(root=sandbox.root))
    assert sandbox.phobos("config", "check").returncode == 0
    broken = sandbox.root / "broken.toml"
    broken.write_text("[jobs.x]\nkind = 'nope'\n")
    files = sandbox.root / "files"
    files.mkdir()
    for name in ("key-a", "key-b", "other"):
        (files / name).write_text("")
    for shell in ("bash", "zsh", "fish"):
        script = sandbox.root / f"completion.{shell}"
        script.write_text(sandbox.phobos("completion", shell).stdout)
    yield sandbox, cases(sandbox.config, broken, files)


def test_bash_offers_what_the_parser_and_config_hold(
        world: tuple[Sandbox, list[tuple[str, list[str]]]]) -> None:
    sandbox, table = world
    terminal = shells.bash(sandbox.root / "completion.bash", sandbox.root)
    try:
        offered = {line: names(terminal.complete(line)) for line, _ in table}
    finally:
        terminal.close()
    assert offered == dict(table)


def test_zsh_offers_what_the_parser_and_config_hold(
        world: tuple[Sandbox, list[tuple[str, list[str]]]]) -> None:
    sandbox, table = world
    terminal = shells.zsh(sandbox.root / "completion.zsh", sandbox.root)
    try:
        offered = {line: names(terminal.complete(line)) for line, _ in table}
    finally:
        terminal.close()
    assert offered == dict(table)


def test_fish_offers_what_the_parser_and_config_hold(
        world: tuple[Sandbox, list[tuple[str, list[str]]]]) -> None:
    sandbox, table = world
    offered = {line: names(shells.fish(sandbox.root / "completion.fish", sandbox.root, line))
               for line, _ in table}
    assert offered == dict(table)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_names_come_from_phobos_config_in_the_environment(world: tuple[Sandbox, list[
        tuple[str, list[str]]]], shell: str) -> None:
    sandbox, _ = world
    env = {"PHOBOS_CONFIG": str(sandbox.config)}
    script = sandbox.root / f"completion.{shell}"
    if shell == "fish":
        assert shells.fish(script, sandbox.root, "phobos drive mount ", env) == [
            "ext-a", "ext-b"]
        return
    terminal = (shells.bash if shell == "bash" else shells.zsh)(script, sandbox.root, env)
    try:
        assert terminal.complete("phobos drive mount ") == ["ext-a", "ext-b"]
        assert terminal.complete("phobos run b") == ["backup-luv"]
    finally:
        terminal.close()


def test_names_for_scripts(sandbox: Sandbox) -> None:
    sandbox.write(CONFIG.format(root=sandbox.root))
    out = sandbox.phobos("completion", "--names", "drives")
    assert (out.returncode, out.stdout, out.stderr) == (0, "ext-a\next-b\n", "")
    missing = subprocess.run([*sandbox.argv("completion", "--names", "jobs")[:3],
                              "-c", str(sandbox.root / "nope.toml"), "completion", "--names",
                              "jobs"], capture_output=True, text=True, env=phobos_env())
    assert (missing.returncode, missing.stdout, missing.stderr) == (0, "", "")
    both = sandbox.phobos("completion", "bash", "--names", "jobs")
    assert both.returncode == 2 and "not both" in both.stderr
    neither = sandbox.phobos("completion")
    assert neither.returncode == 2 and "name the shell" in neither.stderr
