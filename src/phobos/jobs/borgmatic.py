"""The ``borgmatic`` kind: run existing borgmatic configs under phobos.

A user adopts phobos without rewriting configs: the job runs ``borgmatic -c FILE ...
ACTIONS`` (default ``prune create``, the form borgmatic >= 1.7 takes), and phobos adds
locking, history, notification and the schedule view.

Resources come from the configs themselves: every repository they name
(``repositories:``, or the older ``location: repositories:``) is locked exclusively:
``repo:<name>`` when its path is a phobos repository's, else ``repo-path:<path>``.
Their ``source_directories`` take shared ``holding:<host>`` and ``storage`` locks like
an archive job's sources. A config directory (``/etc/borgmatic.d``) means its
``*.yaml``/``*.yml`` files, as borgmatic reads them. ``!include`` is followed;
other tags are read as plain values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phobos.config.job import JobBase
from phobos.config.model import Config
from phobos.config.schema import Problems, setting
from phobos.core.locks import Resource
from phobos.core.runner import RunContext
from phobos.core.step import Step
from phobos.errors import ConfigError
from phobos.repos.resources import repo_resources, source_resources
from phobos.tools import borg as borgtool


def _nonempty(values: tuple[Any, ...]) -> str | None:
    return None if values else "must not be empty"


@dataclass(frozen=True, slots=True, kw_only=True)
class BorgmaticJob(JobBase):
    configs: tuple[Path, ...] = setting(check=_nonempty, doc="borgmatic config files or "
                                        "directories (each passed with -c).")
    actions: tuple[str, ...] = setting(("prune", "create"), check=_nonempty,
                                       doc="borgmatic actions, in borgmatic's order.")
    options: tuple[str, ...] = setting((), doc="More borgmatic options, e.g. "
                                       "`[\"--stats\", \"--verbosity\", \"1\"]`.")
    program: str = setting("borgmatic", doc="The borgmatic program (looked up on PATH).")

    def resources(self, config: Config) -> tuple[Resource, ...]:
        try:
            found = scan(self.configs)
        except ConfigError:
            found = Scan()  # check_refs reported it; a run fails in borgmatic itself
        return tuple(resources_for(config, found))

    def check_refs(self, config: Config, path: tuple[str, ...], problems: Problems) -> None:
        try:
            found = scan(self.configs)
        except ConfigError as exc:
            problems.add((*path, "configs"), exc.message)
            return
        if not found.repositories:
            problems.add((*path, "configs"), "the borgmatic configs name no repositories")


CONFIG = BorgmaticJob


# --- reading borgmatic configs ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scan:
    """What a set of borgmatic configs names."""

    repositories: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()


def config_files(paths: tuple[Path, ...]) -> Iterator[Path]:
    """The files borgmatic reads for ``-c PATH...``: files, or a directory's YAML files.
    Raises ConfigError for a directory that cannot be listed."""
    for path in paths:
        try:
            if not path.is_dir():
                yield path
                continue
            found = sorted(p for p in path.iterdir()
                           if p.suffix in (".yaml", ".yml") and p.is_file())
        except OSError as exc:
            raise ConfigError(f"cannot read borgmatic configs in {path}: "
                              f"{exc.strerror or exc}") from None
        yield from found


def _loader(base: Path) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):
        def flatten_mapping(self, node: yaml.MappingNode) -> None:
            # "<<: !include FILE" merges the file's mapping: swap in its node first.
            for index, (key, value) in enumerate(node.value):
                if key.tag == "tag:yaml.org,2002:merge" and value.tag == "!include":
                    node.value[index] = (key, _include_node(base, str(value.value), Loader))
            super().flatten_mapping(node)

    def include(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        target = Path(str(loader.construct_scalar(node)))  # type: ignore[arg-type]
        return load_yaml(target if target.is_absolute() else base / target)

    def plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_scalar(node)  # type: ignore[arg-type]

    Loader.add_constructor("!include", include)
    Loader.add_multi_constructor("!", plain)
    return Loader


def _include_node(base: Path, target: str, loader: Any) -> Any:
    import yaml

    path = Path(target) if Path(target).is_absolute() else base / target
    try:
        return yaml.compose(path.read_text(encoding="utf-8"), Loader=loader)
    except OSError as exc:
        raise ConfigError(f"cannot read included borgmatic config {path}: "
                          f"{exc.strerror or exc}") from None


def load_yaml(path: Path) -> Any:
    """One borgmatic YAML file as plain data. Raises ConfigError naming the file."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read borgmatic config {path}: {exc.strerror or exc}"
                          ) from None
    try:
        return yaml.load(text, Loader=_loader(path.parent))
    except yaml.YAMLError as exc:
        raise ConfigError(f"borgmatic config {path} is not valid YAML: {exc}") from None


def _repository_paths(data: dict[str, Any]) -> list[str]:
    entries = data.get("repositories")
    if entries is None and isinstance(data.get("location"), dict):
        entries = data["location"].get("repositories")  # borgmatic < 1.8 layout
    paths = []
    for entry in entries or []:
        path = entry.get("path") if isinstance(entry, dict) else entry
        if isinstance(path, str) and path:
            paths.append(path)
    return paths


def _source_paths(data: dict[str, Any]) -> list[str]:
    sources = data.get("source_directories")
    if sources is None and isinstance(data.get("location"), dict):
        sources = data["location"].get("source_directories")
    return [s for s in sources or [] if isinstance(s, str)]


def scan(paths: tuple[Path, ...]) -> Scan:
    """Repositories and sources named by the configs. Raises ConfigError."""
    repositories: list[str] = []
    sources: list[str] = []
    for path in config_files(paths):
        data = load_yaml(path)
        if not isinstance(data, dict):
            raise ConfigError(f"borgmatic config {path} is not a YAML mapping")
        repositories += [r for r in _repository_paths(data) if r not in repositories]
        sources += [s for s in _source_paths(data) if s not in sources]
    return Scan(tuple(repositories), tuple(sources))


def _local_path(location: str) -> Path | None:
    text = location.removeprefix("file://")
    return Path(text).resolve() if text.startswith("/") else None


def resources_for(config: Config, found: Scan) -> list[Resource]:
    """Locks for the repositories and sources the configs name."""
    by_path = {repo.path.resolve(): name for name, repo in config.repos.items()
               if repo.path is not None}
    by_url = {repo.url: name for name, repo in config.repos.items() if repo.url is not None}
    resources: list[Resource] = []
    for location in found.repositories:
        local = _local_path(location)
        name = by_path.get(local) if local is not None else by_url.get(location)
        if name is not None:
            resources += repo_resources(config, name, write=True)
        else:
            resources.append(Resource(f"repo-path:{local or location}", write=True))
    sources = [Path(s) for s in found.sources if s.startswith("/")]
    return resources + source_resources(config, sources)


# --- planning and execution --------------------------------------------------------------


def plan(job: BorgmaticJob) -> Step:
    argv = [job.program]
    for path in job.configs:
        argv += ["-c", str(path)]
    # The host id reaches the Borg that borgmatic runs (see borgtool.base_env).
    return Step(name="borgmatic", argv=(*argv, *job.options, *job.actions),
                env=borgtool.base_env())


def execute(ctx: RunContext) -> None:
    job = ctx.job
    assert isinstance(job, BorgmaticJob)
    found = scan(job.configs)
    ctx.stats["repositories"] = list(found.repositories)
    ctx.run(plan(job))
