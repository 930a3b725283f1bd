"""``phobos doctor``: check the real machine, say what is wrong and how to fix it.

Every check yields :class:`Finding` values: a severity (ok, warning, error), a message and,
when something is off, a fix. A check that cannot run (an unreadable file, a tool that
dies) becomes a finding too, never a crash: the doctor must work best on a broken
machine. An invalid config is one error finding; the checks that need the config are
then left out, the others (tools, clock) still run.

Exit-code policy (see :func:`exit_code`): 0 when nothing is an error (warnings are
printed but pass), 1 when any finding is an error (with ``strict``, also when any is a
warning). 2 stays reserved for a bad command line.

The remote-unlock checks (``--initramfs``) live in :mod:`phobos.unlock.client` next to the
client they prepare for. Network use is limited to a TCP connect to the SMTP server
(``probe_network``); nothing is sent, no ping URL is called.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from phobos.config.model import Config
from phobos.core import proc
from phobos.core.model import JobKind
from phobos.errors import ConfigError, ExitCode, PhobosError

KEY_EXPORTS = "key-exports.json"
MIN_YEAR = 2024
VERSION_TIMEOUT = 30.0
SMTP_PROBE_TIMEOUT = 5.0
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


class Severity(StrEnum):
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
    return max((f.severity for f in findings), key=lambda s: s.rank, default=Severity.OK)


def exit_code(findings: Iterable[Finding], *, strict: bool = False) -> ExitCode:
    """0 unless an error was found (or, with ``strict``, a warning): then 1."""
    level = worst(findings)
    if level is Severity.ERROR or (strict and level is Severity.WARNING):
        return ExitCode.FAILED
    return ExitCode.OK


def counts(findings: Iterable[Finding]) -> dict[str, int]:
    found = {str(s): 0 for s in Severity}
    for finding in findings:
        found[str(finding.severity)] += 1
    return found


Check = Callable[[], Iterable[Finding]]


def guarded(area: str, check: Check) -> list[Finding]:
    """Run one check; a PhobosError or OSError it raises becomes an error finding."""
    try:
        return list(check())
    except PhobosError as exc:
        return [error(area, "check", exc.message, exc.hint)]
    except OSError as exc:
        return [error(area, "check", f"could not check: {exc}", None)]


# --- options ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """How to look. ``root``: the file system whose installed units are read (``/``:
    this machine). ``executable``: the phobos program the units should run (what
    ``phobos systemd install`` would write); ``probe_network``: TCP-connect to the SMTP
    server (nothing is sent)."""

    root: Path = Path("/")
    executable: Path | None = None
    probe_network: bool = True
    now: datetime | None = None


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
        ("hosts", lambda: host_findings(config)),
        ("borg keys", lambda: key_export_findings(config)),
        ("drives", lambda: drive_findings(config)),
        ("units", lambda: unit_findings(config, config_file, opts)),
        ("namespace", lambda: namespace_findings(config)),
        ("led", lambda: led_findings(config)),
        ("notify", lambda: notify_findings(config, probe=opts.probe_network)),
    ]


# --- config --------------------------------------------------------------------------


def load_config(path: Path) -> tuple[Config | None, list[Finding]]:
    """The config and a finding about it; (None, [error]) when it does not load."""
    from phobos.config.model import load

    try:
        config = load(path)
    except ConfigError as exc:
        return None, [error("config", "file", str(exc), exc.hint)]
    summary = (f"{len(config.jobs)} jobs, {len(config.hosts)} hosts, "
               f"{len(config.repos)} repos, {len(config.drives)} drives")
    return config, [ok("config", "file", f"{path}: valid ({summary})")]


# --- tools ------------------------------------------------------------------------------


Needs = Callable[[Config], bool]


def _kinds(config: Config) -> set[JobKind]:
    return {job.kind for job in config.jobs.values()}


def _needs_borg(config: Config) -> bool:
    borg_kinds = {JobKind.ARCHIVE, JobKind.CHECK, JobKind.DRILL, JobKind.DRIVE_SYNC}
    return bool(config.repos) or bool(_kinds(config) & borg_kinds)


def _needs_namespace(config: Config) -> bool:
    return bool(config.drives) or config.storage.device is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """An external program: how to ask its version, the oldest phobos accepts, the
    Debian package that has it, and whether a config needs it."""

    name: str
    purpose: str
    package: str
    minimum: tuple[int, int, int] | None = None
    needed: Needs = field(default=lambda config: True)

    def version_argv(self, path: str) -> tuple[str, ...]:
        return (path, "-V") if self.name == "ssh" else (path, "--version")


TOOLS = (
    Tool(name="rsync", purpose="pulls and drive syncs", package="rsync", minimum=(3, 1, 0),
         needed=lambda c: bool(_kinds(c) & {JobKind.PULL, JobKind.DRIVE_SYNC})),
    Tool(name="ssh", purpose="pulling remote hosts", package="openssh-client",
         needed=lambda c: bool(c.hosts)),
    Tool(name="cryptsetup", purpose="unlocking LUKS drives", package="cryptsetup-bin",
         minimum=(2, 0, 0), needed=lambda c: any(d.unlock == "luks"
                                                 for d in c.drives.values())),
    Tool(name="mount", purpose="mounting drives and the storage", package="mount",
         needed=_needs_namespace),
    Tool(name="umount", purpose="releasing drives", package="mount", needed=_needs_namespace),
    Tool(name="unshare", purpose="creating the backup mount namespace",
         package="util-linux", needed=_needs_namespace),
    Tool(name="nsenter", purpose="entering the backup mount namespace by hand",
         package="util-linux", needed=_needs_namespace),
    Tool(name="borgmatic", purpose="borgmatic jobs", package="borgmatic",
         needed=lambda c: JobKind.BORGMATIC in _kinds(c)),
)


def search_path() -> str:
    """The PATH phobos gives its children (what jobs will find)."""
    return proc.child_env()["PATH"]


def parse_version(text: str) -> tuple[int, int, int] | None:
    match = _VERSION.search(text)
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def _text(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


def tool_version(argv: Sequence[str]) -> tuple[tuple[int, int, int] | None, str]:
    """(version, first output line) of ``argv``; ssh prints its version on stderr."""
    result = proc.run(argv, capture=True, check=False, timeout=VERSION_TIMEOUT)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    lines += [line.removeprefix("stderr: ") for line in result.tail]
    first = lines[0].strip() if lines else ""
    return parse_version(first), first


def tool_findings(config: Config | None) -> list[Finding]:
    """Each tool: found on PATH, its version, new enough. A missing tool is an error when
    the config needs it (or no config could be read), else a warning."""
    findings = [_borg_finding(config)]
    for tool in TOOLS:
        needed = config is None or tool.needed(config)
        if tool.name == "borgmatic" and not needed:
            continue
        findings.append(_tool_finding(tool, needed))
    return findings


def _tool_finding(tool: Tool, needed: bool) -> Finding:
    path = shutil.which(tool.name, path=search_path())
    if path is None:
        make = error if needed else warning
        why = f"needed for {tool.purpose}" if needed else f"needed once you use {tool.purpose}"
        return make("tools", tool.name, f"not found on PATH ({why})",
                    f"apt install {tool.package}")
    try:
        version, line = tool_version(tool.version_argv(path))
    except PhobosError as exc:
        return error("tools", tool.name, f"{path} does not run: {exc.message}", exc.hint)
    if version is None:
        return warning("tools", tool.name, f"{path}: cannot read its version "
                       f"({line or 'no output'})", f"check that `{path} --version` works")
    if tool.minimum is not None and version < tool.minimum:
        return error("tools", tool.name, f"{path} is version {_text(version)}; phobos needs "
                     f"{_text(tool.minimum)} or later", f"upgrade {tool.package}")
    return ok("tools", tool.name, f"{_text(version)} at {path}")


def _borg_finding(config: Config | None) -> Finding:
    from phobos.tools import borg

    needed = config is None or _needs_borg(config)
    try:
        found = borg.find()
    except PhobosError as exc:
        make = error if needed else warning
        return make("tools", "borg", exc.message, exc.hint)
    note = "" if found.version >= (1, 4, 0) else " (1.4 is recommended)"
    return ok("tools", "borg", f"Borg {found.version_text} at {found.path}{note}")


# --- secrets ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    """A file holding a secret: which setting names it, and whether it must exist."""

    label: str
    path: Path
    required: bool = True


def _passcommand_file(command: str | None) -> Path | None:
    """``cat FILE`` (the seed's and the docs' usual passcommand): the file it reads."""
    try:
        argv = shlex.split(command or "")
    except ValueError:
        return None
    if len(argv) == 2 and os.path.basename(argv[0]) == "cat" and argv[1].startswith("/"):
        return Path(argv[1])
    return None


def secret_files(config: Config) -> list[Secret]:
    """Every file the config names (or implies) that holds a key, passphrase or token."""
    from phobos.drives import drive as drives
    from phobos.tools import ssh

    found = []
    for name, repo in sorted(config.repos.items()):
        if repo.passphrase_file is not None:
            found.append(Secret(label=f"repo {name} passphrase",
                                path=repo.passphrase_file))
        if (catted := _passcommand_file(repo.passcommand)) is not None:
            found.append(Secret(label=f"repo {name} passcommand", path=catted))
    for drive in drives.all_drives(config):
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


# --- hosts -------------------------------------------------------------------------------


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


# --- Borg keys -------------------------------------------------------------------------


def _exports_path(config: Config) -> Path:
    return config.paths.state / KEY_EXPORTS


def key_exports(config: Config) -> dict[str, Any]:
    """What :func:`record_key_export` recorded: repo name -> {"at", "path", "paper"}."""
    try:
        data = json.loads(_exports_path(config).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_key_export(config: Config, repo: str, target: Path, *, paper: bool) -> None:
    """Remember that ``repo``'s key was exported to ``target`` (for `phobos repo
    key-export`; the doctor reads it). Only the fact and the path are stored."""
    data = key_exports(config)
    data[repo] = {"at": time.time(), "path": str(target), "paper": paper}
    path = _exports_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def key_export_findings(config: Config) -> list[Finding]:
    """Per encrypted repository: has its key been exported (as far as phobos knows)?"""
    exports = key_exports(config)
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


# --- drives ----------------------------------------------------------------------------


def parse_keyslots(dump: str) -> list[int]:
    """Active key slots from ``cryptsetup luksDump`` (LUKS2 "Keyslots:" section, or
    LUKS1 "Key Slot N: ENABLED" lines)."""
    slots: list[int] = []
    in_section = False
    for line in dump.splitlines():
        luks1 = re.match(r"^Key Slot (\d+): ENABLED", line)
        if luks1:
            slots.append(int(luks1.group(1)))
        if re.match(r"^\S", line):
            in_section = line.startswith("Keyslots:")
            continue
        luks2 = re.match(r"^  (\d+): luks2", line)
        if in_section and luks2:
            slots.append(int(luks2.group(1)))
    return slots


def keyslots(device: str) -> list[int]:
    from phobos.tools import cryptsetup

    result = proc.run((cryptsetup.CRYPTSETUP, "luksDump", device), capture=True,
                      explain=cryptsetup.explain, timeout=60)
    return parse_keyslots(result.stdout)


def drive_findings(config: Config, *, probe: bool = True) -> list[Finding]:
    """Per LUKS drive: a recovery passphrase slot besides the keyfile, and a header
    backup. A plugged-in drive is asked (luksDump); otherwise what `phobos drive init`
    recorded counts."""
    from phobos.drives import drive as drives

    state = drives.load_state(config).get("drives", {})
    findings = []
    for drive in drives.all_drives(config):
        if drive.keyfile is None:
            findings.append(ok("drives", f"drive {drive.name}", "unlock = \"none\": not "
                               "encrypted by phobos, no key slots to check"))
            continue
        facts = state.get(drive.name, {})
        device = drives.locate(drive.uuid) if probe else None
        findings.append(_slot_finding(f"drive {drive.name} slots", device, facts))
        findings.append(_header_finding(f"drive {drive.name} header", drive.header_backup,
                                        device))
    return findings


def _slot_finding(check: str, device: str | None, facts: dict[str, Any]) -> Finding:
    if device is not None:
        slots = keyslots(device)
        if len(slots) >= 2:
            return ok("drives", check, f"{device}: {len(slots)} key slots "
                      f"({', '.join(map(str, slots))}): keyfile and recovery passphrase")
        return error("drives", check, f"{device}: only {len(slots)} key slot: when the NAS "
                     "(and its keyfile) is lost, this drive cannot be opened",
                     f"add a recovery passphrase: cryptsetup luksAddKey --key-file KEYFILE "
                     f"{device}")
    if facts.get("initialised"):
        when = time.strftime("%Y-%m-%d", time.localtime(float(facts["initialised"])))
        return ok("drives", check, f"prepared by `phobos drive init` on {when} (keyfile "
                  "and recovery passphrase slots)")
    return warning("drives", check, "not known to have a recovery passphrase slot: not "
                   "prepared with `phobos drive init`, and not plugged in to look",
                   "plug it in and run `phobos doctor` again")


def _header_finding(check: str, backup: Path, device: str | None) -> Finding:
    if backup.is_file():
        return ok("drives", check, f"LUKS header backup at {backup}")
    dev = device or "DEVICE"
    return warning("drives", check, f"no LUKS header backup at {backup}: a damaged header "
                   "makes the drive unreadable, even with the right key",
                   f"cryptsetup luksHeaderBackup {dev} --header-backup-file {backup}; "
                   "chmod 0400 it and keep a copy off the NAS")


# --- units -----------------------------------------------------------------------------


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


# --- namespace -------------------------------------------------------------------------


def namespace_findings(config: Config) -> list[Finding]:
    """The backup mount namespace: alive (or created on demand), nothing it hides is
    visible outside, the storage device mounted only inside."""
    from phobos import namespace
    from phobos.tools import mount as mnt

    if not _needs_namespace(config):
        return [ok("namespace", "backup namespace", "not used (no drives, no [storage] "
                   "device)")]
    if os.geteuid() != 0:
        return [warning("namespace", "backup namespace", "cannot look inside as non-root",
                        "run `phobos doctor` as root")]
    findings = []
    device = config.storage.device
    outside = not namespace.is_inside(namespace.of(config))
    if device is not None and outside and mnt.mounted_at(mnt.read_mountinfo(),
                                                          config.storage.root):
        findings.append(error("namespace", "storage", f"{config.storage.root} is mounted "
                              "outside the backup namespace: every process can see the "
                              "backups", f"umount {config.storage.root} (jobs mount "
                              f"{device} inside the namespace)"))
    status = namespace.status(config)
    if not status.alive:
        findings.append(ok("namespace", "backup namespace", f"{status.file} does not exist "
                           "yet: the first job that needs it creates it"))
        return findings
    if status.leaked:
        shown = ", ".join(e.mountpoint for e in status.leaked)
        findings.append(error("namespace", "backup namespace", f"mounted inside AND visible "
                              f"outside: {shown}", "unmount them outside the namespace"))
    else:
        findings.append(ok("namespace", "backup namespace", f"alive ({status.file}), "
                           f"{len(status.hidden)} mounts hidden from the rest of the system"))
    return findings


# --- LED and notifiers ------------------------------------------------------------------


def led_findings(config: Config) -> list[Finding]:
    """The LED driver builds and, for a BlinkStick, the stick is there and writable."""
    from phobos.notify.led import BlinkStickDriver, HidrawTransport
    from phobos.notify.setup import led_driver

    led = config.notify.led
    try:
        driver = led_driver(led)
    except (PhobosError, ValueError) as exc:
        hint = exc.hint if isinstance(exc, PhobosError) else "fix [notify.led]"
        return [error("led", led.driver, str(exc), hint)]
    if driver is None:
        return [ok("led", "none", "no LED configured (driver = \"none\")")]
    if isinstance(driver, BlinkStickDriver):
        return [_blinkstick_finding(HidrawTransport())]
    if led.driver == "command":
        program = shutil.which(led.command[0], path=search_path())
        if program is None:
            return [error("led", "command", f"{led.command[0]}: not found on PATH",
                          "install it or fix [notify.led] command")]
        return [ok("led", "command", f"runs {program}")]
    assert led.path is not None
    parent = led.path.parent
    if not os.access(parent, os.W_OK):
        return [error("led", "file", f"cannot write into {parent}",
                      "create the directory or fix [notify.led] path")]
    return [ok("led", "file", f"writes the state to {led.path}")]


def _blinkstick_finding(transport: Any) -> Finding:
    try:
        node = transport.find()
    except PhobosError as exc:
        return warning("led", "blinkstick", exc.message, exc.hint)
    if not os.access(node, os.R_OK | os.W_OK):
        return error("led", "blinkstick", f"found at {node} but phobos may not write to it",
                     "run phobos as root, or give its group the stick with a udev rule: "
                     'SUBSYSTEM=="hidraw", ATTRS{idVendor}=="20a0", ATTRS{idProduct}=="41e5", '
                     'MODE:="0660", GROUP:="phobos"')
    return ok("led", "blinkstick", f"BlinkStick at {node}")


def notify_findings(config: Config, *, probe: bool = True) -> list[Finding]:
    """Each message channel builds from its config (nothing is sent); the SMTP server
    accepts a TCP connection; sendmail exists."""
    from phobos.notify.setup import message_channels, ping_notifier

    channels = message_channels(config)
    findings = []
    for name, channel in channels.items():
        if isinstance(channel, PhobosError):
            findings.append(error("notify", name, channel.message, channel.hint))
        elif name == "email":
            findings.append(_email_finding(config, probe))
        else:
            findings.append(ok("notify", name, f"configured (events: "
                               f"{', '.join(channel.events)})"))
    ping = ping_notifier(config)
    if ping is not None:
        broken = getattr(ping, "error", None)
        findings.append(error("notify", "ping", broken.message, broken.hint)
                        if isinstance(broken, PhobosError)
                        else ok("notify", "ping", "configured (not called by the doctor)"))
    if not findings:
        findings.append(warning("notify", "channels", "no e-mail, Apprise or ping is "
                                "configured: a failed job shows only on the LED and in "
                                "`phobos status`", "add [notify.email] to the config"))
    return findings


def _email_finding(config: Config, probe: bool) -> Finding:
    email = config.notify.email
    assert email is not None
    events = ", ".join(email.events)
    if email.transport == "sendmail":
        program = shutil.which(email.sendmail[0], path=search_path())
        if program is None:
            return error("notify", "email", f"{email.sendmail[0]}: not found",
                         "install an MTA (apt install dma, or postfix) or use transport "
                         "= \"smtp\"")
        return ok("notify", "email", f"through {program} to {', '.join(email.to)} "
                  f"(events: {events})")
    where = f"{email.host}:{email.port}"
    if probe:
        try:
            socket.create_connection((email.host, email.port), SMTP_PROBE_TIMEOUT).close()
        except OSError as exc:
            return error("notify", "email", f"SMTP server {where} does not answer: "
                         f"{exc.strerror or exc}", "check [notify.email] host and port, "
                         "then `phobos notify test`")
    reached = "answers" if probe else "not probed"
    return ok("notify", "email", f"SMTP {where} {reached}; to {', '.join(email.to)} "
              f"(events: {events}); `phobos notify test` sends a test message")


# --- clock ---------------------------------------------------------------------------


def clock_findings(now: datetime | None = None) -> list[Finding]:
    """The year is plausible and, where systemd can say, NTP has synchronized."""
    now = now or datetime.now().astimezone()
    if now.year < MIN_YEAR:
        return [error("clock", "time", f"the clock says {now:%Y-%m-%d %H:%M}: schedules, "
                      "retention and archive names would be wrong",
                      "set the time and enable NTP (apt install systemd-timesyncd or "
                      "chrony)")]
    shown = f"{now:%Y-%m-%d %H:%M %Z}"
    if not Path("/run/systemd/system").is_dir() or shutil.which("timedatectl") is None:
        return [ok("clock", "time", f"{shown}; NTP synchronization not checked (needs "
                   "systemd's timedatectl)")]
    result = proc.run(("timedatectl", "show", "-p", "NTPSynchronized", "--value"),
                      capture=True, check=False, timeout=30)
    answer = result.stdout.strip()
    if answer == "yes":
        return [ok("clock", "time", f"{shown}, synchronized by NTP")]
    if answer == "no":
        return [warning("clock", "time", f"{shown}, but NOT synchronized by NTP",
                        "timedatectl set-ntp true (and check the NTP service)")]
    return [ok("clock", "time", f"{shown}; NTP state unknown (timedatectl exit "
               f"{result.returncode})")]


def areas(findings: Iterable[Finding]) -> Iterator[tuple[str, list[Finding]]]:
    """Findings grouped by area, in first-seen order."""
    order: dict[str, list[Finding]] = {}
    for finding in findings:
        order.setdefault(finding.area, []).append(finding)
    yield from order.items()
