"""Showing a configuration: its plain (JSON-ready) form with secrets masked, for
``phobos config show`` and the dashboard."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

MASK = "********"


def to_plain(value: Any, *, mask: bool = True) -> Any:
    """JSON-ready form of a config value; fields marked secret are masked."""
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for fld in fields(value):
            item = getattr(value, fld.name)
            secret = fld.metadata.get("secret", False)
            out[fld.name] = MASK if (mask and secret and item) else to_plain(item, mask=mask)
        return out
    if isinstance(value, Mapping):
        return {k: to_plain(v, mask=mask) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_plain(v, mask=mask) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
