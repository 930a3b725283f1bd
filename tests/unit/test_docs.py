"""The docs cannot drift: the configuration reference is the generator's output, the man
page names every command, and bash completion offers what the parser accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

from phobos.cli.parser import build_parser
from phobos.config.reference import render

DOCS = Path(__file__).resolve().parents[2] / "docs"


def verbs() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "verb")
    return sorted(action.choices)  # type: ignore[arg-type]


def test_configuration_reference_is_generated() -> None:
    assert (DOCS / "configuration.md").read_text() == render(), (
        "docs/configuration.md is stale: run `phobos config reference > docs/configuration.md`")


def test_man_page_documents_every_command() -> None:
    page = (DOCS / "phobos.1").read_text()
    missing = [verb for verb in verbs() if f'.B "{verb}' not in page and f".B {verb}" not in page]
    assert missing == []
    for code in ("0", "1", "2", "3", "4", "70"):
        assert f".B {code}\n" in page


def test_bash_completion_offers_the_commands() -> None:
    from phobos.cli.completion import bash_script

    script = bash_script(build_parser())
    probe = ('source /dev/stdin; COMP_WORDS=(phobos dr); COMP_CWORD=1; _phobos; '
             'echo "${COMPREPLY[@]}"; COMP_WORDS=(phobos drive l); COMP_CWORD=2; _phobos; '
             'echo "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", probe], input=script, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert out[0].split() == ["drive"]
    assert out[1].split() == ["list"]


def test_architecture_map_names_every_package() -> None:
    package = DOCS.parent / "src" / "phobos"
    rooms = sorted(p.parent.name for p in package.glob("*/__init__.py"))
    text = (DOCS / "architecture.md").read_text()
    assert [room for room in rooms if f"`{room}/`" not in text] == []
