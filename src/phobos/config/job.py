"""The settings every job has (:class:`JobBase`); each job kind in :mod:`phobos.jobs`
subclasses it with its own fields, resources and reference checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from phobos.config.checks import calendar_problem, line_problem, positive
from phobos.config.schema import Duration, Problems, setting
from phobos.core.locks import Resource
from phobos.core.model import BusyPolicy, JobKind

if TYPE_CHECKING:
    from phobos.config.model import Config


@dataclass(frozen=True, slots=True, kw_only=True)
class JobBase:
    """Settings every job kind has. Kind modules subclass this with their own fields."""

    kind: JobKind = setting(doc="What the job does.")
    description: str = setting("", check=line_problem,
                               doc="One line shown in status and units.")
    schedule: str | None = setting(None, doc="systemd OnCalendar expression, e.g. "
                                   "`\"*-*-* 03:00\"`. Without it the job runs only when "
                                   "triggered.", check=calendar_problem)
    on_busy: BusyPolicy = setting(BusyPolicy.WAIT, doc="When a resource is held: `wait`, "
                                  "`skip` (recorded as skipped) or `fail`.")
    busy_timeout: Duration = setting(Duration(6 * 3600.0), check=positive,
                                     doc="How long `wait` waits before giving up (skipped).")
    timeout: Duration | None = setting(None, check=positive,
                                       doc="Stop the job if it runs longer.")
    estimate: Duration | None = setting(None, doc="Expected duration before history exists.")
    randomized_delay: Duration | None = setting(None, doc="Delay each timer start by a random "
                                                "time up to this long (systemd "
                                                "RandomizedDelaySec=).")
    after: tuple[str, ...] = setting((), doc="Jobs this one runs after: when they fire in the "
                                     "same slot (or are still running), this job starts once "
                                     "they have finished, whatever their outcome, in this "
                                     "order. A chain of `after` runs like borgmatic's "
                                     "configurations, one after another. See "
                                     "docs/schedule.md.")

    def resources(self, config: Config) -> tuple[Resource, ...]:
        """The resources this job reads or writes, derived from its settings."""
        return ()

    def check_refs(self, config: Config, path: tuple[str, ...], problems: Problems) -> None:
        """Record problems with references to other tables (hosts, repos, drives)."""

    def secret_values(self) -> list[str]:
        """Secrets the job's own settings hold (redacted from every output)."""
        return []

    def archived_paths(self) -> tuple[tuple[Path, ...], tuple[str, ...]]:
        """(paths the job puts into a repository, its exclude patterns): the layout check
        refuses keys and state among them."""
        return (), ()

    def freshness(self) -> float | None:
        """How old (seconds) the job's last success may get before the job counts as
        overdue, schedule or not (an off-site copy's ``max_age``); None: only missing
        a scheduled slot does."""
        return None
