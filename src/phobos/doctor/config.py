"""Doctor check area ``config``: does the config file load, and what does it hold."""

from __future__ import annotations

from pathlib import Path

from phobos.config.load import load
from phobos.config.model import Config
from phobos.doctor.findings import Finding, error, ok
from phobos.errors import ConfigError


def load_config(path: Path) -> tuple[Config | None, list[Finding]]:
    """The config and a finding about it; (None, [error]) when it does not load."""
    try:
        config = load(path)
    except ConfigError as exc:
        return None, [error("config", "file", str(exc), exc.hint)]
    summary = (f"{len(config.jobs)} jobs, {len(config.hosts)} hosts, "
               f"{len(config.repos)} repos, {len(config.drives)} drives")
    return config, [ok("config", "file", f"{path}: valid ({summary})")]
