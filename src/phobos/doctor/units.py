"""Doctor check area ``units``: the installed systemd units match the config, the ones
to enable are enabled and, under a running systemd, the timers are active."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phobos.config.model import Config
from phobos.core import proc
from phobos.doctor.findings import Finding, error, ok, warning
from phobos.doctor.options import Options


def _target(config: Config, config_file: Path, opts: Options) -> Any:
    from phobos.systemd.units import Target

    executable = config.systemd.executable or opts.executable or guess_executable()
    return Target(executable=executable, config=Path(os.path.abspath(config_file)))


def guess_executable() -> Path:
    """The phobos console script next to this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "phobos"
    if beside.exists():
        return beside
    found = shutil.which("phobos")
    return Path(os.path.abspath(found)) if found else beside


def unit_findings(config: Config, config_file: Path, opts: Options) -> list[Finding]:
    """Installed units match the config, the ones to enable are enabled and, under a
    running systemd, the timers are active."""
    from phobos.systemd import install as systemd

    root = opts.root
    booted = systemd.booted(root)
    files = systemd.read_manifest(config, root)
    if files is None:
        if not booted and root == Path("/"):
            return [warning("units", "systemd", "no units installed, and PID 1 is not "
                            "systemd here: nothing runs the jobs on schedule",
                            "start `phobos daemon` from your init system (or install "
                            "the units on a systemd machine: `phobos systemd install`)")]
        return [warning("units", "systemd", "no phobos units are installed",
                        "phobos systemd install")]
    listed = systemd.listing(config, _target(config, config_file, opts), root)
    enable = [f.unit for f in files if f.unit and f.enable]
    states = _enabled_states(root, enable)
    findings = [_unit_finding(item, item.unit in enable, states) for item in listed]
    if states is None:
        findings.append(warning("units", "enabled", "cannot tell which units are enabled "
                                "(systemctl is-enabled failed)", "phobos systemd install"))
    timers = [unit for unit in enable if unit.endswith(".timer")]
    if root != Path("/"):
        findings.append(ok("units", "timers", f"units below {root}: whether their timers "
                           "run is not checked"))
    else:
        findings.append(_timers_finding(timers, booted))
    return findings


_UNIT_PROBLEMS = {
    "outdated": ("does not match the config any more", "phobos systemd install"),
    "modified": ("was edited by hand since phobos wrote it",
                 "move your change into the config, then phobos systemd install"),
    "missing": ("was deleted", "phobos systemd install"),
}


def _unit_finding(item: Any, should_enable: bool, states: dict[str, str] | None) -> Finding:
    """One installed file: matches the config and, if it should be, is enabled."""
    name = item.unit or item.path
    if item.state != "installed":
        problem, fix = _UNIT_PROBLEMS.get(item.state, (item.state, "phobos systemd install"))
        make = error if item.state == "missing" else warning
        return make("units", name, f"{item.path} {problem}", fix)
    if not should_enable:
        return ok("units", name, f"{item.path}: installed, matches the config")
    state = (states or {}).get(name, "unknown")
    if states is not None and state not in ("enabled", "enabled-runtime"):
        return error("units", name, f"{item.path}: installed but not enabled ({state})",
                     f"systemctl enable --now {name}")
    return ok("units", name, f"{item.path}: installed, matches the config, {state}")


def _enabled_states(root: Path, units: Sequence[str]) -> dict[str, str] | None:
    """``systemctl --root=ROOT is-enabled`` (works offline, without a running systemd)."""
    if not units:
        return {}
    result = proc.run(("systemctl", f"--root={root}", "is-enabled", *units), capture=True,
                      check=False, timeout=60)
    states = result.stdout.split()
    if len(states) != len(units):
        return None
    return dict(zip(units, states, strict=True))


def _timers_finding(timers: Sequence[str], booted: bool) -> Finding:
    if not booted:
        return warning("units", "timers", "PID 1 is not systemd: whether the timers are "
                       "active cannot be checked, and without systemd they never fire",
                       "on this machine run jobs with `phobos daemon`")
    if not timers:
        return ok("units", "timers", "no scheduled jobs: no timers to run")
    result = proc.run(("systemctl", "is-active", *timers), capture=True, check=False,
                      timeout=60)
    inactive = [t for t, s in zip(timers, result.stdout.split(), strict=False)
                if s != "active"]
    if inactive or len(result.stdout.split()) != len(timers):
        return error("units", "timers", f"not active: {', '.join(inactive) or 'unknown'}",
                     f"systemctl start {' '.join(inactive or timers)}")
    return ok("units", "timers", f"{len(timers)} timers active")
