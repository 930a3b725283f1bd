"""The command tree the completion scripts carry, read from the real parser: where names
from the config are completed, what each option's value is, and the keys every script
looks up (the shells themselves are driven in tests/integration/test_completion.py)."""

from __future__ import annotations

import argparse

import pytest

from phobos.cli.parser import build_parser
from phobos.completion.tree import Spot, commands, entries, mark_names

TREE = {command.path: command for command in commands(build_parser())}


def test_names_are_completed_where_an_argument_takes_one() -> None:
    names = {(path, index): spot.words[0] for path, command in TREE.items()
             for index, spot in enumerate(command.positionals, start=1)
             if spot.kind == "names"}
    assert names == {
        ("phobos/run", 1): "jobs", ("phobos/history", 1): "jobs",
        ("phobos/host/test", 1): "hosts", ("phobos/host/rekey", 1): "hosts",
        ("phobos/drive/release", 1): "drives", ("phobos/drive/eject", 1): "drives",
        ("phobos/drive/mount", 1): "drives", ("phobos/drive/sheet", 1): "drives",
        ("phobos/repo/init", 1): "repos", ("phobos/repo/info", 1): "repos",
        ("phobos/repo/list", 1): "repos", ("phobos/repo/key-export", 1): "repos",
        ("phobos/repo/drill", 1): "repos", ("phobos/repo/trust", 1): "repos",
        ("phobos/systemd/trigger", 1): "jobs"}
    values = dict(TREE["phobos/repo/drill"].values)
    assert values["--archives-of"] == Spot("names", ("jobs",))
    assert dict(TREE["phobos/run"].values)["--drive"] == Spot("names", ("drives",))
    assert dict(TREE["phobos/find"].values)["--repo"] == Spot("names", ("repos",))
    assert dict(TREE["phobos/find"].values)["--host"] == Spot("names", ("hosts",))
    assert dict(TREE["phobos/restore"].values)["--repo"] == Spot("names", ("repos",))
    assert dict(TREE["phobos/restore"].values)["--from-drive"] == Spot("names", ("drives",))
    assert dict(TREE["phobos/restore"].values)["--to"] == Spot("files")


def test_values_by_kind() -> None:
    assert dict(TREE["phobos"].values)["--config"] == Spot("files")
    assert dict(TREE["phobos/run"].values)["--trigger"].kind == "choices"
    assert TREE["phobos/repo/key-export"].positionals == (Spot("names", ("repos",)),
                                                           Spot("files"))
    assert TREE["phobos/ns/enter"].positionals == (Spot("commands"),)
    assert TREE["phobos/ns/enter"].repeats and TREE["phobos/calendar"].repeats
    assert TREE["phobos/host/add"].positionals[:2] == (Spot("none"), Spot("none"))
    # --watch [SECONDS]: the next word may be another option, so nothing is expected
    assert "--watch" in dict(TREE["phobos/status"].options)
    assert "--watch" not in dict(TREE["phobos/status"].values)


def test_table_keys() -> None:
    keys = {entry.key: entry for entry in entries(build_parser())}
    assert keys["pos:phobos/run:1"].lines == ("names jobs",)
    assert keys["value:phobos/run:--drive"].lines == ("names drives",)
    assert keys["pos:phobos/calendar:"].wildcard  # any later word of the expression
    assert [line.split("\t")[0] for line in keys["subs:phobos/drive:"].lines][:2] == [
        "init", "attached"]


def test_only_config_tables_can_be_marked() -> None:
    parser = argparse.ArgumentParser()
    with pytest.raises(ValueError, match="not 'job'"):
        mark_names(parser.add_argument("job"), "job")
