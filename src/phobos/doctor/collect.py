"""The collector: every check area of ``phobos doctor`` run against the machine, in
the order the report shows them.

A check that cannot run (an unreadable file, a tool that dies) becomes a finding, never
a crash (:func:`phobos.doctor.findings.guarded`). An invalid config is one error
finding; the areas that need the config are then left out, the others (tools, clock)
still run. The remote-unlock checks (``--initramfs``) are not part of this run: they
look at the NAS's initramfs files, need no config, and run on their own
(:mod:`phobos.doctor.initramfs`).
"""

from __future__ import annotations

from pathlib import Path

from phobos.config.model import Config
from phobos.doctor.borg_keys import key_export_findings
from phobos.doctor.clock import clock_findings
from phobos.doctor.config import load_config
from phobos.doctor.drives import drive_findings
from phobos.doctor.findings import Check, Finding, guarded
from phobos.doctor.history import history_findings
from phobos.doctor.hosts import host_findings, server_findings
from phobos.doctor.namespace import namespace_findings
from phobos.doctor.notify import led_findings, notify_findings
from phobos.doctor.options import Options
from phobos.doctor.secrets import secret_findings
from phobos.doctor.space import space_findings
from phobos.doctor.storage import storage_findings
from phobos.doctor.tools import tool_findings
from phobos.doctor.units import unit_findings


def check_machine(config_file: Path, opts: Options) -> list[Finding]:
    """Every check of the running machine against the config in ``config_file``."""
    config, config_findings = load_config(config_file)
    findings = guarded("tools", lambda: tool_findings(config))
    findings += config_findings
    if config is not None:
        for area, check in _config_checks(config, config_file, opts):
            findings += guarded(area, check)
    findings += guarded("clock", lambda: clock_findings(opts.now))
    return findings


def _config_checks(config: Config, config_file: Path, opts: Options
                   ) -> list[tuple[str, Check]]:
    return [
        ("secrets", lambda: secret_findings(config)),
        ("storage", lambda: storage_findings(config)),
        ("hosts", lambda: host_findings(config) + server_findings(config)),
        ("borg keys", lambda: key_export_findings(config)),
        ("space", lambda: space_findings(config)),
        ("history", lambda: history_findings(config)),
        ("drives", lambda: drive_findings(config)),
        ("units", lambda: unit_findings(config, config_file, opts)),
        ("namespace", lambda: namespace_findings(config)),
        ("led", lambda: led_findings(config)),
        ("notify", lambda: notify_findings(config, probe=opts.probe_network)),
    ]
