"""Doctor check area ``hosts``: each host to pull has its ssh host key pinned."""

from __future__ import annotations

from phobos.config.model import Config
from phobos.doctor.findings import Finding, error, ok


def host_findings(config: Config) -> list[Finding]:
    """Each host to pull has its key pinned (no connection is made: `phobos host test`
    connects)."""
    from phobos.hosts import known_hosts_path
    from phobos.tools import ssh

    known = known_hosts_path(config)
    findings = []
    for name, host in sorted(config.hosts.items()):
        keys = ssh.pinned(known, name)
        if keys:
            findings.append(ok("hosts", f"host {name}", f"host key pinned ("
                               f"{', '.join(k.describe() for k in keys)}); `phobos host "
                               f"test {name}` connects and checks the rest"))
        else:
            findings.append(error("hosts", f"host {name}", f"no host key pinned in {known}: "
                                  "its pulls will fail", f"phobos host add {name} "
                                  f"{host.address}"))
    return findings
