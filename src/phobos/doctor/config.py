"""Doctor check area ``config``: does the config file load, what does it hold, and is
its layout risky (:func:`phobos.config.layout.layout_warnings`)."""

from __future__ import annotations

from pathlib import Path

from phobos.config.layout import layout_warnings
from phobos.config.load import load
from phobos.config.model import Config
from phobos.doctor.findings import Finding, error, ok, warning
from phobos.errors import ConfigError


def load_config(path: Path) -> tuple[Config | None, list[Finding]]:
    """The config and a finding about it; (None, [error]) when it does not load."""
    try:
        config = load(path)
    except ConfigError as exc:
        return None, [error("config", "file", str(exc), exc.hint)]
    summary = (f"{len(config.jobs)} jobs, {len(config.hosts)} hosts, "
               f"{len(config.repos)} repos, {len(config.drives)} drives")
    risky = [warning("config", "layout", text, "see `phobos config check`")
             for text in layout_warnings(config)]
    return config, [ok("config", "file", f"{path}: valid ({summary})"), *risky]
