"""Hostile input for tests: a config with every table, every key of the schema (walked like
config/reference.py walks it), hostile values for each type, and the check that rendered
units hold no line phobos's own templates did not write."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from phobos.config.model import TopLevel
from phobos.config.schema import Duration
from phobos.core.model import JobKind

MARK = "Injected"
# Each would start a directive of its own, end the line early or continue it into the
# next one if it reached a unit unescaped; plus specifiers, variables and quotes.
HOSTILE_TEXT = (f"x\n{MARK}=1", f"x\r{MARK}=2", "x\x00y", f"x\nExecStartPre=/bin/{MARK}",
                "a\\", '%n $HOME "q\' ;:', "\x1b[31mred", "", " ", "-x", "a" * 300)
HOSTILE_PATHS = (f"/x\n{MARK}=1", f"/x\rExecStartPre=/bin/{MARK}", "/x\x00y",
                 "/a b/%i/$X/\"q'\\;", "/srv/a:b", "/x\\", "/srv/../etc", "relative",
                 "/", "/" + "d" * 300)
HOSTILE_NUMBERS = (float("inf"), float("nan"), -1, 0, 10**30, 2**63, -(2**63) - 1, 1.5)


def base_raw(tmp: Path) -> dict[str, Any]:
    """A valid config (as parsed TOML) with every table and every job kind."""
    borgmatic = tmp / "borgmatic.yaml"
    borgmatic.write_text("repositories:\n  - path: /backup/borg\n"
                         "source_directories:\n  - /backup/holding\n")
    return {
        "paths": {"state": f"{tmp}/state", "run": f"{tmp}/run", "log": f"{tmp}/log",
                  "keys": f"{tmp}/keys"},
        "storage": {"root": "/backup", "holding": "/backup/holding",
                    "device": "UUID=0d6c1b7e-9f7d-4a55"},
        "repos": {"main": {"path": "/backup/borg", "passphrase_file": f"{tmp}/keys/borg.pass",
                           "base_dir": f"{tmp}/borg-base"}},
        "hosts": {"luv": {"address": "luv.example.org", "paths": ["/etc", "/home"],
                          "rrsync_root": "/", "exclude": ["*/.cache"]}},
        "drives": {"ext-a": {"luks_uuid": "2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11",
                             "mountpoint": "/mnt/ext-a"}},
        "jobs": {
            "pull": {"kind": "pull", "host": "luv", "schedule": "*-*-* 06:00"},
            "nightly": {"kind": "archive", "repo": "main", "sources": ["/backup/holding"],
                        "keep": {"daily": 7}, "schedule": "*-*-* 03:00",
                        "randomized_delay": "10m", "description": "archive everything"},
            "check": {"kind": "check", "repo": "main", "schedule": "Sun *-*-* 07:00"},
            "drill": {"kind": "drill", "repo": "main"},
            "offsite": {"kind": "drive-sync", "repo": "main", "drives": ["ext-a"]},
            "cloud": {"kind": "cloud-sync", "repo": "main", "remote": "b2:bucket/phobos",
                      "rclone_config": f"{tmp}/keys/rclone.conf"},
            "bm": {"kind": "borgmatic", "configs": [str(borgmatic)]},
            "tidy": {"kind": "command", "argv": ["/usr/local/bin/tidy"],
                     "writes": ["storage"], "env": {"A": "b"},
                     "secret_env": {"TOKEN": "s3cr3t-t0ken-value"}},
        },
        "notify": {"led": {"driver": "file", "path": f"{tmp}/led"},
                   "email": {"to": ["root"]},
                   "apprise": {"urls": ["json://127.0.0.1:9/hook-token-abcdef"]},
                   "ping": {"url": "https://hc-ping.com/ping-key-123456789"}},
        "systemd": {"sandbox": {"tidy": {"network": True,
                                         "read_write_paths": ["/srv/tidy"]}}},
        "web": {"listen": "127.0.0.1:8470", "token_file": f"{tmp}/keys/web.token"},
    }


def _table_type(hint: Any) -> tuple[type[Any] | None, bool]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (dict, Mapping) and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return typing.cast(type[Any], args[1]), True
    candidate = args[0] if origin in (typing.Union, types.UnionType) and args else hint
    if dataclasses.is_dataclass(candidate):
        return typing.cast(type[Any], candidate), False
    return None, False


# Which entry of a keyed table (repos.NAME ...) and which job the walk fills in.
_ENTRY = {"repos": "main", "hosts": "luv", "drives": "ext-a", "sandbox": "tidy"}
_KIND_JOB = {JobKind.PULL: "pull", JobKind.ARCHIVE: "nightly", JobKind.CHECK: "check",
             JobKind.DRILL: "drill", JobKind.DRIVE_SYNC: "offsite", JobKind.CLOUD_SYNC: "cloud",
             JobKind.BORGMATIC: "bm", JobKind.COMMAND: "tidy"}


def _leaves(cls: type[Any], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        if not fld.init:
            continue
        inner, keyed = _table_type(hints[fld.name])
        if inner is None:
            yield (*prefix, fld.name), hints[fld.name]
        else:
            entry = (_ENTRY[fld.name],) if keyed else ()
            yield from _leaves(inner, (*prefix, fld.name, *entry))


def every_key() -> list[tuple[tuple[str, ...], Any]]:
    """Every leaf setting of the schema as (key path, type hint): the top-level tables and
    each job kind's table (the job of that kind in :func:`base_raw`)."""
    from phobos.jobs import KIND_MODULES, kind_module

    keys = list(_leaves(TopLevel, ()))
    for kind in KIND_MODULES:
        keys += list(_leaves(kind_module(kind).CONFIG, ("jobs", _KIND_JOB[kind])))
    return keys


def hostile_values(hint: Any) -> list[Any]:
    """Values for a setting of type ``hint`` meant to break out of wherever they go."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return hostile_values(args[0])
    if origin in (list, tuple):
        return [[v] for v in hostile_values(args[0])] + [HOSTILE_TEXT[0]]
    if origin in (dict, Mapping):
        return ([{"k": v} for v in hostile_values(args[1])]
                + [{"bad\nkey": "v"}, {"A=B": "v"}, {"": "v"}])
    if hint is Path:
        return list(HOSTILE_PATHS)
    if hint in (int, float, Duration):
        return [*HOSTILE_NUMBERS, *(["1e999", "nan s", "-5m"] if hint is Duration else [])]
    if hint is bool:
        return ["yes", 1]
    return list(HOSTILE_TEXT)


def with_value(raw: dict[str, Any], key: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``raw`` with ``key`` set to ``value`` (tables on the way made tables)."""
    changed = copy.deepcopy(raw)
    table = changed
    for name in key[:-1]:
        if not isinstance(table.get(name), dict):
            table[name] = {}
        table = table[name]
    table[key[-1]] = value
    return changed


def without(raw: dict[str, Any], key: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``raw`` without ``key`` (unchanged if it is not there)."""
    changed = copy.deepcopy(raw)
    table: Any = changed
    for name in key[:-1]:
        table = table.get(name) if isinstance(table, dict) else None
    if isinstance(table, dict):
        table.pop(key[-1], None)
    return changed


LINE = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9]*)=(?P<value>.*)$")
SECTION = re.compile(r"^\[(Unit|Service|Timer|Install)\]$")
COMMENTS = ("# Generated by phobos from ", "# Change the config and run",
            "# Alternative drive trigger", "# drive's service when the block device")
UDEV_RULE = re.compile(r'^ACTION!="remove", SUBSYSTEM=="block", ENV\{ID_FS_TYPE\}=="crypto_LUKS", '
                       r'ENV\{ID_FS_UUID\}=="[0-9A-Fa-f-]+", TAG\+="systemd", '
                       r'ENV\{SYSTEMD_WANTS\}\+="phobos-drive-[A-Za-z0-9._-]+\.service"$')


def foreign_lines(files: Mapping[str, str], template_keys: set[str]) -> list[str]:
    """Lines of rendered ``files`` that phobos's templates cannot have written: an unknown
    key, a key from a hostile value, a line continued into the next, a stray control
    character, anything in a udev rules file but the rule's own form."""
    found = []
    for name, text in files.items():
        if any(c in text for c in "\r\x00\x0b\x0c"):
            found.append(f"{name}: a carriage return or NUL")
        for line in text.split("\n"):
            if line.endswith("\\"):
                found.append(f"{name}: continued line {line!r}")
            if name.endswith(".rules"):
                if line and not line.startswith("# ") and not UDEV_RULE.match(line):
                    found.append(f"{name}: {line!r}")
                continue
            if not line or SECTION.match(line) or line.startswith(COMMENTS):
                continue
            match = LINE.match(line)
            if match is None or match.group("key") not in template_keys \
                    or MARK in match.group("value").split("=", 1)[0]:
                found.append(f"{name}: {line!r}")
    return found


def template_keys(files: Mapping[str, str] | None = None) -> set[str]:
    """Every key phobos's unit templates can write, read from their source
    (``systemd/units.py`` and ``systemd/sandbox.py``: ``"Key=`` in a string, and the
    ``*Directory`` keys of the managed directories), plus those in ``files``."""
    import inspect

    from phobos.systemd import sandbox, units

    keys: set[str] = set()
    for module in (units, sandbox):
        source = inspect.getsource(module)
        keys |= {k for k in re.findall(r"[\"'(]([A-Z][A-Za-z]+)=", source)
                 if any(c.islower() for c in k)}  # not UUID=, LABEL= (device tags)
        keys |= set(re.findall(r"\(\"([A-Z][A-Za-z]+Directory)\"", source))
    return keys | {m.group("key") for text in (files or {}).values()
                   for line in text.split("\n") if (m := LINE.match(line))}


def unquote(words: str, *, c_escapes: bool) -> list[str]:
    """Split a systemd value into words as systemd does (extract_first_word with
    EXTRACT_UNQUOTE, and EXTRACT_CUNESCAPE for command lines): quotes group, a backslash
    takes the next character literally (only \\\\ and \\" are ever written)."""
    out: list[str] = []
    word: list[str] | None = None
    quote = None
    chars = iter(words)
    for char in chars:
        if quote is None and char in " \t":
            if word is not None:
                out.append("".join(word))
                word = None
            continue
        word = word if word is not None else []
        if char == "\\":
            nxt = next(chars)
            assert not c_escapes or nxt in "\\\"'", f"unexpected escape \\{nxt}"
            word.append(nxt)
        elif char in "\"'" and quote is None:
            quote = char
        elif char == quote:
            quote = None
        else:
            word.append(char)
    if word is not None:
        out.append("".join(word))
    return out


def specifiers_undone(text: str, *, dollars: bool = False) -> str:
    text = text.replace("%%", "%")
    return text.replace("$$", "$") if dollars else text


def toml_dumps(data: Mapping[str, Any]) -> str:
    """``data`` as a TOML document: one ``key = value`` line per top-level key, tables
    inline (the loader reads any TOML; line numbers do not matter here)."""
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in data.items())


def _toml_key(key: str) -> str:
    return _toml_string(key)


def _toml_string(text: str) -> str:
    # JSON's escapes of control characters are TOML's; the rest stays as it is (JSON
    # would write characters beyond U+FFFF as surrogate pairs, which TOML refuses), but
    # DEL, which TOML wants escaped.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if value != value else ("inf" if value > 0 else "-inf") \
            if value in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")
