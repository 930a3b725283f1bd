"""The docs cannot drift: the configuration reference is the generator's output, the man
page names every command, bash completion offers what the parser accepts, and the seed's
night in the guide is what `phobos schedule` says of it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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
    for code in ("0", "1", "2", "3", "4", "5", "70"):
        assert f".B {code}\n" in page


def test_bash_completion_offers_the_commands() -> None:
    """The quick check (tests/integration/test_completion.py types TAB in bash, zsh and
    fish)."""
    from phobos.cli.completion import script as completion_script

    script = completion_script("bash", build_parser())
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


def test_the_seed_night_in_the_docs_is_what_phobos_says(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/from-the-seed.md's config, its night as text, and the pictures in docs/ are what
    `phobos schedule` makes of it. Regenerate the pictures with the commands below."""
    from phobos.__main__ import main

    monkeypatch.setenv("TZ", "UTC")
    guide = (DOCS / "from-the-seed.md").read_text()
    toml = guide.split("```toml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "phobos.toml"
    config.write_text(f'[paths]\nstate = "{tmp_path}/state"\nrun = "{tmp_path}/run"\n' + toml)
    what_if = tmp_path / "what-if.toml"
    what_if.write_text(config.read_text().replace('"*-*-* 06:00"', '"*-*-* 03:44"')
                       .replace('"Sun *-*-* 07:00"', '"Sun *-*-* 03:00"'))
    for source, days, picture in ((config, "1", "seed-night.svg"),
                                  (what_if, "1", "seed-night-what-if.svg"),
                                  (config, "7", "seed-week.svg")):
        svg = tmp_path / picture
        assert main(["-c", str(source), "schedule", "--from", "2026-01-04 00:00", "--days",
                     days, "--svg", str(svg)]) == 0
        text = capsys.readouterr().out
        assert svg.read_text() == (DOCS / picture).read_text(), (
            f"docs/{picture} is stale: TZ=UTC phobos -c CONFIG schedule --from "
            f"'2026-01-04 00:00' --days {days} --svg docs/{picture} (CONFIG: the guide's)")
        said = text[text.index("What happens"):].split("\n\n")[0].splitlines()[1:]
        if days == "1":
            assert "\n".join(said) in guide, said
    night = main(["-c", str(config), "schedule", "--from", "2026-01-04 00:00"])
    assert night == 0
    table = capsys.readouterr().out.split("\n\n")[1]
    assert table in guide
