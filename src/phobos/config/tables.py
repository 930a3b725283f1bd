"""The tables of the configuration file other than jobs ([paths], [storage], [repos.NAME],
[hosts.NAME], [drives.NAME], [notify], [systemd], [web]) as frozen dataclasses. Each
field's ``setting`` carries its default, its documentation and its check."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from phobos.config.checks import (
    device_problem,
    events_problem,
    http_url_problem,
    http_urls_problem,
    led_limit_problem,
    listen_problem,
    one_of,
    positive,
    ssh_url_problem,
    user_problem,
    uuid_problem,
)
from phobos.config.schema import Duration, setting

if TYPE_CHECKING:
    from phobos.tools.ssh import SshUrl

DEFAULT_LED_LIMIT = 50


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
    device: str | None = setting(None, check=device_problem,
                                 doc="Optional device (`UUID=...`, `LABEL=...`, "
                                 "`PARTUUID=...`, `PARTLABEL=...` or `/dev/...`) mounted on "
                                 "`root` only inside the backup mount namespace.")


@dataclass(frozen=True, slots=True, kw_only=True)
class RepoConfig:
    path: Path | None = setting(None, doc="The Borg repository on this machine (give "
                                "`path` or `url`, not both).")
    url: str | None = setting(None, check=ssh_url_problem,
                              doc="A repository on another machine, reached by Borg over "
                              "SSH: `\"ssh://user@host[:port]/path\"` (`/~/x`: x in the "
                              "login's home). `phobos repo trust NAME` pins the server's "
                              "host key and prints its authorized_keys line; see "
                              "docs/offsite.md.")
    identity: Path | None = setting(None, doc="SSH key for `url` (default "
                                    "`KEYS/repo-NAME_ed25519`, created by `phobos repo "
                                    "trust`).")
    remote_path: str = setting("borg", doc="The Borg program on the server of `url` "
                               "(`--remote-path`; rsync.net: `borg1`); also used in the "
                               "authorized_keys line `phobos repo trust` prints.",
                               check=lambda v: None if v and not any(
                                   c.isspace() or c in "\"'\\" for c in v)
                               else "name a program, without spaces or quotes")
    append_only: bool = setting(True, doc="The key phobos uses for `url` is append-only "
                                "(as in the line `phobos repo trust` prints): prune then only "
                                "hides archives and compact frees nothing, so archive jobs "
                                "skip `borg compact`; space is freed by a compact on the "
                                "server (docs/offsite.md).")
    link: str | None = setting(None, doc="The network link `url` is reached over: jobs "
                               "using the same link never transfer at once (resource "
                               "`net:LINK`). Default: the server's host name.")
    passcommand: str | None = setting(None, doc="Command printing the passphrase "
                                      "(handed to Borg as BORG_PASSCOMMAND).")
    passphrase_file: Path | None = setting(None, doc="File holding the passphrase "
                                           "(handed to Borg through a pipe).")
    encryption: str = setting("repokey-blake2", doc="Encryption mode for `phobos repo init`.",
                              check=lambda v: one_of(v, (
                                  "repokey-blake2", "repokey", "keyfile-blake2", "keyfile",
                                  "authenticated-blake2", "authenticated", "none")))
    compression: str = setting("zstd,3", doc="Borg compression spec.")
    base_dir: Path | None = setting(None, doc="BORG_BASE_DIR (keys, cache, security); "
                                    "default: Borg's own (root's home).")
    lock_wait: Duration = setting(Duration(86400.0), check=positive,
                                  doc="How long to wait for Borg's own lock when a process "
                                  "outside phobos holds it (jobs of phobos never wait in "
                                  "Borg: phobos's repo lock orders them).")

    @property
    def remote(self) -> SshUrl | None:
        """The parts of ``url`` (None for a repository on this machine)."""
        from phobos.tools.ssh import parse_ssh_url  # only where a repository is remote

        return None if self.url is None else parse_ssh_url(self.url)

    @property
    def location(self) -> str:
        """What Borg is given: the path, or the ``ssh://`` URL."""
        return self.url if self.url is not None else str(self.path)

    def table_problems(self) -> list[tuple[tuple[str, ...], str]]:
        """Problems between the table's keys, as (key path below it, message)."""
        if (self.path is None) == (self.url is None):
            return [((), "give the repository either a `path` (on this machine) or a "
                     "`url` (ssh://user@host/path on another one), not both or neither")]
        return []


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    address: str = setting(doc="DNS name or IP address of the host to pull.")
    port: int = setting(22, doc="SSH port.")
    user: str = setting("root", check=user_problem, doc="Remote user (a login name: "
                        "letters, digits, `_`, `.` and `-`, not starting with `-`).")
    identity: Path | None = setting(None, doc="SSH private key (default: phobos's pull key).")
    paths: tuple[str, ...] = setting(factory=tuple, doc="Remote paths to pull.")
    exclude: tuple[str, ...] = setting(factory=tuple, doc="rsync exclude patterns.")
    bwlimit: str | None = setting(None, doc="rsync --bwlimit, e.g. `\"5m\"`.")
    rrsync_root: str | None = setting(None, doc="The client's rrsync root, if its key is "
                                      "restricted with rrsync (paths are then relative).")
    rsync_options: tuple[str, ...] = setting(factory=tuple, doc="Extra rsync options.")


@dataclass(frozen=True, slots=True, kw_only=True)
class DriveConfig:
    luks_uuid: str = setting(check=uuid_problem, doc="UUID of the LUKS header (`cryptsetup "
                             "luksUUID DEV`); with `unlock = \"none\"` the UUID of the "
                             "filesystem on the device.")
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
                          check=lambda v: one_of(v, ("none", "blinkstick", "command", "file")))
    index: int = setting(1, doc="BlinkStick LED index (the Nano's second LED is 1).")
    limit: int | Mapping[str, int] = setting(
        DEFAULT_LED_LIMIT, check=led_limit_problem,
        doc="Brightness limit 0-100, as the blinkstick CLI's --limit; or one per colour, "
        "e.g. `{ blue = 10, yellow = 10, green = 10, red = 50 }` (the original setup's: "
        f"dim while working and green, brighter red); a colour left out gets "
        f"{DEFAULT_LED_LIMIT}.")
    path: Path | None = setting(None, doc="State file for the `file` driver.")
    command: tuple[str, ...] = setting(factory=tuple,
                                       doc="argv for the `command` driver; `{color}` is replaced "
                                       "by off, blue, yellow, green or red, `{hex}` by RRGGBB, "
                                       "`{limit}` by the colour's `limit`.")
    clear_on_success: bool = setting(False, doc="A later success of the failed job clears red "
                                     "(and any recorded run clears a history problem's).")

    def __post_init__(self) -> None:
        if isinstance(self.limit, Mapping):  # the TOML table, frozen like the rest
            object.__setattr__(self, "limit", MappingProxyType(dict(self.limit)))

    def limit_of(self, colour: str) -> int:
        """The brightness limit (0-100) for one colour (``red``, ``green`` …)."""
        if isinstance(self.limit, Mapping):
            return self.limit.get(colour, DEFAULT_LED_LIMIT)
        return self.limit


def _empty_urls() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class EmailConfig:
    to: tuple[str, ...] = setting(("root",), doc="Recipients.",
                                  check=lambda v: None if v else "name at least one recipient")
    sender: str | None = setting(None, doc="From address (default phobos@HOSTNAME).")
    transport: str = setting("smtp", doc="`smtp` (to `host`) or `sendmail` (the local MTA).",
                             check=lambda v: one_of(v, ("smtp", "sendmail")))
    sendmail: tuple[str, ...] = setting(("/usr/sbin/sendmail", "-t", "-oi"),
                                        doc="argv of the local MTA; the message goes to its "
                                        "stdin with the recipients in its headers.",
                                        check=lambda v: None if v else "name a program")
    host: str = setting("localhost", doc="SMTP server.")
    port: int = setting(25, doc="SMTP port (submission: 587 with starttls, 465 with tls).")
    security: str = setting("none", doc="`none`, `starttls` or `tls`.",
                            check=lambda v: one_of(v, ("none", "starttls", "tls")))
    ca_file: Path | None = setting(None, doc="CA certificate(s) to verify the SMTP server "
                                   "with (default: the system's CAs).")
    username: str | None = setting(None, doc="SMTP login (needs starttls or tls).")
    password_file: Path | None = setting(None, doc="File holding the SMTP password.")
    password_command: str | None = setting(None, doc="Command printing the SMTP password "
                                           "(split like a shell would, run without one).")
    timeout: Duration = setting(Duration(30.0), check=positive,
                                doc="Give up on the SMTP server after this long.")
    events: tuple[str, ...] = setting(("failure",), check=events_problem,
                                      doc="Events that send mail: failure (includes "
                                      "interrupted), warning, success, skipped, overdue.")


@dataclass(frozen=True, slots=True, kw_only=True)
class AppriseConfig:
    urls: tuple[str, ...] = setting(secret=True, check=lambda v: None if v else "name a URL",
                                    doc="Apprise URLs (ntfy://, gotify://, tgram://, ...).")
    events: tuple[str, ...] = setting(("failure",), check=events_problem,
                                      doc="Events that notify, as for e-mail.")


@dataclass(frozen=True, slots=True, kw_only=True)
class PingConfig:
    url: str | None = setting(None, secret=True, check=http_url_problem,
                              doc="Base URL: every job pings URL/JOB (healthchecks.io slug "
                              "URLs, e.g. https://hc-ping.com/PING_KEY).")
    jobs: Mapping[str, str] = setting(factory=_empty_urls, secret=True, check=http_urls_problem,
                                      doc="Check URL per job, e.g. { nightly = "
                                      "\"https://hc-ping.com/UUID\" }; wins over `url`.")
    send_log: bool = setting(True, doc="POST the log tail with the success and fail pings.")
    timeout: Duration = setting(Duration(10.0), check=positive,
                                doc="Give up on a ping after this long.")


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyConfig:
    led: LedConfig = setting(factory=LedConfig, doc="The BlinkStick LED.")
    email: EmailConfig | None = setting(None, doc="E-mail on failure.")
    apprise: AppriseConfig | None = setting(None, doc="Apprise notifications.")
    ping: PingConfig | None = setting(None, doc="Dead man's switch pings (healthchecks.io).")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class WebConfig:
    listen: str = setting("127.0.0.1:8470", check=listen_problem,
                          doc="Where `phobos web` listens: `HOST:PORT` or `[IPV6]:PORT`. "
                          "Anything but loopback needs `token_file`.")
    token_file: Path | None = setting(None, doc="File holding the dashboard's access token "
                                      "(16+ characters, not world-readable); when set, every "
                                      "request must carry it.")
