"""Cross-table checks of a whole config, run by the loader once every table has built.

Where the tables put things must not lose data or carry secrets away. Refused
(:func:`layout_problems`, each with the reason):

- phobos's directories, the storage or a repository at ``/`` or a top-level system
  directory (``/etc``, ``/var`` ...);
- the holding area equal to, inside or around a repository (pulls write and prune there);
- a repository equal to (or around) the storage root, or two repositories in one place;
- ``[paths] state``/``keys`` and every secret file (passphrase files, keyfiles, the SMTP
  password, the web token: :mod:`phobos.config.secrets`) inside the holding area or
  inside an archive job's source that does not exclude them: they would be archived and
  carried off-site on a drive;
- ``[paths] run`` overlapping the holding area (locks and the backup namespace among
  pulled files);
- a drive mountpoint that is ``/`` or in a system directory, that is or holds the
  storage root or phobos's own directories, or that is in, on or above a repository,
  the holding area or an archive source; two drives with one mountpoint or one UUID;
- the LED's state file in a system directory, a repository or the holding area.

Legal but risky (:func:`layout_warnings`, printed by ``phobos config check`` and
``phobos doctor``; ``phobos run`` stays quiet about them, as a timer's log is no place
for advice): the state directory on a tmpfs (history lost at every boot), and with
``[storage] device`` a holding area or repository outside the hidden storage root.

Also references between tables that no single table can check: ``[systemd.sandbox.JOB]``
and ``[notify.ping] jobs`` must name jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from phobos.config.model import Config
from phobos.config.schema import Problems, suggest

Where = tuple[str, ...]

SYSTEM_DIRS = tuple(Path(p) for p in (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
    "/sbin", "/sys", "/usr", "/var/lib/dpkg", "/var/lib/apt", "/var/lib/systemd"))
TMPFS_DIRS = (Path("/run"), Path("/tmp"), Path("/dev/shm"))
# Borg pattern styles whose pattern is a path (prefix or shell-style); see `borg help
# patterns`. Regular expressions (re:) are not interpreted here.
_PATH_STYLES = ("fm:", "sh:", "pp:", "pf:")


def inside(path: Path, area: Path) -> bool:
    """``path`` is ``area`` or below it."""
    return path == area or area in path.parents


def overlap(a: Path, b: Path) -> bool:
    """One of ``a`` and ``b`` is the other or below it."""
    return inside(a, b) or inside(b, a)


# Directories of the system itself: none may be phobos's storage or own directory.
TOP_DIRS = tuple(Path(p) for p in (
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp",
    "/usr", "/var", "/var/lib", "/var/log", "/var/cache", "/var/tmp"))


def layout_problems(config: Config, problems: Problems) -> None:
    """Record every layout that loses data or carries secrets off-site (module docstring)."""
    for check in (_own_dirs, _holding_and_repos, _private_files, _run_dir, _drives, _led,
                  _job_refs):
        for where, message in check(config):
            problems.add(where, message)


def layout_warnings(config: Config) -> list[str]:
    """Layouts that work but are risky, one sentence each (module docstring)."""
    warnings = []
    state = config.paths.state
    if any(inside(state, tmp) for tmp in TMPFS_DIRS):
        warnings.append(f"paths.state: {state} is usually a tmpfs: the run history, the "
                        "LED's latched state and the drive rotation are lost at every boot")
    storage = config.storage
    if storage.device is not None:
        hidden = [("storage.holding", storage.holding),
                  *((f"repos.{n}.path", path) for n, path in local_repos(config))]
        for key, path in hidden:
            if not inside(path, storage.root):
                warnings.append(f"{key}: {path} is outside storage.root {storage.root}: it "
                                f"is not on {storage.device}, which only the backup "
                                "namespace shows")
    return warnings


def _own_dirs(config: Config) -> Iterator[tuple[Where, str]]:
    own: list[tuple[Where, Path]] = [(("paths", key), getattr(config.paths, key))
                                      for key in ("state", "run", "log", "keys")]
    own += [(("storage", key), getattr(config.storage, key)) for key in ("root", "holding")]
    own += [(("repos", n, "path"), path) for n, path in local_repos(config)]
    for where, path in own:
        if path in TOP_DIRS:
            yield where, (f"{path} is a directory of the system itself: phobos needs one of "
                          "its own below it, e.g. /var/lib/phobos or /srv/backup")


def _holding_and_repos(config: Config) -> Iterator[tuple[Where, str]]:
    holding, root = config.storage.holding, config.storage.root
    seen: dict[Path, str] = {}
    for name, path in local_repos(config):
        where = ("repos", name, "path")
        if overlap(holding, path):
            yield where, (f"{path} and the holding area {holding} overlap: pulls write "
                          "and delete in the holding area, Borg alone may write in a "
                          "repository; put them side by side")
        if inside(root, path):
            yield where, (f"{path} is the storage root {root} (or holds it): the "
                          "holding area and other repositories would be inside it; use a "
                          f"folder such as {root / 'borg'}")
        for other_path, other in seen.items():
            if overlap(path, other_path):
                yield where, (f"{path} and repository {other}'s {other_path} overlap: "
                              "two repositories cannot share a directory")
        seen[path] = name


def local_repos(config: Config) -> list[tuple[str, Path]]:
    """(name, path) of the repositories on this machine (a server's have no path)."""
    return [(n, r.path) for n, r in sorted(config.repos.items()) if r.path is not None]


def _private_files(config: Config) -> Iterator[tuple[Where, str]]:
    """phobos's state and keys and every secret file stay out of backups."""
    from phobos.config.secrets import secret_files

    private = [("phobos's state (history with every run's log)", config.paths.state),
               ("the keys directory", config.paths.keys),
               *((s.label, s.path) for s in secret_files(config))]
    holding = config.storage.holding
    for what, path in _outermost(p for p in private if inside(p[1], holding)):
        yield ("storage", "holding"), (
            f"{what} {path} is inside the holding area {holding}: it would be archived and "
            "carried off-site on a drive; keep it outside the storage")
    for job_name, source, excluded in _archived(config):
        caught = (p for p in private if inside(p[1], source) and not _excluded(p[1], excluded))
        for what, path in _outermost(caught):
            yield ("jobs", job_name, "sources"), (
                f"{what} {path} is inside the source {source}: it would be archived and "
                f"carried off-site on a drive; add \"{path}\" to the job's `exclude` or keep "
                "it elsewhere")


def _outermost(items: Iterable[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """``items`` without those inside another one's path (one message per place)."""
    found = list(items)
    return [(what, path) for what, path in found
            if not any(other != path and inside(path, other) for _, other in found)]


def _archived(config: Config) -> Iterator[tuple[str, Path, tuple[str, ...]]]:
    for name, job in sorted(config.jobs.items()):
        sources, excluded = job.archived_paths()
        for source in sources:
            yield name, source, excluded


def _excluded(path: Path, patterns: Iterable[str]) -> bool:
    """Whether one of Borg's exclude ``patterns`` leaves out ``path`` (or a folder
    holding it): path-like patterns only, compared without their leading ``/``."""
    for pattern in patterns:
        style = next((s for s in _PATH_STYLES if pattern.startswith(s)), "")
        text = pattern.removeprefix(style)
        for suffix in ("/**", "/*", "/"):
            text = text.removesuffix(suffix)
        if text and not any(c in text for c in "*?[") and inside(
                path, Path("/") / text.lstrip("/")):
            return True
    return False


def _run_dir(config: Config) -> Iterator[tuple[Where, str]]:
    run, holding = config.paths.run, config.storage.holding
    if overlap(run, holding):
        yield ("paths", "run"), (f"{run} and the holding area {holding} overlap: locks and "
                                 "the backup namespace would sit among pulled files")


def _system(path: Path) -> bool:
    return path == Path("/") or any(inside(path, system) for system in SYSTEM_DIRS)


def _drives(config: Config) -> Iterator[tuple[Where, str]]:
    taken: dict[Path, str] = {}
    uuids: dict[str, str] = {}
    for name, drive in sorted(config.drives.items()):
        mountpoint = drive.mountpoint or config.paths.run / "drives" / name
        where = ("drives", name, "mountpoint")
        if _system(mountpoint):
            yield where, (f"{mountpoint} is a system directory: mounting the drive there "
                          "would hide it; use a directory of its own, e.g. /mnt/" + name)
        for what, area in _hidden_by_mounts(config):
            if inside(area, mountpoint):
                yield where, (f"{mountpoint} is or holds {what} {area}: the mounted drive "
                              "would hide it")
        for what, area in _data_areas(config):
            if overlap(mountpoint, area):
                yield where, (f"{mountpoint} overlaps {what} {area}: the drive would hide "
                              "it, be written by it or be archived with it")
        if mountpoint in taken:
            yield where, f"{mountpoint} is also drive {taken[mountpoint]}'s mountpoint"
        taken[mountpoint] = name
        uuid = drive.luks_uuid.lower()
        if uuid in uuids:
            yield ("drives", name, "luks_uuid"), (f"drive {uuids[uuid]} has the same UUID: "
                                                  "each drive needs its own")
        uuids[uuid] = name


def _hidden_by_mounts(config: Config) -> list[tuple[str, Path]]:
    """Directories a drive mounted on them (or on a folder above) would hide."""
    return [("the storage root", config.storage.root),
            ("the state directory", config.paths.state),
            ("the keys directory", config.paths.keys),
            ("the run directory", config.paths.run)]


def _data_areas(config: Config) -> list[tuple[str, Path]]:
    """Where backups live or come from: no drive may be mounted on, in or above them."""
    areas = [("the holding area", config.storage.holding),
             *((f"repository {n}", path) for n, path in local_repos(config))]
    return areas + [(f"job {job}'s source", source) for job, source, _ in _archived(config)]


def _led(config: Config) -> Iterator[tuple[Where, str]]:
    led = config.notify.led
    if led.driver != "file" or led.path is None:
        return
    where = ("notify", "led", "path")
    if _system(led.path) or led.path == config.source:
        yield where, (f"{led.path} is a system file: the LED driver overwrites it with "
                      "one word; use e.g. /run/phobos/led")
    for what, area in [("the holding area", config.storage.holding),
                       *((f"repository {n}", path) for n, path in local_repos(config))]:
        if inside(led.path, area):
            yield where, f"{led.path} is inside {what} {area}"


def _job_refs(config: Config) -> Iterator[tuple[Where, str]]:
    for name in config.systemd.sandbox:
        if name not in config.jobs:
            yield ("systemd", "sandbox", name), (f"no job named {name!r}"
                                                 + suggest(name, config.jobs))
    ping = config.notify.ping
    for name in ping.jobs if ping is not None else ():
        if name not in config.jobs:
            yield ("notify", "ping", "jobs", name), (f"no job named {name!r}"
                                                     + suggest(name, config.jobs))
