"""Records of Borg key exports: which repository's key `phobos repo key-export` wrote,
where and when (``key-exports.json`` in the state directory). Only the fact and the path
are stored, never the key. The doctor reads them to warn about keys never exported."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from phobos.config.model import Config

KEY_EXPORTS = "key-exports.json"


def _exports_path(config: Config) -> Path:
    return config.paths.state / KEY_EXPORTS


def recorded_key_exports(config: Config) -> dict[str, Any]:
    """What :func:`record_key_export` recorded: repo name -> {"at", "path", "paper"};
    empty when nothing (readable) was recorded."""
    try:
        data = json.loads(_exports_path(config).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_key_export(config: Config, repo: str, target: Path, *, paper: bool) -> None:
    """Remember that ``repo``'s key was exported to ``target`` (written atomically:
    a reader sees the old records or the new ones)."""
    data = recorded_key_exports(config)
    data[repo] = {"at": time.time(), "path": str(target), "paper": paper}
    path = _exports_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
