"""Doctor check area ``tools``: the external programs phobos runs are on the PATH its
children get, run, and are new enough. A missing one is an error only when the config
needs it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from phobos.config.model import Config
from phobos.core import proc
from phobos.core.model import JobKind
from phobos.doctor.findings import Finding, error, ok, warning
from phobos.doctor.namespace import uses_namespace
from phobos.errors import PhobosError

VERSION_TIMEOUT = 30.0
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")

Needs = Callable[[Config], bool]


def _kinds(config: Config) -> set[JobKind]:
    return {job.kind for job in config.jobs.values()}


def _needs_borg(config: Config) -> bool:
    borg_kinds = {JobKind.ARCHIVE, JobKind.CHECK, JobKind.DRILL, JobKind.DRIVE_SYNC}
    return bool(config.repos) or bool(_kinds(config) & borg_kinds)


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """An external program: how to ask its version, the oldest phobos accepts, the
    Debian package that has it, and whether a config needs it."""

    name: str
    purpose: str
    package: str
    minimum: tuple[int, int, int] | None = None
    needed: Needs = field(default=lambda config: True)

    def version_argv(self, path: str) -> tuple[str, ...]:
        return (path, "-V") if self.name == "ssh" else (path, "--version")


TOOLS = (
    Tool(name="rsync", purpose="pulls and drive syncs", package="rsync", minimum=(3, 1, 0),
         needed=lambda c: bool(_kinds(c) & {JobKind.PULL, JobKind.DRIVE_SYNC})),
    Tool(name="ssh", purpose="pulling remote hosts and reaching repositories over SSH",
         package="openssh-client",
         needed=lambda c: bool(c.hosts) or any(r.url for r in c.repos.values())),
    Tool(name="rclone", purpose="cloud copies (cloud-sync jobs)", package="rclone",
         minimum=(1, 53, 0), needed=lambda c: JobKind.CLOUD_SYNC in _kinds(c)),
    Tool(name="cryptsetup", purpose="unlocking LUKS drives", package="cryptsetup-bin",
         minimum=(2, 0, 0), needed=lambda c: any(d.unlock == "luks"
                                                 for d in c.drives.values())),
    Tool(name="mount", purpose="mounting drives and the storage", package="mount",
         needed=uses_namespace),
    Tool(name="umount", purpose="releasing drives", package="mount", needed=uses_namespace),
    Tool(name="unshare", purpose="creating the backup mount namespace",
         package="util-linux", needed=uses_namespace),
    Tool(name="nsenter", purpose="entering the backup mount namespace by hand",
         package="util-linux", needed=uses_namespace),
    Tool(name="borgmatic", purpose="borgmatic jobs", package="borgmatic",
         needed=lambda c: JobKind.BORGMATIC in _kinds(c)),
)


def search_path() -> str:
    """The PATH phobos gives its children (what jobs will find)."""
    return proc.child_env()["PATH"]


def parse_version(text: str) -> tuple[int, int, int] | None:
    """The first ``X.Y[.Z]`` in ``text`` (Z defaults to 0), or None."""
    match = _VERSION.search(text)
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def _text(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def tool_version(argv: Sequence[str]) -> tuple[tuple[int, int, int] | None, str]:
    """(version, first output line) of ``argv``; ssh prints its version on stderr."""
    result = proc.run(argv, capture=True, check=False, timeout=VERSION_TIMEOUT)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    lines += [line.removeprefix("stderr: ") for line in result.tail]
    first = lines[0].strip() if lines else ""
    return parse_version(first), first


def tool_findings(config: Config | None) -> list[Finding]:
    """Each tool: found on PATH, its version, new enough. A missing tool is an error when
    the config needs it (or no config could be read), else a warning."""
    findings = [_borg_finding(config)]
    for tool in TOOLS:
        needed = config is None or tool.needed(config)
        if tool.name == "borgmatic" and not needed:
            continue
        findings.append(_tool_finding(tool, needed))
    return findings


def _tool_finding(tool: Tool, needed: bool) -> Finding:
    path = shutil.which(tool.name, path=search_path())
    if path is None:
        make = error if needed else warning
        why = f"needed for {tool.purpose}" if needed else f"needed once you use {tool.purpose}"
        return make("tools", tool.name, f"not found on PATH ({why})",
                    f"apt install {tool.package}")
    try:
        version, line = tool_version(tool.version_argv(path))
    except PhobosError as exc:
        return error("tools", tool.name, f"{path} does not run: {exc.message}", exc.hint)
    if version is None:
        return warning("tools", tool.name, f"{path}: cannot read its version "
                       f"({line or 'no output'})", f"check that `{path} --version` works")
    if tool.minimum is not None and version < tool.minimum:
        return error("tools", tool.name, f"{path} is version {_text(version)}; phobos needs "
                     f"{_text(tool.minimum)} or later", f"upgrade {tool.package}")
    return ok("tools", tool.name, f"{_text(version)} at {path}")


def _borg_finding(config: Config | None) -> Finding:
    from phobos.tools import borg

    needed = config is None or _needs_borg(config)
    try:
        found = borg.find()
    except PhobosError as exc:
        make = error if needed else warning
        return make("tools", "borg", exc.message, exc.hint)
    note = "" if found.version >= (1, 4, 0) else " (1.4 is recommended)"
    return ok("tools", "borg", f"Borg {found.version_text} at {found.path}{note}")
