"""Generated command lines for every verb (the verbs, options and their types walked from
`cli/parser.build_parser()`), against a valid config whose every path is a temporary
one: never a traceback or exit 70, never a call over 10 seconds, no secret of the
config in any output.

Verbs that would act on this machine (format a drive, install units in /etc, mount,
serve or loop forever, run jobs, reach other hosts) have their command lines parsed but
not run; `systemd install/uninstall/list` run with `--root` in the temporary directory;
verbs that join the backup namespace run as real processes, and the namespace is
dropped at the end.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fuzzlib import SEED, TALLY, examples, hang_problems, run_inprocess, run_process
from hypothesis import given, seed, settings
from hypothesis import strategies as st
from test_fuzz_config import World

from hostile import HOSTILE_TEXT, toml_dumps
from phobos.cli.parser import build_parser

# Parsed only: running them would change this machine, block, or reach the network.
PARSE_ONLY = {("run",), ("daemon",), ("demo",), ("web",), ("unlock",), ("ns", "create"),
              ("ns", "enter"), ("ns", "destroy"), ("drive", "init"), ("drive", "attached"),
              ("drive", "release"), ("drive", "eject"), ("drive", "mount"),
              ("repo", "init"), ("repo", "key-export"), ("repo", "drill"), ("host", "add"),
              ("host", "rekey"), ("led", "test")}
# Options that make a verb run until Ctrl-C: such command lines are parsed only.
LOOPING = {("status",): "--watch"}
ROOTED = {("systemd", "install"), ("systemd", "uninstall"), ("systemd", "list")}
# Run as real processes: they join the backup namespace (setns), which must not happen to
# the test process itself.
JOINING = {("repo", "info"), ("repo", "list"), ("drive", "sheet"), ("find",), ("restore",)}


@dataclass(frozen=True, slots=True)
class Verb:
    path: tuple[str, ...]
    parser: argparse.ArgumentParser

    @property
    def actions(self) -> list[argparse.Action]:
        return [a for a in self.parser._actions
                if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)]


def verbs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[Verb]:
    """Every runnable verb (``("drive", "init")``...) with its parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs and path:
        yield Verb(path, parser)
    for sub in subs:
        for name, child in sub.choices.items():
            yield from verbs(child, (*path, name))


VERBS = list(verbs(build_parser()))
NAMES = ["pull", "nightly", "check", "drill", "offsite", "tidy", "main", "luv",
         "ext-a", "phobos-job-nightly.service", "nightly-2", "1"]


def _words(world: World) -> st.SearchStrategy[str]:
    paths = [str(world.dir / "out"), str(world.dir), str(world.dir / "phobos.toml"),
             str(world.dir / "missing" / "x"), "/nonexistent", ""]
    numbers = st.integers(-2**70, 2**70).map(str)
    floats = st.floats().map(repr)
    return st.one_of(st.sampled_from(NAMES), st.sampled_from(paths),
                     st.sampled_from([t for t in HOSTILE_TEXT if "\x00" not in t]),
                     numbers, floats, st.text(st.characters(exclude_categories=["Cs"],
                                                            exclude_characters="\x00"),
                                              max_size=12))


@st.composite
def command_lines(draw: st.DrawFn, verb: Verb, world: World) -> list[str]:
    """Some of the verb's options (with generated values) and its positionals."""
    words = _words(world)
    argv: list[str] = []
    for action in verb.actions:
        if action.option_strings:
            if not draw(st.booleans()):
                continue
            flag = draw(st.sampled_from(action.option_strings))
            if action.nargs == 0:
                argv.append(flag)
                continue
            value = draw(st.sampled_from(list(action.choices)) if action.choices
                         and draw(st.booleans()) else words)
            argv += [flag, str(value)]
        else:
            count = {None: 1, "?": draw(st.integers(0, 1)), "+": draw(st.integers(1, 3)),
                     "*": draw(st.integers(0, 2)), "...": draw(st.integers(0, 2))}.get(
                         action.nargs, 1)  # type: ignore[call-overload]
            argv += [str(draw(st.sampled_from(list(action.choices)) if action.choices
                              and draw(st.booleans()) else words)) for _ in range(count)]
    if draw(st.integers(0, 9)) == 0:  # now and then a word that is no option of it
        argv.insert(draw(st.integers(0, len(argv))), draw(words))
    return argv


@pytest.fixture(autouse=True)
def in_the_world(cli_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths among the generated words land in the temporary directory."""
    monkeypatch.chdir(cli_world.dir)


@pytest.fixture(scope="module")
def cli_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    world = World(tmp_path_factory.mktemp("fuzz-cli"))
    # borgmatic takes seconds to start (doctor validates its configs): under CI's load it
    # would eat most of the 10-second limit of every doctor call.
    del world.raw["jobs"]["bm"]
    config = world.dir / "phobos.toml"
    config.write_text(toml_dumps(world.raw))
    (world.dir / "root").mkdir()
    yield world
    # `repo info` and friends join the backup namespace ([storage] device): drop it.
    done = run_process(["-c", str(config), "ns", "destroy", "--force"], "cleanup")
    assert done.code == 0, done.stderr
    assert str(world.dir) not in Path("/proc/mounts").read_text()


def _parse_only(argv: list[str]) -> list[str]:
    """Parse a command line that must not run: argparse's own exit, or a namespace."""
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        TALLY[f"parsed only: exit {exc.code}"] += 1
        return [] if exc.code in (0, 2) else [f"{argv!r}: argparse exit {exc.code}"]
    except Exception as exc:  # a type function that raised past argparse
        return [f"{argv!r}: {type(exc).__name__}: {exc}"]
    TALLY["parsed only: accepted"] += 1
    return []


@pytest.mark.parametrize("verb", VERBS, ids=[" ".join(v.path) for v in VERBS])
def test_generated_command_lines(cli_world: World, verb: Verb) -> None:
    problems: list[str] = []
    config = str(cli_world.dir / "phobos.toml")

    @seed(SEED)
    @settings(max_examples=examples(12))
    @given(args=command_lines(verb, cli_world))
    def check(args: list[str]) -> None:
        argv = ["-c", config, *verb.path, *args]
        if verb.path in PARSE_ONLY or LOOPING.get(verb.path) in args:
            problems.extend(_parse_only(argv))
            return
        if verb.path in ROOTED:
            argv = [*argv, "--root", str(cli_world.dir / "root")]
        if verb.path in JOINING:
            outcome = run_process(argv, "cli process", cwd=cli_world.dir)
        else:
            outcome = run_inprocess(argv, "cli")
        problems.extend([*outcome.problems(cli_world.secrets), *hang_problems(outcome)])

    check()
    assert problems == [], "\n".join(problems[:20])


def test_every_verb_is_covered() -> None:
    covered = {v.path for v in VERBS}
    assert covered >= PARSE_ONLY | ROOTED
    assert len(covered) > 40


def test_help_of_every_verb_as_real_processes(cli_world: World) -> None:
    """`--help` and a bad option of every verb through the real entry point: exit 0 and
    2, text on the right stream, no traceback."""
    problems = []
    for verb in VERBS[::3]:  # a third of them: each call costs a Python start
        for extra, code in (("--help", 0), ("--no-such-option", 2)):
            outcome = run_process([*verb.path, extra], "cli process", cwd=cli_world.dir)
            if outcome.code != code or "Traceback" in outcome.stderr:
                problems.append(f"{verb.path} {extra}: exit {outcome.code} {outcome.stderr}")
    assert problems == []
