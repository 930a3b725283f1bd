"""The phobos configuration: one TOML file into frozen dataclasses.

Load with :func:`load`; every problem of the file is reported together in one
:class:`~phobos.errors.ConfigError` naming the file, the key path and the line.
Job tables are built by their kind's config class (see :mod:`phobos.jobs`).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from phobos.config.schema import Duration, Problems, build, line_of, locate_keys, setting, suggest
from phobos.core.locks import Resource
from phobos.core.model import BusyPolicy, JobKind
from phobos.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/phobos/phobos.toml")
CONFIG_ENV = "PHOBOS_CONFIG"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _name_problem(name: str) -> str | None:
    if _NAME.match(name):
        return None
    return (f"{name!r} is not a valid name: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit")


def _calendar_problem(text: str) -> str | None:
    """systemd's verdict on an OnCalendar expression, as a config problem."""
    from phobos.oncalendar.spec import CalendarError, parse_calendar

    try:
        parse_calendar(text)
    except CalendarError as exc:
        return f"not a valid systemd calendar expression: {exc.message}"
    return None


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than zero"


# --- tables ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PathsConfig:
    state: Path = setting(Path("/var/lib/phobos"),
                          doc="History database, LED and drive state.")
    run: Path = setting(Path("/run/phobos"),
                        doc="Lock files and the backup mount namespace (a tmpfs is best).")
    log: Path = setting(Path("/var/log/phobos"),
                        doc="phobos's own log (notifier warnings, recovered runs).")
    keys: Path = setting(Path("/etc/phobos/keys"),
                         doc="SSH pull key, known_hosts and drive keyfiles.")


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    root: Path = setting(Path("/backup"), doc="Where backups live on the NAS.")
    holding: Path = setting(Path("/backup/holding"),
                            doc="Holding area: pulled copies of remote hosts, one folder each.")
    device: str | None = setting(None, doc="Optional device (e.g. `UUID=...`) mounted on "
                                 "`root` only inside the backup mount namespace.")


@dataclass(frozen=True, slots=True, kw_only=True)
class RepoConfig:
    path: Path = setting(doc="The Borg repository.")
    passcommand: str | None = setting(None, doc="Command printing the passphrase "
                                      "(handed to Borg as BORG_PASSCOMMAND).")
    passphrase_file: Path | None = setting(None, doc="File holding the passphrase "
                                           "(handed to Borg through a pipe).")
    encryption: str = setting("repokey-blake2", doc="Encryption mode for `phobos repo init`.",
                              check=lambda v: _one_of(v, (
                                  "repokey-blake2", "repokey", "keyfile-blake2", "keyfile",
                                  "authenticated-blake2", "authenticated", "none")))
    compression: str = setting("zstd,3", doc="Borg compression spec.")
    base_dir: Path | None = setting(None, doc="BORG_BASE_DIR (keys, cache, security); "
                                    "default: Borg's own (root's home).")
    lock_wait: Duration = setting(Duration(86400.0), check=_positive,
                                  doc="How long to wait for Borg's own lock when a process "
                                  "outside phobos holds it (jobs of phobos never wait in "
                                  "Borg: phobos's repo lock orders them).")


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    address: str = setting(doc="DNS name or IP address of the host to pull.")
    port: int = setting(22, doc="SSH port.")
    user: str = setting("root", doc="Remote user.")
    identity: Path | None = setting(None, doc="SSH private key (default: phobos's pull key).")
    paths: tuple[str, ...] = setting(factory=tuple, doc="Remote paths to pull.")
    exclude: tuple[str, ...] = setting(factory=tuple, doc="rsync exclude patterns.")
    bwlimit: str | None = setting(None, doc="rsync --bwlimit, e.g. `\"5m\"`.")
    rrsync_root: str | None = setting(None, doc="The client's rrsync root, if its key is "
                                      "restricted with rrsync (paths are then relative).")
    rsync_options: tuple[str, ...] = setting(factory=tuple, doc="Extra rsync options.")


@dataclass(frozen=True, slots=True, kw_only=True)
class DriveConfig:
    luks_uuid: str = setting(doc="UUID of the LUKS header (`cryptsetup luksUUID DEV`); with "
                             "`unlock = \"none\"` the UUID of the filesystem on the device.")
    keyfile: Path | None = setting(None, doc="Keyfile that unlocks the drive (mode 0400); "
                                   "default `KEYS/NAME.key`, where `phobos drive init` puts it.")
    label: str = setting("extbackup", doc="Label of the filesystem inside.")
    max_age: Duration = setting(Duration(35 * 86400.0),
                                doc="A drive not synced for longer is overdue.")
    unlock: str = setting("luks", doc="`luks`: a LUKS2 drive opened with the keyfile; `none`: "
                          "the device holds the filesystem directly (for tests and for drives "
                          "encrypted elsewhere).",
                          check=lambda v: None if v in ("luks", "none") else
                          f"{v!r} is not one of 'luks', 'none'")
    mountpoint: Path | None = setting(None, doc="Where the drive is mounted inside the backup "
                                      "namespace (default `RUN/drives/NAME`).")


@dataclass(frozen=True, slots=True, kw_only=True)
class LedConfig:
    driver: str = setting("none", doc="`blinkstick`, `command`, `file` or `none`.",
                          check=lambda v: _one_of(v, ("none", "blinkstick", "command", "file")))
    index: int = setting(1, doc="BlinkStick LED index (the Nano's second LED is 1).")
    limit: int = setting(50, doc="Brightness limit 0-100, as the blinkstick CLI's --limit.")
    path: Path | None = setting(None, doc="State file for the `file` driver.")
    command: tuple[str, ...] = setting(factory=tuple,
                                       doc="argv for the `command` driver; `{color}` is replaced "
                                       "by off, blue, yellow, green or red, `{hex}` by RRGGBB.")
    clear_on_success: bool = setting(False, doc="A later success of the failed job clears red.")


# What a finished run (or the overdue check) can tell a message channel.
NOTIFY_EVENTS = ("failure", "warning", "success", "skipped", "overdue")


def _one_of(value: str, choices: tuple[str, ...]) -> str | None:
    if value in choices:
        return None
    return f"{value!r} is not one of {', '.join(map(repr, choices))}{suggest(value, choices)}"


def _events(values: tuple[str, ...]) -> str | None:
    return next((_one_of(v, NOTIFY_EVENTS) for v in values if v not in NOTIFY_EVENTS), None)


def _http_url(url: str | None) -> str | None:
    if url is None or url.startswith(("http://", "https://")):
        return None
    return "must be an http:// or https:// URL"


def _http_urls(urls: Mapping[str, str]) -> str | None:
    bad = sorted(job for job, url in urls.items() if _http_url(url))
    return f"{', '.join(bad)}: must be http:// or https:// URLs" if bad else None


def _empty_urls() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailConfig:
    to: tuple[str, ...] = setting(("root",), doc="Recipients.",
                                  check=lambda v: None if v else "name at least one recipient")
    sender: str | None = setting(None, doc="From address (default phobos@HOSTNAME).")
    transport: str = setting("smtp", doc="`smtp` (to `host`) or `sendmail` (the local MTA).",
                             check=lambda v: _one_of(v, ("smtp", "sendmail")))
    sendmail: tuple[str, ...] = setting(("/usr/sbin/sendmail", "-t", "-oi"),
                                        doc="argv of the local MTA; the message goes to its "
                                        "stdin with the recipients in its headers.",
                                        check=lambda v: None if v else "name a program")
    host: str = setting("localhost", doc="SMTP server.")
    port: int = setting(25, doc="SMTP port (submission: 587 with starttls, 465 with tls).")
    security: str = setting("none", doc="`none`, `starttls` or `tls`.",
                            check=lambda v: _one_of(v, ("none", "starttls", "tls")))
    ca_file: Path | None = setting(None, doc="CA certificate(s) to verify the SMTP server "
                                   "with (default: the system's CAs).")
    username: str | None = setting(None, doc="SMTP login (needs starttls or tls).")
    password_file: Path | None = setting(None, doc="File holding the SMTP password.")
    password_command: str | None = setting(None, doc="Command printing the SMTP password "
                                           "(split like a shell would, run without one).")
    timeout: Duration = setting(Duration(30.0), check=_positive,
                                doc="Give up on the SMTP server after this long.")
    events: tuple[str, ...] = setting(("failure",), check=_events,
                                      doc="Events that send mail: failure (includes "
                                      "interrupted), warning, success, skipped, overdue.")


@dataclass(frozen=True, slots=True, kw_only=True)
class AppriseConfig:
    urls: tuple[str, ...] = setting(secret=True, check=lambda v: None if v else "name a URL",
                                    doc="Apprise URLs (ntfy://, gotify://, tgram://, ...).")
    events: tuple[str, ...] = setting(("failure",), check=_events,
                                      doc="Events that notify, as for e-mail.")


@dataclass(frozen=True, slots=True, kw_only=True)
class PingConfig:
    url: str | None = setting(None, secret=True, check=_http_url,
                              doc="Base URL: every job pings URL/JOB (healthchecks.io slug "
                              "URLs, e.g. https://hc-ping.com/PING_KEY).")
    jobs: Mapping[str, str] = setting(factory=_empty_urls, secret=True, check=_http_urls,
                                      doc="Check URL per job, e.g. { nightly = "
                                      "\"https://hc-ping.com/UUID\" }; wins over `url`.")
    send_log: bool = setting(True, doc="POST the log tail with the success and fail pings.")
    timeout: Duration = setting(Duration(10.0), check=_positive,
                                doc="Give up on a ping after this long.")


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyConfig:
    led: LedConfig = setting(factory=LedConfig, doc="The BlinkStick LED.")
    email: EmailConfig | None = setting(None, doc="E-mail on failure.")
    apprise: AppriseConfig | None = setting(None, doc="Apprise notifications.")
    ping: PingConfig | None = setting(None, doc="Dead man's switch pings (healthchecks.io).")


# --- jobs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class JobBase:
    """Settings every job kind has. Kind modules subclass this with their own fields."""

    kind: JobKind = setting(doc="What the job does.")
    description: str = setting("", doc="One line shown in status and units.")
    schedule: str | None = setting(None, doc="systemd OnCalendar expression, e.g. "
                                   "`\"*-*-* 03:00\"`. Without it the job runs only when "
                                   "triggered.", check=_calendar_problem)
    on_busy: BusyPolicy = setting(BusyPolicy.WAIT, doc="When a resource is held: `wait`, "
                                  "`skip` (recorded as skipped) or `fail`.")
    busy_timeout: Duration = setting(Duration(6 * 3600.0), check=_positive,
                                     doc="How long `wait` waits before giving up (skipped).")
    timeout: Duration | None = setting(None, check=_positive,
                                       doc="Stop the job if it runs longer.")
    estimate: Duration | None = setting(None, doc="Expected duration before history exists.")
    randomized_delay: Duration | None = setting(None, doc="Delay each timer start by a random "
                                                "time up to this long (systemd "
                                                "RandomizedDelaySec=).")

    def resources(self, config: Config) -> tuple[Resource, ...]:
        """The resources this job reads or writes, derived from its settings."""
        return ()

    def check_refs(self, config: Config, path: tuple[str, ...], problems: Problems) -> None:
        """Record problems with references to other tables (hosts, repos, drives)."""


def _ref(problems: Problems, path: tuple[str, ...], table: str, name: str,
         known: Mapping[str, Any]) -> None:
    if name not in known:
        problems.add(path, f"no {table} named {name!r}" + (suggest(name, known) or
                                                           f" (define [{table}s.{name}])"))


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitSandboxConfig:
    network: bool = setting(False, doc="Allow IPv4/IPv6 sockets (commands get none).")
    setuid: bool = setting(False, doc="Allow creating setuid/setgid files.")
    read_write_paths: tuple[Path, ...] = setting((), doc="Paths the job may write besides "
                                                 "those its resources name.")


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemdConfig:
    executable: Path | None = setting(None, doc="The phobos program the units run "
                                      "(default: the one running `phobos systemd`).")
    drive_trigger: str = setting("device", doc="How plugging a drive starts its unit: "
                                 "`device` (WantedBy= its device unit) or `udev` (a rule "
                                 "setting SYSTEMD_WANTS).",
                                 check=lambda v: None if v in ("device", "udev") else
                                 f"{v!r} is not one of 'device', 'udev'")
    sandbox: Mapping[str, UnitSandboxConfig] = setting(
        factory=lambda: MappingProxyType({}),
        doc="Per job: what its unit's sandbox must also allow, for jobs whose needs phobos "
        "cannot derive (a `command` that pulls over SSH).")


def _listen_problem(text: str) -> str | None:
    from phobos.web.address import listen_problem

    return listen_problem(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebConfig:
    listen: str = setting("127.0.0.1:8470", check=_listen_problem,
                          doc="Where `phobos web` listens: `HOST:PORT` or `[IPV6]:PORT`. "
                          "Anything but loopback needs `token_file`.")
    token_file: Path | None = setting(None, doc="File holding the dashboard's access token "
                                      "(16+ characters, not world-readable); when set, every "
                                      "request must carry it.")


# --- the whole file ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    source: Path
    paths: PathsConfig
    storage: StorageConfig
    repos: Mapping[str, RepoConfig]
    hosts: Mapping[str, HostConfig]
    drives: Mapping[str, DriveConfig]
    jobs: Mapping[str, JobBase]
    notify: NotifyConfig
    systemd: SystemdConfig = setting(factory=SystemdConfig, doc="systemd units.")
    web: WebConfig | None = setting(None, doc="The read-only web dashboard.")

    def job(self, name: str) -> JobBase:
        from phobos.errors import UsageError

        if name not in self.jobs:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise UsageError(f"no job named {name!r}{suggest(name, self.jobs)}",
                             f"jobs in {self.source}: {known}")
        return self.jobs[name]


@dataclass(frozen=True, slots=True, kw_only=True)
class _TopLevel:
    paths: PathsConfig = setting(factory=PathsConfig, doc="Where phobos keeps its own files.")
    storage: StorageConfig = setting(factory=StorageConfig, doc="The backup storage.")
    repos: dict[str, RepoConfig] = setting(factory=dict, doc="Borg repositories.")
    hosts: dict[str, HostConfig] = setting(factory=dict, doc="Remote hosts to pull.")
    drives: dict[str, DriveConfig] = setting(factory=dict, doc="Off-site LUKS drives.")
    notify: NotifyConfig = setting(factory=NotifyConfig, doc="LED and e-mail.")
    systemd: SystemdConfig = setting(factory=SystemdConfig, doc="systemd units "
                                     "(`phobos systemd install`).")
    web: WebConfig | None = setting(None, doc="The read-only web dashboard (`phobos web`; "
                                    "with this table `phobos systemd` also renders "
                                    "phobos-web.service).")


def config_path(explicit: str | None) -> Path:
    """The config file: ``-c`` wins, then $PHOBOS_CONFIG, then the default."""
    return Path(explicit or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load(path: Path) -> Config:
    """Read, parse and validate ``path``. Raises ConfigError listing every problem."""
    source = _read(path)
    try:
        raw = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}",
                          hint="fix the syntax; `phobos config check` re-reads the file"
                          ) from None
    return parse(raw, path, source)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found",
                          hint=f"create it, or point -c/--config or ${CONFIG_ENV} at one; "
                          "`phobos demo` writes a complete example") from None
    except (PermissionError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None


def parse(raw: dict[str, Any], path: Path, source: str = "") -> Config:
    """Validate an already-parsed TOML document (``source`` gives line numbers)."""
    problems = Problems()
    top = build(_TopLevel, raw, (), problems, extra_keys=("jobs",))
    jobs = _build_jobs(raw.get("jobs", {}), problems)
    if top is not None:
        for table in ("repos", "hosts", "drives"):
            _check_names(getattr(top, table), table, problems)
    config = None
    if top is not None:
        config = Config(source=path, paths=top.paths, storage=top.storage,
                        repos=MappingProxyType(dict(top.repos)),
                        hosts=MappingProxyType(dict(top.hosts)),
                        drives=MappingProxyType(dict(top.drives)),
                        jobs=MappingProxyType(jobs), notify=top.notify,
                        systemd=top.systemd, web=top.web)
        for name, job in jobs.items():
            job.check_refs(config, ("jobs", name), problems)
    if problems or config is None:
        raise _config_error(path, source, problems)
    return config


def _build_jobs(raw: Any, problems: Problems) -> dict[str, JobBase]:
    """The jobs that built; problems of the others are recorded."""
    from phobos.jobs import job_config_class

    if not isinstance(raw, dict):
        problems.add(("jobs",), "expected a table of jobs, like [jobs.nightly]")
        return {}
    jobs: dict[str, JobBase] = {}
    for name, table in raw.items():
        path = ("jobs", name)
        if message := _name_problem(name):
            problems.add(path, message)
        kind = table.get("kind") if isinstance(table, dict) else None
        cls = job_config_class(kind, (*path, "kind"), problems)
        if cls is None:
            continue
        job = build(cls, table, path, problems)
        if job is not None:
            jobs[name] = job
    return jobs


def _check_names(table: Mapping[str, Any], name: str, problems: Problems) -> None:
    for key in table:
        if message := _name_problem(key):
            problems.add((name, key), message)


def _config_error(path: Path, source: str, problems: Problems) -> ConfigError:
    lines = locate_keys(source)
    located = sorted(((line_of(p.path, lines) or 0, i, p) for i, p in enumerate(problems.items)),
                     key=lambda item: item[:2])
    rendered = []
    for line, _, problem in located:
        where = f"{path}:{line}" if line else str(path)
        rendered.append(f"{where}: {problem.dotted}: {problem.message}")
    count = len(rendered)
    return ConfigError(f"{path}: {count} problem{'s' if count != 1 else ''} in the config",
                       rendered, hint="fix them and run `phobos config check`")


# --- showing a config --------------------------------------------------------------------

MASK = "********"


def to_plain(value: Any, *, mask: bool = True) -> Any:
    """JSON-ready form of a config value; fields marked secret are masked."""
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for fld in fields(value):
            item = getattr(value, fld.name)
            secret = fld.metadata.get("secret", False)
            out[fld.name] = MASK if (mask and secret and item) else to_plain(item, mask=mask)
        return out
    if isinstance(value, Mapping):
        return {k: to_plain(v, mask=mask) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_plain(v, mask=mask) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
