"""The shell blocks of docs/recovery.md, as the guide tests run them.

A block is a fenced ``sh`` block; an HTML comment right before it,
``<!-- guide-test: TAGS -->``, says where it runs:

- ``values``: assignments a reader fills in from their own machine (or the recovery
  sheet); a test puts its own values in, and nothing else in such a block may differ;
- ``fresh``: part of the restore on a machine without phobos (run in a clean shell);
- ``dm``: needs device-mapper (``cryptsetup open``): only in the QEMU guest;
- ``plain``: the variant for a drive phobos did not encrypt: only where ``dm`` is not.

Untagged blocks use phobos and run, in order, in one shell on the NAS (the sandbox).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "recovery.md"
TAGS = {"values", "fresh", "dm", "plain"}
_BLOCK = re.compile(r"(?:<!-- guide-test: ([a-z ]+) -->\n)?```sh\n(.*?)```", re.S)
_ASSIGNMENT = re.compile(r"""^(export )?([A-Z_][A-Z0-9_]*)=("[^"]*"|'[^']*'|\S+)(\s+#.*)?$""")


@dataclass(frozen=True, slots=True)
class Block:
    tags: frozenset[str]
    text: str


def blocks(path: Path = GUIDE) -> list[Block]:
    found = [Block(frozenset((tags or "").split()), text)
             for tags, text in _BLOCK.findall(path.read_text())]
    unknown = set().union(*(b.tags for b in found)) - TAGS
    assert not unknown, f"unknown guide-test tags: {unknown}"
    return found


def with_values(block: Block, values: Mapping[str, str]) -> str:
    """A ``values`` block with the test's values: it must assign exactly those names."""
    lines, names = [], set()
    for line in block.text.splitlines():
        match = _ASSIGNMENT.match(line.strip())
        assert match, f"not an assignment in a values block: {line!r}"
        export, name = match.group(1) or "", match.group(2)
        names.add(name)
        lines.append(f"{export}{name}={values[name]}")
    assert names == set(values), (names, set(values))
    return "\n".join(lines) + "\n"


def replace_assignment(script: str, name: str, value: str) -> str:
    """``script`` with the assignment of ``name`` (a line of its own) set to ``value``."""
    new, count = re.subn(rf"^(\s*(?:export )?){name}=\S+", rf"\g<1>{name}={value}", script,
                         flags=re.M)
    assert count, f"{name}= is not assigned in the script"
    return new


def script(selected: list[Block], values: Mapping[str, str]) -> str:
    """The blocks in order as one script, ``values`` blocks filled in."""
    return "".join(with_values(b, values) if "values" in b.tags else b.text
                   for b in selected)


def nas_blocks(found: list[Block]) -> list[Block]:
    """The blocks run on the NAS, with phobos."""
    return [b for b in found if not b.tags & {"fresh", "dm", "plain"}]


def fresh_blocks(found: list[Block], *, device_mapper: bool) -> list[Block]:
    """The blocks of the restore on a machine without phobos: with device-mapper (the
    QEMU guest, a LUKS drive) or without (a plain drive)."""
    skip = "plain" if device_mapper else "dm"
    return [b for b in found if b.tags & {"fresh", "plain"} and skip not in b.tags]
