"""Repositories on another machine (``[repos.NAME] url = "ssh://..."``), reached by
Borg's own client/server protocol over SSH: ``borg serve`` on the server, started by
ssh with phobos's own key for the repository and the server's pinned host key.

- The key: ``KEYS/repo-NAME_ed25519`` (or the table's ``identity``), one per repository,
  so that the server's authorized_keys can tie each key to one repository
  (``borg serve --restrict-to-repository PATH``; the first line matching a key wins).
- The host key: pinned in phobos's known_hosts under ``repo:NAME`` by
  ``phobos repo trust`` with the same rules as ``phobos host add``: shown and confirmed
  first, a changed key refused (``--rekey`` accepts it after the same confirmation).
- Every Borg command gets ``BORG_RSH`` (ssh with the key, the pin, no prompts, a dead
  link detected within a minute) and ``BORG_REMOTE_PATH``.

Nothing here edits the server: :func:`trust` returns the authorized_keys line.
"""

from __future__ import annotations

import getpass
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phobos.config.model import Config
from phobos.config.tables import RepoConfig
from phobos.core import proc
from phobos.core.proc import StepRunner
from phobos.core.step import Step
from phobos.errors import PhobosError, StepFailed, UsageError
from phobos.repos.errors import RemoteAccessFailed
from phobos.tools import ssh
from phobos.tools.errors import SshFailure
from phobos.tools.ssh import Endpoint, HostKey, SshUrl

if TYPE_CHECKING:
    from phobos.hosts import Confirm

PROBE_TIMEOUT_SECONDS = 60.0


def remote_of(config: Config, name: str) -> SshUrl:
    """The URL parts of remote repository ``name``; UsageError for a local one."""
    url = config.repos[name].remote
    if url is None:
        raise UsageError(f"repository {name} is on this machine (it has a `path`, not a "
                         "`url`)", "`phobos repo trust` is for repositories reached over "
                         "SSH: url = \"ssh://user@host/path\"")
    return url


def key_path(config: Config, name: str) -> Path:
    """phobos's SSH key for repository ``name``."""
    return ssh.repo_key(config.paths.keys, name, config.repos[name].identity)


def endpoint(config: Config, name: str) -> Endpoint:
    """Where Borg logs in for remote repository ``name``."""
    url = remote_of(config, name)
    return Endpoint(name=name, address=url.host, port=url.port,
                    user=url.user or getpass.getuser(), identity=key_path(config, name),
                    known_hosts=config.paths.keys / ssh.KNOWN_HOSTS, repo=True)


def borg_env(config: Config, name: str) -> dict[str, str]:
    """``BORG_RSH`` and ``BORG_REMOTE_PATH`` for remote repository ``name``. Borg
    splits BORG_RSH like a shell and adds ``-p PORT user@host`` itself."""
    repo = config.repos[name]
    return {"BORG_RSH": ssh.rsh(endpoint(config, name)), "BORG_REMOTE_PATH": repo.remote_path}


def link_of(repo: RepoConfig) -> str | None:
    """The network link a remote repository is reached over (None: on this machine)."""
    url = repo.remote
    if url is None:
        return None
    return repo.link or url.host


def serve_command(repo: RepoConfig) -> str:
    """The forced command for the server's authorized_keys."""
    url = repo.remote
    assert url is not None
    append = " --append-only" if repo.append_only else ""
    return (f"{repo.remote_path} serve{append} --restrict-to-repository "
            f"{url.server_path}")


def authorized_keys_line(repo: RepoConfig, public_key: str) -> str:
    """The line for the server: this key may only run ``borg serve`` on this one
    repository (append-only unless ``append_only = false``), nothing else (``restrict``:
    no pty, no forwarding)."""
    return f'command="{serve_command(repo)}",restrict {public_key}'


# --- phobos repo trust ------------------------------------------------------------------

@dataclass(frozen=True, slots=True, kw_only=True)
class TrustResult:
    name: str
    endpoint: Endpoint
    keys: tuple[HostKey, ...]
    old: tuple[HostKey, ...]
    newly_pinned: bool
    key: Path
    key_created: bool
    public_key: str
    authorized_keys: str

    def as_json(self) -> dict[str, Any]:
        def keys(found: Sequence[HostKey]) -> list[dict[str, str]]:
            return [{"type": k.type, "fingerprint": k.fingerprint} for k in found]

        return {"name": self.name, "server": self.endpoint.where,
                "user": self.endpoint.user, "host_keys": keys(self.keys),
                "old_host_keys": keys(self.old), "newly_pinned": self.newly_pinned,
                "known_hosts": str(self.endpoint.known_hosts), "key": str(self.key),
                "key_created": self.key_created, "public_key": self.public_key,
                "authorized_keys": self.authorized_keys}


def trust(config: Config, name: str, confirm: Confirm, *, rekey: bool = False) -> TrustResult:
    """Create or reuse the repository's key, pin its server's host key after
    ``confirm``, and return the authorized_keys line. A pinned key that no longer
    matches is refused unless ``rekey`` (then replaced after the same confirmation)."""
    from phobos.hosts import ensure_pull_key, scan  # hosts and their keys: only here

    ep = endpoint(config, name)
    key = ensure_pull_key(ep.identity, comment=f"phobos-repo-{name}@{socket.gethostname()}")
    offered = scan(ep)
    old = ssh.pinned(ep.known_hosts, ep.alias)
    matches = bool(set(old) & set(offered))
    if old and not matches and not rekey:
        error = ssh.key_changed(ep, old, ", ".join(k.describe() for k in offered))
        raise UsageError(error.message, error.hint)
    if not matches:
        if not confirm(offered, old):
            raise UsageError(f"the host key of {ep.noun} was not pinned",
                             "check the fingerprint on the server, then confirm (or pass "
                             "--yes)")
        ssh.pin(ep.known_hosts, ep.alias, offered)
    return TrustResult(name=name, endpoint=ep, keys=tuple(offered), old=tuple(old),
                       newly_pinned=not matches, key=key.path, key_created=key.created,
                       public_key=key.public,
                       authorized_keys=authorized_keys_line(config.repos[name], key.public))


# --- telling SSH failures from Borg's ---------------------------------------------------

# Borg's exit codes when the connection failed or broke (legacy Borg: the generic 2);
# ssh's own words are often lost: Borg stops reading once the connection closes.
CONNECTION_CODES = frozenset({2, 80, 81, 87})


def probe(ep: Endpoint) -> SshFailure | None:
    """Why SSH to the repository's server fails (unreachable, host key unknown or
    changed, phobos's key refused), or None when a login works."""
    from phobos.hosts import scan

    try:
        offered = scan(ep)
    except SshFailure as exc:
        return exc
    old = ssh.pinned(ep.known_hosts, ep.alias)
    if not old:
        return ssh.key_unknown(ep)
    if not set(old) & set(offered):
        return ssh.key_changed(ep, old, ", ".join(k.describe() for k in offered))
    # The forced command (borg serve) reads EOF on stdin and ends: a login test.
    login = proc.run(ssh.ssh_argv(ep, "true"), ok_codes=range(256), check=False,
                     timeout=PROBE_TIMEOUT_SECONDS)
    if login.returncode == 255:
        return ssh.diagnose(login.tail, ep)
    return None


def diagnosed(run: StepRunner, ep: Endpoint) -> StepRunner:
    """``run``, but when a Borg step fails the way a lost or refused connection does,
    the server is probed (:func:`probe`) and an SSH failure found is raised as
    :class:`~phobos.repos.errors.RemoteAccessFailed` with its own message and hint."""

    def run_diagnosed(step: Step) -> proc.Result:
        try:
            return run(step)
        except StepFailed as exc:
            if not _connection_failure(exc.message):
                raise
            found = probe(ep)
            if found is None:
                raise
            raise RemoteAccessFailed(f"step {step.name}: {found.message}",
                                     found.hint) from None

    return run_diagnosed


_EXIT = re.compile(r"failed with exit code (\d+)")


def _connection_failure(message: str) -> bool:
    """Whether a failed step's message (:func:`phobos.core.proc.failure`) names one of
    the exit codes of a failed connection."""
    match = _EXIT.search(message)
    return match is not None and int(match.group(1)) in CONNECTION_CODES


def require_key(ep: Endpoint) -> None:
    """Refuse early, with the fix, when the repository's key does not exist."""
    if not ep.identity.exists():
        raise PhobosError(f"the SSH key {ep.identity} for {ep.noun} does not exist",
                          f"run `{ep.command('pin')}`: it creates the key, pins the "
                          "server's host key and prints the line for its authorized_keys")
