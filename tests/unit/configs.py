"""The unit layer's one config builder: a configuration from TOML text (or already-parsed
tables) through the real loader. With a ``root`` (a tmp_path), ``[paths]`` point into it
and TOML text is also written to ``root/phobos.toml`` (the config's ``source``), so the
real CLI can be called on it; without, nothing touches the disk.
"""

from __future__ import annotations

import textwrap
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from phobos.config.load import parse
from phobos.config.model import Config
from phobos.errors import ConfigError

SOURCE = Path("/etc/phobos/phobos.toml")  # the file name problems are reported against


def paths_table(root: Path) -> dict[str, str]:
    """``[paths]`` with every directory phobos writes below ``root``."""
    return {name: str(root / name) for name in ("state", "run", "log", "keys")}


def config_from(body: str | Mapping[str, Any] = "", *, root: Path | None = None) -> Config:
    """``body`` (TOML text, dedented; or a dict of tables) as a validated Config.
    Raises ConfigError with every problem, as ``phobos config check`` would."""
    text = textwrap.dedent(body) if isinstance(body, str) else ""
    raw: dict[str, Any] = tomllib.loads(text) if isinstance(body, str) else dict(body)
    source = SOURCE
    if root is not None:
        raw["paths"] = {**paths_table(root), **raw.get("paths", {})}
        if isinstance(body, str):
            source = root / "phobos.toml"
            source.write_text(_with_paths(text, root))
    return parse(raw, source, text)


def _with_paths(text: str, root: Path) -> str:
    """``text`` with the default ``[paths]`` of ``root`` for the keys it does not set."""
    own = tomllib.loads(text).get("paths", {})
    missing = {k: v for k, v in paths_table(root).items() if k not in own}
    if not missing:
        return text
    lines = [f'{key} = "{value}"' for key, value in missing.items()]
    if "paths" not in tomllib.loads(text):
        return "[paths]\n" + "\n".join(lines) + "\n\n" + text
    return text.replace("[paths]\n", "[paths]\n" + "\n".join(lines) + "\n", 1)


def problems_of(body: str | Mapping[str, Any], *, root: Path | None = None) -> list[str]:
    """The problems the loader reports for ``body``, each without its ``file:line:``."""
    with pytest.raises(ConfigError) as info:
        config_from(body, root=root)
    return [problem.split(": ", 1)[1] for problem in info.value.problems]
