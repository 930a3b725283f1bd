"""The vocabulary every doctor check speaks: a :class:`Finding` (area, check, severity,
message, fix), its constructors, and how a list of findings is summed up (worst severity,
exit code, counts, grouping). Nothing here knows a check area.

Exit-code policy (see :func:`exit_code`): 0 when nothing is an error (warnings are
printed but pass), 1 when any finding is an error (with ``strict``, also when any is a
warning). 2 stays reserved for a bad command line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from phobos.errors import ExitCode, PhobosError


class Severity(StrEnum):
    """How bad a finding is; ``rank`` orders them (ok < warning < error)."""

    OK = "ok"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"ok": 0, "warning": 1, "error": 2}[self.value]


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One result: ``area`` groups findings (tools, config, drives...), ``check`` names
    the thing looked at, ``fix`` says what to do (None when there is nothing to do)."""

    area: str
    check: str
    severity: Severity
    message: str
    fix: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"area": self.area, "check": self.check, "severity": str(self.severity),
                "message": self.message, "fix": self.fix}


def ok(area: str, check: str, message: str, fix: str | None = None) -> Finding:
    return Finding(area=area, check=check, severity=Severity.OK, message=message, fix=fix)


def warning(area: str, check: str, message: str, fix: str | None = None) -> Finding:
    return Finding(area=area, check=check, severity=Severity.WARNING, message=message, fix=fix)


def error(area: str, check: str, message: str, fix: str | None = None) -> Finding:
    return Finding(area=area, check=check, severity=Severity.ERROR, message=message, fix=fix)


def worst(findings: Iterable[Finding]) -> Severity:
    """The highest severity among ``findings`` (ok when there are none)."""
    return max((f.severity for f in findings), key=lambda s: s.rank, default=Severity.OK)


def exit_code(findings: Iterable[Finding], *, strict: bool = False) -> ExitCode:
    """0 unless an error was found (or, with ``strict``, a warning): then 1."""
    level = worst(findings)
    if level is Severity.ERROR or (strict and level is Severity.WARNING):
        return ExitCode.FAILED
    return ExitCode.OK


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    """How many findings of each severity, every severity present (``--json``)."""
    found = {str(s): 0 for s in Severity}
    for finding in findings:
        found[str(finding.severity)] += 1
    return found


def areas(findings: Iterable[Finding]) -> Iterator[tuple[str, list[Finding]]]:
    """Findings grouped by area, in first-seen order."""
    order: dict[str, list[Finding]] = {}
    for finding in findings:
        order.setdefault(finding.area, []).append(finding)
    yield from order.items()


Check = Callable[[], Iterable[Finding]]


def guarded(area: str, check: Check) -> list[Finding]:
    """Run one check; a PhobosError or OSError it raises becomes an error finding: the
    doctor must work best on a broken machine, so a check never crashes it."""
    try:
        return list(check())
    except PhobosError as exc:
        return [error(area, "check", exc.message, exc.hint)]
    except OSError as exc:
        return [error(area, "check", f"could not check: {exc}", None)]
