"""A whole validated configuration (:class:`Config`) and the schema of the file's top level
(:class:`TopLevel`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from phobos.config.job import JobBase
from phobos.config.schema import setting, suggest
from phobos.config.tables import (
    DriveConfig,
    HostConfig,
    NotifyConfig,
    PathsConfig,
    RepoConfig,
    StorageConfig,
    SystemdConfig,
    WebConfig,
)
from phobos.errors import UsageError


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """A validated configuration file (see :func:`phobos.config.load.load`)."""

    source: Path
    paths: PathsConfig
    storage: StorageConfig
    repos: Mapping[str, RepoConfig]
    hosts: Mapping[str, HostConfig]
    drives: Mapping[str, DriveConfig]
    jobs: Mapping[str, JobBase]
    notify: NotifyConfig
    systemd: SystemdConfig = setting(factory=SystemdConfig, doc="systemd units.")
    web: WebConfig | None = setting(None, doc="The read-only web dashboard.")

    def job(self, name: str) -> JobBase:
        if name not in self.jobs:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise UsageError(f"no job named {name!r}{suggest(name, self.jobs)}",
                             f"jobs in {self.source}: {known}")
        return self.jobs[name]


@dataclass(frozen=True, slots=True, kw_only=True)
class TopLevel:
    """The top-level tables a config file may have besides [jobs] (the schema of the file)."""

    paths: PathsConfig = setting(factory=PathsConfig, doc="Where phobos keeps its own files.")
    storage: StorageConfig = setting(factory=StorageConfig, doc="The backup storage.")
    repos: dict[str, RepoConfig] = setting(factory=dict, doc="Borg repositories.")
    hosts: dict[str, HostConfig] = setting(factory=dict, doc="Remote hosts to pull.")
    drives: dict[str, DriveConfig] = setting(factory=dict, doc="Off-site LUKS drives.")
    notify: NotifyConfig = setting(factory=NotifyConfig, doc="LED and e-mail.")
    systemd: SystemdConfig = setting(factory=SystemdConfig, doc="systemd units "
                                     "(`phobos systemd install`).")
    web: WebConfig | None = setting(None, doc="The read-only web dashboard (`phobos web`; "
                                    "with this table `phobos systemd` also renders "
                                    "phobos-web.service).")
