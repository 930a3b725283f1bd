"""Doctor check area ``hosts``: each host to pull, and the server of each repository
reached over SSH, has its ssh host key pinned (and a repository its own key)."""

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


def server_findings(config: Config) -> list[Finding]:
    """Each repository on a server has its key and its server's pinned host key (no
    connection is made: `phobos repo info NAME` connects)."""
    from phobos.repos.remote import endpoint
    from phobos.tools import ssh

    findings = []
    for name, repo in sorted(config.repos.items()):
        if repo.url is None:
            continue
        ep = endpoint(config, name)
        keys = ssh.pinned(ep.known_hosts, ep.alias)
        if not ep.identity.exists():
            findings.append(error("hosts", f"repo {name}", f"its SSH key {ep.identity} "
                                  "does not exist: Borg cannot log in to the server",
                                  f"phobos repo trust {name}"))
        elif not keys:
            findings.append(error("hosts", f"repo {name}", f"no host key pinned for "
                                  f"{ep.where} in {ep.known_hosts}: its jobs will fail",
                                  f"phobos repo trust {name}"))
        else:
            findings.append(ok("hosts", f"repo {name}", f"server {ep.where}: host key "
                               f"pinned ({', '.join(k.describe() for k in keys)}), key "
                               f"{ep.identity}"))
    return findings
