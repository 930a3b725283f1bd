"""Doctor check area ``secrets``: every file holding a key, passphrase or token (named
or implied by the config) exists and only root can read it; the keys directory is
closed to others."""

from __future__ import annotations

import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

from phobos.config.model import Config
from phobos.doctor.findings import Finding, error, ok, warning


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    """A file holding a secret: which setting names it, and whether it must exist."""

    label: str
    path: Path
    required: bool = True


def passcommand_file(command: str | None) -> Path | None:
    """The file a ``cat FILE`` passcommand reads (the usual form, in the original setup
    and in the docs), or None for any other command."""
    try:
        argv = shlex.split(command or "")
    except ValueError:
        return None
    if len(argv) == 2 and os.path.basename(argv[0]) == "cat" and argv[1].startswith("/"):
        return Path(argv[1])
    return None


def secret_files(config: Config) -> list[Secret]:
    """Every file the config names (or implies) that holds a key, passphrase or token."""
    from phobos.drives.identity import all_drives
    from phobos.tools import ssh

    found = []
    for name, repo in sorted(config.repos.items()):
        if repo.passphrase_file is not None:
            found.append(Secret(label=f"repo {name} passphrase",
                                path=repo.passphrase_file))
        if (catted := passcommand_file(repo.passcommand)) is not None:
            found.append(Secret(label=f"repo {name} passcommand", path=catted))
    for drive in all_drives(config):
        if drive.keyfile is not None:
            found.append(Secret(label=f"drive {drive.name} keyfile", path=drive.keyfile))
            found.append(Secret(label=f"drive {drive.name} header",
                                path=drive.header_backup, required=False))
    email = config.notify.email
    if email is not None and email.password_file is not None:
        found.append(Secret(label="email password", path=email.password_file))
    if config.web is not None and config.web.token_file is not None:
        found.append(Secret(label="web token", path=config.web.token_file))
    found.append(Secret(label="pull key", path=config.paths.keys / ssh.PULL_KEY,
                        required=bool(config.hosts)))
    for name, host in sorted(config.hosts.items()):
        if host.identity is not None:
            found.append(Secret(label=f"host {name} identity", path=host.identity))
    return found


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
