"""Doctor check area ``borg keys``: the key of each encrypted repository is known to
have been exported (see :mod:`phobos.repos.key_exports`)."""

from __future__ import annotations

import time

from phobos.config.model import Config
from phobos.doctor.findings import Finding, ok, warning
from phobos.repos.key_exports import recorded_key_exports


def key_export_findings(config: Config) -> list[Finding]:
    """Per encrypted repository: has its key been exported (as far as phobos knows)?"""
    exports = recorded_key_exports(config)
    findings = []
    for name, repo in sorted(config.repos.items()):
        check = f"repo {name}"
        if repo.encryption == "none":
            findings.append(ok("borg keys", check, "not encrypted: no key to export"))
            continue
        record = exports.get(name)
        if isinstance(record, dict) and "at" in record:
            when = time.strftime("%Y-%m-%d", time.localtime(float(record["at"])))
            findings.append(ok("borg keys", check, f"key exported on {when} to "
                               f"{record.get('path')}; keep that copy off the NAS"))
            continue
        findings.append(warning("borg keys", check, _unexported(repo.encryption),
                                f"phobos repo key-export {name} FILE (or --paper to print "
                                "it) and keep it, with the passphrase, away from the NAS"))
    return findings


def _unexported(encryption: str) -> str:
    if encryption.startswith("keyfile"):
        return ("key not known to be exported: in keyfile mode it exists only on the NAS, "
                "so losing the NAS makes every copy of the repository unreadable")
    return ("key not known to be exported: it lives inside the repository, so a damaged "
            "repository (or drive copy) can lose it")
