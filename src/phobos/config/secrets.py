"""The one registry of the secrets a config names: the files that hold keys, passphrases,
passwords and tokens (:func:`secret_files`), and the secret values phobos can know in
advance (:func:`secret_values`), which :func:`redactor` turns into the
:class:`~phobos.core.proc.Redactor` every output path uses: run logs, history, mail,
Apprise and pings, the web, notifier error messages.

Known in advance: the contents of every secret file phobos can read (repository
passphrase files, the file a ``cat FILE`` passcommand reads, the SMTP password file, the
web token, keyfiles and SSH keys that are text), the Apprise URLs and ping URLs (with the
parts that carry their tokens), and the ``secret_env`` values of every job. Not knowable:
what a ``passcommand`` or ``password_command`` other than ``cat FILE`` prints — phobos
never runs it except to hand its output to Borg or the SMTP server; a job that prints it
has it redacted only if the same value is also in one of the places above.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from phobos.config.model import Config
from phobos.core.model import JobKind
from phobos.core.proc import Redactor
from phobos.tools.rclone import config_path as rclone_config_path
from phobos.tools.rclone import config_secrets as rclone_config_secrets
from phobos.tools.ssh import PULL_KEY, repo_key

KEYFILE_SUFFIX = ".key"
HEADER_SUFFIX = ".luks-header"
# Secret files larger than this are not read for redaction (a keyfile is 4 KiB at most).
READ_LIMIT = 64 * 1024
# URL parts shorter than this are not redacted on their own (a path like "/v1" is no
# secret; a token is longer).
URL_PART_MIN = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class Secret:
    """A file holding a secret: which setting names it, and whether it must exist."""

    label: str
    path: Path
    required: bool = True


def drive_keyfile(config: Config, name: str) -> Path | None:
    """The keyfile of drive ``name``: its ``keyfile``, else ``KEYS/NAME.key``; None for
    ``unlock = "none"``."""
    drive = config.drives[name]
    if drive.unlock == "none":
        return None
    return drive.keyfile or config.paths.keys / f"{name}{KEYFILE_SUFFIX}"


def drive_header_backup(config: Config, name: str) -> Path:
    return config.paths.keys / f"{name}{HEADER_SUFFIX}"


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


def command_paths(command: str | None) -> list[Path]:
    """Absolute paths among the arguments of a pass/password command (what it may read)."""
    try:
        words = shlex.split(command or "")
    except ValueError:
        return []
    return [Path(word) for word in words[1:] if word.startswith("/")]


def secret_files(config: Config) -> list[Secret]:
    """Every file the config names (or implies) that holds a key, passphrase or token."""
    found = []
    for name, repo in sorted(config.repos.items()):
        if repo.passphrase_file is not None:
            found.append(Secret(label=f"repo {name} passphrase", path=repo.passphrase_file))
        if (catted := passcommand_file(repo.passcommand)) is not None:
            found.append(Secret(label=f"repo {name} passcommand", path=catted))
    for name in sorted(config.drives):
        keyfile = drive_keyfile(config, name)
        if keyfile is not None:
            found.append(Secret(label=f"drive {name} keyfile", path=keyfile))
            found.append(Secret(label=f"drive {name} header",
                                path=drive_header_backup(config, name), required=False))
    email = config.notify.email
    if email is not None and email.password_file is not None:
        found.append(Secret(label="email password", path=email.password_file))
    if email is not None and (catted := passcommand_file(email.password_command)):
        found.append(Secret(label="email password_command", path=catted))
    if config.web is not None and config.web.token_file is not None:
        found.append(Secret(label="web token", path=config.web.token_file))
    found.append(Secret(label="pull key", path=config.paths.keys / PULL_KEY,
                        required=bool(config.hosts)))
    for name, host in sorted(config.hosts.items()):
        if host.identity is not None:
            found.append(Secret(label=f"host {name} identity", path=host.identity))
    return found + offsite_files(config)


def rclone_configs(config: Config) -> dict[Path, list[str]]:
    """rclone's config file of each cloud-sync job (its own ``rclone_config`` or
    KEYS/rclone.conf) -> the jobs using it."""
    found: dict[Path, list[str]] = {}
    for name, job in sorted(config.jobs.items()):
        if job.kind is JobKind.CLOUD_SYNC:
            path = rclone_config_path(config.paths.keys, getattr(job, "rclone_config", None))
            found.setdefault(path, []).append(name)
    return found


def offsite_files(config: Config) -> list[Secret]:
    """phobos's SSH key of each repository on a server; rclone's config file of the
    cloud copies (its credentials; not required where every copy goes to a local path)."""
    found = [Secret(label=f"repo {name} ssh key",
                    path=repo_key(config.paths.keys, name, repo.identity))
             for name, repo in sorted(config.repos.items()) if repo.url is not None]
    for path, jobs in rclone_configs(config).items():
        remotes = [getattr(config.jobs[job], "remote", "") for job in jobs]
        found.append(Secret(label=f"job {jobs[0]} rclone config", path=path,
                            required=any(not r.startswith("/") for r in remotes)))
    return found


def secret_urls(config: Config) -> list[str]:
    """Apprise and ping URLs: each carries a token or a password."""
    notify = config.notify
    urls = list(notify.apprise.urls) if notify.apprise is not None else []
    if notify.ping is not None:
        urls += [notify.ping.url] if notify.ping.url else []
        urls += list(notify.ping.jobs.values())
    return urls


def url_parts(url: str) -> list[str]:
    """The parts of ``url`` that may carry its secret on their own (a log line may show
    them in another URL): the password, and the user, path segments, query values and
    host that look like tokens (:func:`token_like`)."""
    try:
        parts = urlsplit(url)
        values = [parts.username, *parts.path.split("/"),
                  *(value for _, value in parse_qsl(parts.query))]
        password = parts.password
    except ValueError:
        return []
    found = [password] if password and len(password) >= 4 else []
    found += [v for v in values if v and token_like(v)]
    # Apprise URLs put tokens where the host goes, too (tgram://BOT_TOKEN/CHAT_ID); a
    # host name with an optional port is no secret.
    host = parts.netloc.rpartition("@")[2]
    if token_like(host) and not _HOST.fullmatch(host):
        found.append(host)
    return found


_HOST = re.compile(r"[\w.-]+(:\d+)?|\[[0-9A-Fa-f:.]+\](:\d+)?")


def token_like(text: str) -> bool:
    """Long enough and odd enough to be a token rather than a word of the URL's own
    (``notifications``, ``localhost``): at least :data:`URL_PART_MIN` characters with a
    digit, or twice that."""
    return len(text) >= URL_PART_MIN and (len(text) >= 2 * URL_PART_MIN
                                          or any(c.isdigit() for c in text))


def _file_values(path: Path) -> list[str]:
    """The secret in a file as it may show up in output: the whole text, and each long
    line of a multi-line one (a key printed line by line). Nothing for a file phobos
    cannot read or that is not text (a LUKS keyfile of random bytes)."""
    with contextlib.suppress(OSError, UnicodeDecodeError):
        with path.open("rb") as handle:
            data = handle.read(READ_LIMIT)
        text = data.decode("utf-8")
        lines = [line.strip() for line in text.splitlines()]
        return [text, *(line for line in lines if len(line) >= 16 and len(lines) > 1)]
    return []


def secret_values(config: Config) -> list[str]:
    """Every secret value phobos can know for ``config`` (see the module docstring)."""
    values: list[str] = []
    for secret in secret_files(config):
        values += _file_values(secret.path)
    for url in secret_urls(config):
        values += [url, *url_parts(url)]
    for job in config.jobs.values():
        values += job.secret_values()
    for path in rclone_configs(config):  # the credentials themselves, value by value
        values += rclone_config_secrets(path)
    return values


def redactor(config: Config, extra: Iterable[str] = ()) -> Redactor:
    """A Redactor for every secret of ``config`` (plus ``extra``)."""
    return Redactor([*secret_values(config), *extra])
