"""Job kinds: one module per kind, looked up by the ``kind`` key of a job table.

Each kind module defines:

- ``CONFIG``: its config dataclass, a subclass of :class:`phobos.config.model.JobBase` that
  derives the job's resources and checks its references;
- ``execute(ctx: RunContext) -> None``: runs the job's steps through ``ctx.run``;
  raises a PhobosError on failure, calls ``ctx.warn`` for warnings, fills ``ctx.stats``.

Planning (turning config into argv lists) is kept in pure functions of the kind
module so it can be tested as a table.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from phobos.core.model import JobKind

if TYPE_CHECKING:
    from phobos.config.job import JobBase
    from phobos.config.schema import Problems

# Kinds implemented so far; the others are named in JobKind and refused with a message.
KIND_MODULES: dict[JobKind, str] = {
    JobKind.COMMAND: "phobos.jobs.command",
    JobKind.DRIVE_SYNC: "phobos.jobs.drive_sync",
    JobKind.CLOUD_SYNC: "phobos.jobs.cloud_sync",
    JobKind.PULL: "phobos.jobs.pull",
    JobKind.ARCHIVE: "phobos.jobs.archive",
    JobKind.CHECK: "phobos.jobs.check",
    JobKind.DRILL: "phobos.jobs.drill",
    JobKind.BORGMATIC: "phobos.jobs.borgmatic",
}


def kind_module(kind: JobKind) -> ModuleType:
    return importlib.import_module(KIND_MODULES[kind])


def job_config_class(kind: Any, path: tuple[str, ...],
                     problems: Problems) -> type[JobBase] | None:
    """The config class for a job table's ``kind``; records a problem if there is none."""
    from phobos.config.schema import suggest

    names = [k.value for k in JobKind]
    if kind is None:
        problems.add(path, f"required key is missing (one of: {', '.join(names)})")
        return None
    if kind not in names:
        problems.add(path, f"{kind!r} is not a job kind{suggest(str(kind), names)}; "
                     f"kinds: {', '.join(names)}")
        return None
    if JobKind(kind) not in KIND_MODULES:
        problems.add(path, f"job kind {kind!r} is not available in this version of phobos")
        return None
    cls: type[JobBase] = kind_module(JobKind(kind)).CONFIG
    return cls
