"""Generated configs through `config check`, `systemd render`, `schedule` and `status`, run
in this process (and a smaller sample as real processes): never a traceback or exit 70,
never a call over 10 seconds, no rendered unit line phobos's templates did not write, no
secret of the config in any output. Configs start from one with every table and every
job kind (tests/hostile.py) and get a few keys changed to generated or hostile values,
deleted, or a table replaced by garbage."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from fuzzlib import SEED, TALLY, Outcome, examples, hang_problems, run_inprocess, run_process
from hypothesis import given, seed
from hypothesis import strategies as st

from hostile import (
    HOSTILE_TEXT,
    base_raw,
    every_key,
    foreign_lines,
    hostile_values,
    template_keys,
    toml_dumps,
    with_value,
    without,
)
from phobos.config.load import parse
from phobos.config.schema import Duration
from phobos.systemd.units import Target, render

VERBS = (("config", "check"), ("systemd", "render"), ("schedule", "--json"), ("status",))
KEYS = every_key()
# Readable text without surrogates (TOML cannot hold them).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)


class World:
    """A directory with the fuzz config's files: secrets in place, state and keys."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.raw = base_raw(self.dir)
        (self.dir / "keys").mkdir(mode=0o700)
        (self.dir / "keys" / "borg.pass").write_text("borg-passphrase-0123456789\n")
        (self.dir / "keys" / "web.token").write_text("web-token-abcdefghijklmnop\n")
        # Nothing may leave this machine: closed ports on the loopback address answer at once.
        self.raw["notify"]["ping"]["url"] = "http://127.0.0.1:9/ping-key-123456789"
        self.raw["notify"]["email"]["port"] = 9
        self.raw["hosts"]["luv"].update(address="127.0.0.1", port=9)
        self.secrets = ["borg-passphrase-0123456789", "web-token-abcdefghijklmnop",
                        "s3cr3t-t0ken-value", "hook-token-abcdef", "ping-key-123456789"]
        base = parse(self.raw, self.dir / "phobos.toml")
        self.template_keys = template_keys(render(base, self.target))
        self.count = 0

    @property
    def target(self) -> Target:
        return Target(executable=Path("/usr/bin/phobos"), config=self.dir / "phobos.toml")

    def write(self, raw: dict[str, Any]) -> Path:
        self.count += 1
        path = self.dir / f"config-{self.count}.toml"
        path.write_text(toml_dumps(raw))
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("fuzz-configs"))


SAFE = st.text(st.sampled_from("abcxyz019-_. %$\"'\\:;é"), min_size=1, max_size=12)
PLAUSIBLE: dict[Any, st.SearchStrategy[Any]] = {
    str: st.one_of(SAFE, st.sampled_from(["luv", "main", "ext-a", "nightly", "daily",
                                          "*-*-* 03:00", "UUID=0d6c1b7e", "/dev/sdb1"])),
    Path: st.builds(lambda parts: "/" + "/".join(parts), st.lists(SAFE, min_size=1,
                                                                  max_size=3)),
    int: st.integers(-3, 100_000),
    float: st.floats(-10, 1e6, allow_nan=False),
    Duration: st.one_of(st.sampled_from(["90s", "30m", "2h", "1d", "0", "3650d"]),
                        st.integers(0, 10**7)),
    bool: st.booleans(),
}


def _value_for(hint: Any) -> st.SearchStrategy[Any]:
    """A value for a setting of type ``hint``: plausible (right type, odd characters),
    hostile (tests/hostile.py) or of another type altogether."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _value_for(args[0])
    if origin in (list, tuple):
        plausible = st.lists(_value_for(args[0]), max_size=3)
    elif origin in (dict, Mapping):
        plausible = st.dictionaries(SAFE, _value_for(args[1]), max_size=2)
    else:
        plausible = PLAUSIBLE.get(hint, SAFE)
    other = st.one_of(TEXT, st.integers(), st.floats(), st.lists(TEXT, max_size=2),
                      st.dictionaries(TEXT, TEXT, max_size=2))
    hostile = st.sampled_from(hostile_values(hint) or list(HOSTILE_TEXT))
    return st.one_of(*[plausible] * 6, hostile, hostile, other)


@st.composite
def configs(draw: st.DrawFn, world: World) -> dict[str, Any]:
    """The base config with 1 or 2 changes: a key set to a generated value, a key deleted,
    or a whole table set to something that is not one."""
    raw = world.raw
    for _ in range(draw(st.integers(1, 2))):
        key, hint = draw(st.sampled_from(KEYS))
        action = draw(st.sampled_from(["value"] * 8 + ["delete", "table"]))
        if action == "value":
            raw = with_value(raw, key, draw(_value_for(hint)))
        elif action == "delete":
            raw = without(raw, key)
        else:
            raw = with_value(raw, key[:-1], draw(st.one_of(TEXT, st.integers(),
                                                           st.lists(TEXT, max_size=2))))
    return raw


def _check(world: World, outcome: Outcome) -> list[str]:
    problems = [*outcome.problems(world.secrets), *hang_problems(outcome)]
    if outcome.argv[2:4] == ("systemd", "render") and outcome.code == 0:
        files = _rendered(outcome.stdout)
        problems += [f"{' '.join(outcome.argv)!r}: {line}"
                     for line in foreign_lines(files, world.template_keys)]
    return problems


def _rendered(stdout: str) -> dict[str, str]:
    """`phobos systemd render`'s output ("### NAME" before each file) as {name: text}."""
    files: dict[str, str] = {}
    name = None
    for line in stdout.split("\n"):
        if line.startswith("### "):
            name = line[4:]
            files[name] = ""
        elif name is not None:
            files[name] += line + "\n"
    return {n: t.rstrip("\n") + "\n" for n, t in files.items()}


@pytest.mark.parametrize("verb", VERBS, ids=[" ".join(v) for v in VERBS])
def test_generated_configs_in_process(world: World, verb: tuple[str, ...]) -> None:
    problems: list[str] = []

    @seed(SEED)
    @given(raw=configs(world))
    def check(raw: dict[str, Any]) -> None:
        path = world.write(raw)
        accepted = _accepted(raw, path)
        TALLY[f"configs: {'accepted' if accepted else 'refused'} ({verb[0]})"] += 1
        problems.extend(_check(world, run_inprocess(["-c", str(path), *verb], "in-process")))

    settings_for(check, examples(150))()
    assert problems == [], "\n".join(problems[:20])


def settings_for(test: Any, count: int) -> Any:
    from hypothesis import settings

    return settings(max_examples=count)(test)


def _accepted(raw: dict[str, Any], path: Path) -> bool:
    import tomllib

    from phobos.errors import PhobosError

    try:
        parse(tomllib.loads(path.read_text()), path)
    except PhobosError:
        return False
    return True


def test_generated_configs_as_real_processes(world: World) -> None:
    """A smaller sample through `python -m phobos`: the real entry point, streams and exit
    status."""
    problems: list[str] = []

    @seed(SEED)
    @given(raw=configs(world), verb=st.sampled_from(VERBS))
    def check(raw: dict[str, Any], verb: tuple[str, ...]) -> None:
        path = world.write(raw)
        problems.extend(_check(world, run_process(["-c", str(path), *verb], "process",
                                                  cwd=world.dir)))

    settings_for(check, examples(16))()
    assert problems == [], "\n".join(problems[:20])
