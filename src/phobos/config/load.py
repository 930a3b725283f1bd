"""Loading the configuration: one TOML file into a validated :class:`Config`.

Every problem of the file is reported together in one :class:`~phobos.errors.ConfigError`
naming the file, the key path and the line. Job tables are built by their kind's config
class (see :mod:`phobos.jobs`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from phobos.config.checks import after_problems, name_problem
from phobos.config.job import JobBase
from phobos.config.layout import layout_problems
from phobos.config.model import Config, TopLevel
from phobos.config.schema import Problems, build, line_of, locate_keys
from phobos.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/phobos/phobos.toml")
CONFIG_ENV = "PHOBOS_CONFIG"


def config_path(explicit: str | None) -> Path:
    """The config file: ``-c`` wins, then $PHOBOS_CONFIG, then the default."""
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load(path: Path) -> Config:
    """Read, parse and validate ``path``. Raises ConfigError listing every problem."""
    source = _read(path)
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}",
                          hint="fix the syntax; `phobos config check` re-reads the file"
                          ) from None
    return parse(raw, path, source)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found",
                          hint=f"create it, or point -c/--config or ${CONFIG_ENV} at one; "
                          "`phobos demo` writes a complete example") from None
    except (PermissionError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None


def parse(raw: dict[str, Any], path: Path, source: str = "") -> Config:
    """Validate an already-parsed TOML document (``source`` gives line numbers)."""
    problems = Problems()
    top = build(TopLevel, raw, (), problems, extra_keys=("jobs",))
    jobs = _build_jobs(raw.get("jobs", {}), problems)
    if top is not None:
        for table in ("repos", "hosts", "drives"):
            _check_names(getattr(top, table), table, problems)
        for name, repo in top.repos.items():
            for sub, message in repo.table_problems():
                problems.add(("repos", name, *sub), message)
    config = None
    if top is not None:
        config = Config(source=path, paths=top.paths, storage=top.storage,
                        repos=MappingProxyType(dict(top.repos)),
                        hosts=MappingProxyType(dict(top.hosts)),
                        drives=MappingProxyType(dict(top.drives)),
                        jobs=MappingProxyType(jobs), notify=top.notify,
                        systemd=top.systemd, web=top.web)
        for name, job in jobs.items():
            job.check_refs(config, ("jobs", name), problems)
        layout_problems(config, problems)
    raw_jobs = raw.get("jobs", {})
    after_problems({name: job.after for name, job in jobs.items()},
                   raw_jobs if isinstance(raw_jobs, dict) else {}, problems)
    if problems or config is None:
        raise _config_error(path, source, problems)
    return config


def _build_jobs(raw: Any, problems: Problems) -> dict[str, JobBase]:
    """The jobs that built; problems of the others are recorded."""
    from phobos.jobs import job_config_class

    if not isinstance(raw, dict):
        problems.add(("jobs",), "expected a table of jobs, like [jobs.nightly]")
        return {}
    jobs: dict[str, JobBase] = {}
    for name, table in raw.items():
        path = ("jobs", name)
        if message := name_problem(name):
            problems.add(path, message)
        kind = table.get("kind") if isinstance(table, dict) else None
        cls = job_config_class(kind, (*path, "kind"), problems)
        if cls is None:
            continue
        job = build(cls, table, path, problems)
        if job is not None:
            jobs[name] = job
    return jobs


def _check_names(table: Mapping[str, Any], name: str, problems: Problems) -> None:
    for key in table:
        if message := name_problem(key):
            problems.add((name, key), message)


def _config_error(path: Path, source: str, problems: Problems) -> ConfigError:
    lines = locate_keys(source)
    located = sorted(((line_of(p.path, lines) or 0, i, p) for i, p in enumerate(problems.items)),
                     key=lambda item: item[:2])
    rendered = []
    for line, _, problem in located:
        where = f"{path}:{line}" if line else str(path)
        rendered.append(f"{where}: {problem.dotted}: {problem.message}")
    count = len(rendered)
    return ConfigError(f"{path}: {count} problem{'s' if count != 1 else ''} in the config",
                       rendered, hint="fix them and run `phobos config check`")
