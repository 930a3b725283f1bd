"""Strict conversion of parsed TOML into frozen dataclasses.

Config classes are ordinary frozen dataclasses whose fields carry metadata made by
:func:`setting` (documentation, secrecy, a value check). :func:`build` walks a raw
table against such a class and collects *every* problem instead of stopping at the
first, each with its key path (``jobs.nightly.keep.dialy``) and, where the locator
knows it, its line. Unknown keys get a "did you mean" from the known ones.

The same metadata generates the configuration reference (docs), so the docs cannot
drift from what the loader accepts.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import math
import re
import types
import typing
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phobos.core.model import parse_duration

MISSING: Any = dataclasses.MISSING


class Duration(float):
    """Seconds, written in the config as ``"90s"``, ``"30m"``, ``"2h"`` or a number."""


# Durations beyond ten years are typos (and `inf` would crash date arithmetic later).
DURATION_MAX_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Problem:
    path: tuple[str, ...]
    message: str

    @property
    def dotted(self) -> str:
        return ".".join(self.path) if self.path else "(top level)"


class Problems:
    """Collects problems during one load; ``where`` turns a key path into a line."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def add(self, path: tuple[str, ...], message: str) -> None:
        self.items.append(Problem(path, message))

    def __bool__(self) -> bool:
        return bool(self.items)


def setting(default: Any = MISSING, *, doc: str, secret: bool = False,
            check: Callable[[Any], str | None] | None = None,
            factory: Callable[[], Any] | None = None) -> Any:
    """A config field: ``doc`` for the reference, ``secret`` to mask it in output,
    ``check(value)`` returning an error message or None."""
    meta = {"doc": doc, "secret": secret, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """`` (did you mean 'daily'?)`` or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def build(cls: type[Any], raw: Any, path: tuple[str, ...], problems: Problems,
          extra_keys: typing.Iterable[str] = ()) -> Any:
    """Convert ``raw`` (a TOML table) to ``cls``; on problems record them and return None.

    ``extra_keys`` are keys the caller has already consumed (e.g. ``kind``), allowed
    in ``raw`` even though ``cls`` may not declare them.
    """
    if not isinstance(raw, dict):
        problems.add(path, f"expected a table, got {_type_name(raw)}")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _type_hints(typing.cast(Hashable, cls))
    known = set(fields) | set(extra_keys)
    ok = True
    for key in raw:
        if key not in known:
            problems.add((*path, key), "unknown key" + suggest(key, known))
            ok = False
    values: dict[str, Any] = {}
    for name, fld in fields.items():
        if name not in raw:
            if fld.default is MISSING and fld.default_factory is MISSING:
                problems.add((*path, name), "required key is missing")
                ok = False
            continue
        value = convert(hints[name], raw[name], (*path, name), problems)
        if value is _INVALID:
            ok = False
            continue
        check = fld.metadata.get("check")
        message = check(value) if check else None
        if message:
            problems.add((*path, name), message)
            ok = False
            continue
        values[name] = value
    return cls(**values) if ok else None


@functools.cache
def _type_hints(cls: Hashable) -> dict[str, Any]:
    # Resolving the annotations is most of the cost of a load: once per class.
    return typing.get_type_hints(cls)


class _Invalid:
    pass


_INVALID: Any = _Invalid()


def convert(hint: Any, raw: Any, path: tuple[str, ...], problems: Problems) -> Any:
    """Convert one value to the type ``hint``; record a problem and return _INVALID."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        return convert(members[0], raw, path, problems) if len(members) == 1 else raw
    if origin in (list, tuple):  # tuple[X, ...]: a TOML array, frozen
        return _convert_list(typing.get_args(hint)[0], raw, path, problems)
    if origin in (dict, Mapping):
        return _convert_dict(typing.get_args(hint)[1], raw, path, problems)
    if dataclasses.is_dataclass(hint):
        result = build(typing.cast(type[Any], hint), raw, path, problems)
        return _INVALID if result is None else result
    converter = _SCALARS.get(hint) or (_enum_converter if _is_enum(hint) else None)
    if converter is None:
        raise TypeError(f"schema: no converter for {hint!r} at {'.'.join(path)}")
    try:
        return converter(hint, raw)
    except (ValueError, TypeError) as exc:
        problems.add(path, str(exc))
        return _INVALID


def _convert_list(item: Any, raw: Any, path: tuple[str, ...], problems: Problems) -> Any:
    if not isinstance(raw, list):
        problems.add(path, f"expected a list, got {_type_name(raw)}")
        return _INVALID
    items = [convert(item, v, (*path, f"[{i}]"), problems) for i, v in enumerate(raw)]
    return _INVALID if any(v is _INVALID for v in items) else tuple(items)


def _convert_dict(value_hint: Any, raw: Any, path: tuple[str, ...], problems: Problems) -> Any:
    if not isinstance(raw, dict):
        problems.add(path, f"expected a table, got {_type_name(raw)}")
        return _INVALID
    items = {k: convert(value_hint, v, (*path, k), problems) for k, v in raw.items()}
    if any(v is _INVALID for v in items.values()):
        return _INVALID
    return types.MappingProxyType(items)


def _is_enum(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, enum.Enum)


def _enum_converter(hint: Any, raw: Any) -> Any:
    values = [m.value for m in hint]
    if raw in values:
        return hint(raw)
    shown = ", ".join(repr(v) for v in values)
    raise ValueError(f"{raw!r} is not one of {shown}{suggest(str(raw), values)}")


def _str(_: Any, raw: Any) -> str:
    if not isinstance(raw, str):
        raise TypeError(f"expected a string, got {_type_name(raw)}")
    if "\0" in raw:
        # No argument, path, environment variable or file name can hold one.
        raise ValueError(f"{raw!r} contains a NUL character")
    return raw


def _int(_: Any, raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise TypeError(f"expected an integer, got {_type_name(raw)}")
    return raw


def _float(_: Any, raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise TypeError(f"expected a number, got {_type_name(raw)}")
    try:
        value = float(raw)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise ValueError(f"{raw!r} is not a finite number")
    return value


def _bool(_: Any, raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise TypeError(f"expected true or false, got {_type_name(raw)}")
    return raw


def _path(_: Any, raw: Any) -> Path:
    text = _str(None, raw)
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    if any(ord(c) < 32 or c == "\x7f" for c in text):
        raise ValueError(f"{text!r} contains a newline or another control character")
    if ".." in text.split("/"):
        # Where a path lies decides what is archived, locked and writable: say it plainly.
        raise ValueError(f"{text!r} contains '..': write the path without it")
    return Path(text)


def _duration(_: Any, raw: Any) -> Duration:
    if not isinstance(raw, str | int | float) or isinstance(raw, bool):
        raise TypeError(f"expected a duration such as \"30m\", got {_type_name(raw)}")
    try:
        seconds = parse_duration(raw)
    except OverflowError:  # an integer beyond any float
        seconds = math.inf
    if not math.isfinite(seconds) or seconds > DURATION_MAX_DAYS * 86400:
        raise ValueError(f"{raw!r} is not a duration phobos can use: at most "
                         f"{DURATION_MAX_DAYS} days (\"{DURATION_MAX_DAYS}d\")")
    return Duration(seconds)


_SCALARS: dict[Any, Callable[[Any, Any], Any]] = {
    str: _str, int: _int, float: _float, bool: _bool, Path: _path, Duration: _duration,
}


def _type_name(raw: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "a list", dict: "a table"}
    return names.get(type(raw), type(raw).__name__)


# --- locating keys in the TOML text -------------------------------------------------

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')"
                  r"(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")
_INLINE_KEY = re.compile(r"[{,]\s*([A-Za-z0-9_-]+)\s*=")


def _split_dotted(text: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", text)
    return tuple(a or b or c for a, b, c in parts)


def locate_keys(source: str) -> dict[tuple[str, ...], int]:
    """Map key paths to 1-based line numbers, for tables, keys and inline-table keys.

    A best-effort scan (multi-line strings may confuse it); used only to point error
    messages at a line, never to read values.
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(source.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _split_dotted(header.group(1))
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if not key:
            continue
        path = (*table, *_split_dotted(key.group(1)))
        lines.setdefault(path, number)
        for inner in _INLINE_KEY.finditer(line[key.end():]):
            lines.setdefault((*path, inner.group(1)), number)
    return lines


def line_of(path: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> int | None:
    """The line of the longest known prefix of ``path``."""
    clean = tuple(p for p in path if not p.startswith("["))
    for end in range(len(clean), 0, -1):
        if clean[:end] in lines:
            return lines[clean[:end]]
    return None
