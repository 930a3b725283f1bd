"""borgmatic: the argv that validates configuration files, and what its answer says.

``borgmatic config validate`` (borgmatic 1.7.15 and later) checks the files against
borgmatic's own schema: unknown keys, wrong types, YAML that does not parse. Older
borgmatic (Debian 12 ships 1.7.7) has ``validate-borgmatic-config`` for the same; a
usage error (exit 2) from the new form means falling back to the old.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

USAGE_ERROR = 2


def validate_argv(program: str, configs: Sequence[Path]) -> tuple[str, ...]:
    """Validate ``configs`` with ``program`` (``borgmatic config validate``)."""
    return (program, *_config_options(configs), "config", "validate")


def legacy_validate_argv(configs: Sequence[Path]) -> tuple[str, ...]:
    """The same for borgmatic before 1.7.15 (``validate-borgmatic-config``)."""
    return ("validate-borgmatic-config", *_config_options(configs))


def _config_options(configs: Sequence[Path]) -> list[str]:
    options: list[str] = []
    for path in configs:
        options += ["-c", str(path)]
    return options


def validation_problems(lines: Iterable[str]) -> list[str]:
    """The lines of borgmatic's answer that say what is wrong (the rest is its banner)."""
    noise = ("summary:", "Need some help?", "Configuration validation failed")
    found = []
    for line in lines:
        text = line.removeprefix("stderr: ").strip()
        if text and not text.startswith(noise):
            found.append(text)
    return found
