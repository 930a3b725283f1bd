"""Doctor check area ``secrets``: every file holding a key, passphrase or token (named
or implied by the config) exists and only root can read it; the keys directory is
closed to others (the list of files is :mod:`phobos.config.secrets`)."""

from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path

from phobos.config.model import Config
from phobos.config.secrets import Secret, secret_files
from phobos.doctor.findings import Finding, error, ok, warning


def secret_findings(config: Config) -> list[Finding]:
    """The keys directory and each secret file: present, owned by root, not readable by
    group or others."""
    findings = [_keys_dir_finding(config.paths.keys)]
    for secret in secret_files(config):
        finding = file_mode_finding(secret)
        if finding is not None:
            findings.append(finding)
    return findings


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def file_mode_finding(secret: Secret) -> Finding | None:
    """Present, root-owned, no access for group and others; None for an optional file
    that does not exist."""
    try:
        st = secret.path.stat()
    except FileNotFoundError:
        if not secret.required:
            return None
        return error("secrets", secret.label, f"{secret.path} does not exist",
                     "create it or fix the setting that names it")
    except PermissionError:
        return warning("secrets", secret.label, f"cannot look at {secret.path} "
                       "(permission denied)", "run `phobos doctor` as root")
    where = f"{secret.path} (mode {_mode(st)}, owner uid {st.st_uid})"
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return error("secrets", secret.label, f"{where} can be read or changed by group "
                     "or others", f"chmod 0400 {shlex.quote(str(secret.path))}")
    if st.st_uid != 0:
        return warning("secrets", secret.label, f"{where} is not owned by root",
                       f"chown root:root {shlex.quote(str(secret.path))}")
    return ok("secrets", secret.label, f"{secret.path}: mode {_mode(st)}, owned by root")


def _keys_dir_finding(keys: Path) -> Finding:
    try:
        st = keys.stat()
    except FileNotFoundError:
        return ok("secrets", "keys directory", f"{keys} does not exist yet (created with "
                  "the first key)")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return error("secrets", "keys directory", f"{keys} (mode {_mode(st)}) is writable "
                     "by group or others: keys in it could be replaced",
                     f"chmod 0700 {shlex.quote(str(keys))}")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return warning("secrets", "keys directory", f"{keys} (mode {_mode(st)}) can be "
                       "listed by group or others", f"chmod 0700 {shlex.quote(str(keys))}")
    return ok("secrets", "keys directory", f"{keys}: mode {_mode(st)}")
