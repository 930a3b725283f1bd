"""Showing a configuration: its plain (JSON-ready) form with secrets masked, for
``phobos config show`` and the dashboard, and that form written back as TOML.

Masking keeps the shape, so the shown file still loads (``phobos config check``
accepts ``phobos config show``'s output): a secret string becomes ``********``, a URL
keeps only its scheme (``https://********``: still an http URL), a list or table of
secrets keeps its length or its keys. The TOML marks every masked value with a
``# masked`` comment; nothing of the secret itself is shown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

MASK = "********"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class Masked(str):
    """A secret replaced by :data:`MASK` (a plain string to JSON; the TOML writer marks
    it)."""


def mask_secret(value: Any) -> Any:
    """``value`` with every string in it masked, its shape kept (see module doc)."""
    if isinstance(value, str):
        scheme = _SCHEME.match(value)
        return Masked((scheme.group(1) if scheme else "") + MASK)
    if isinstance(value, Mapping):
        return {key: mask_secret(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [mask_secret(item) for item in value]
    return Masked(MASK)


def to_plain(value: Any, *, mask: bool = True) -> Any:
    """JSON-ready form of a config value; fields marked secret are masked."""
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for fld in fields(value):
            item = to_plain(getattr(value, fld.name), mask=mask)
            secret = fld.metadata.get("secret", False)
            out[fld.name] = mask_secret(item) if (mask and secret and item) else item
        return out
    if isinstance(value, Mapping):
        return {k: to_plain(v, mask=mask) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_plain(v, mask=mask) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --- TOML ------------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped, the
    rest as it is (TOML is UTF-8)."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_string(key)


def toml_value(value: Any) -> str:
    """One value (never None: unset keys are left out)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(float(value)) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, Mapping):
        items = [f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _masked(value: Any) -> bool:
    if isinstance(value, Masked):
        return True
    if isinstance(value, list):
        return any(_masked(item) for item in value)
    return False


def toml_lines(plain: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[str]:
    """``plain`` (what :func:`to_plain` made) as TOML lines: a table's keys, then its
    subtables; unset (None) values left out, masked ones marked."""
    lines = []
    for key, value in plain.items():
        if value is None or isinstance(value, Mapping):
            continue
        mark = "  # masked" if _masked(value) else ""
        lines.append(f"{toml_key(key)} = {toml_value(value)}{mark}")
    for key, value in plain.items():
        if isinstance(value, Mapping):
            path = (*prefix, key)
            lines += ["", "[" + ".".join(toml_key(part) for part in path) + "]"]
            lines += toml_lines(value, path)
    return lines
