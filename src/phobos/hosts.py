"""Remote hosts to pull: the pull key, host-key pinning, and `phobos host add/test/rekey`.

The server holds one ed25519 *pull key* (``[paths] keys``/pull_ed25519) that clients
accept read-only through rrsync. Host keys are pinned in phobos's own known_hosts
under the host's phobos name (see :mod:`phobos.tools.ssh`). A key is pinned only
after its fingerprint was shown and confirmed; a changed key is never replaced
without the same confirmation (:func:`rekey`). Nothing here edits the config file:
:func:`add` returns the ``[hosts.NAME]`` table for the admin to paste.
"""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from phobos.config.checks import name_problem
from phobos.config.model import Config
from phobos.config.schema import suggest
from phobos.config.tables import HostConfig
from phobos.core import proc
from phobos.core.model import Outcome
from phobos.errors import PhobosError, UsageError
from phobos.tools import rsync, ssh
from phobos.tools.errors import HostUnreachable
from phobos.tools.ssh import Endpoint, HostKey

RRSYNC = "/usr/bin/rrsync"
PROBE_TIMEOUT_SECONDS = 60.0

Confirm = Callable[[Sequence[HostKey], Sequence[HostKey]], bool]
"""Asked before pinning: (keys the host offers now, keys pinned so far) -> go ahead?"""


def pull_key_path(config: Config) -> Path:
    return config.paths.keys / ssh.PULL_KEY


def known_hosts_path(config: Config) -> Path:
    return config.paths.keys / ssh.KNOWN_HOSTS


def require_host(config: Config, name: str) -> HostConfig:
    """The ``[hosts.NAME]`` table, or a UsageError with a did-you-mean."""
    if name not in config.hosts:
        known = ", ".join(sorted(config.hosts)) or "none"
        raise UsageError(f"no host named {name!r}{suggest(name, config.hosts)}",
                         f"hosts in {config.source}: {known}; `phobos host add` prints a "
                         "[hosts.NAME] table to add")
    return config.hosts[name]


def endpoint(config: Config, name: str) -> Endpoint:
    host = require_host(config, name)
    return Endpoint(name=name, address=host.address, port=host.port, user=host.user,
                    identity=host.identity or pull_key_path(config),
                    known_hosts=known_hosts_path(config))


def host_problems(host: HostConfig) -> list[tuple[tuple[str, ...], str]]:
    """Problems of one ``[hosts.NAME]`` table as (key path below it, message)."""
    found: list[tuple[tuple[str, ...], str]] = []
    if message := address_problem(host.address):
        found.append((("address",), message))
    if not 0 < host.port < 65536:
        found.append((("port",), f"{host.port} is not a TCP port (1-65535)"))
    if not host.paths:
        found.append((("paths",), "no paths to pull: list them, e.g. "
                                  "paths = [\"/etc\", \"/home\"]"))
    for index, path in enumerate(host.paths):
        if message := path_problem(path, host.rrsync_root):
            found.append((("paths", f"[{index}]"), message))
    if host.rrsync_root is not None and not host.rrsync_root.startswith("/"):
        found.append((("rrsync_root",), f"{host.rrsync_root!r} is not an absolute path"))
    return found


def address_problem(address: str) -> str | None:
    if not address or address.startswith("-") or any(c.isspace() or c in "@/'\""
                                                      for c in address):
        return f"{address!r} is not a host name or IP address"
    return None


def path_problem(path: str, root: str | None) -> str | None:
    """Why ``path`` cannot be pulled (given the host's rrsync root), or None."""
    if not path.startswith("/"):
        return f"{path!r} is not an absolute path on the host"
    if ".." in PurePosixPath(path).parts:
        return f"{path!r} contains '..'"
    if root is not None and root.startswith("/"):
        try:
            rsync.remote_sources([path], root)
        except ValueError:
            return (f"{path!r} is outside rrsync_root {root!r}: the host's rrsync would "
                    "refuse it")
    return None


# --- the pull key and host keys --------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PullKey:
    path: Path
    public: str
    created: bool


def ensure_pull_key(path: Path, comment: str | None = None) -> PullKey:
    """The key at ``path``, created (ed25519, no passphrase: it must work unattended)
    if missing; ``comment`` defaults to ``phobos-pull@HOSTNAME``."""
    created = False
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        comment = comment or f"phobos-pull@{socket.gethostname()}"
        proc.run(ssh.keygen_argv(path, comment), timeout=PROBE_TIMEOUT_SECONDS)
        created = True
    try:
        public = path.with_name(path.name + ".pub").read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise PhobosError(f"cannot read the public half of the pull key {path}: {exc}",
                          "recreate it: move the key away and run `phobos host add` (or, "
                          "for a repository's key, `phobos repo trust`) again"
                          ) from None
    return PullKey(path=path, public=public, created=created)


def scan(ep: Endpoint) -> list[HostKey]:
    """The host keys ``ep`` offers now. Raises HostUnreachable when none answer."""
    result = proc.run(ssh.keyscan_argv(ep.address, ep.port), capture=True, check=False,
                      timeout=PROBE_TIMEOUT_SECONDS)
    keys = ssh.parse_keys(result.stdout)
    if keys:
        return keys
    # ssh-keyscan is silent about why; one ssh attempt names the reason.
    probe = _ssh_probe(ep)
    found = ssh.diagnose(probe.tail, ep)
    if isinstance(found, HostUnreachable):
        raise found
    raise ssh.unreachable(ep, "ssh-keyscan received no host key")


def _ssh_probe(ep: Endpoint) -> proc.Result:
    """``ssh HOST true``, every exit code accepted: 255 means ssh itself failed."""
    return proc.run(ssh.ssh_argv(ep, "true"), ok_codes=range(256), check=False,
                    timeout=PROBE_TIMEOUT_SECONDS)


def _confirmed(confirm: Confirm, new: Sequence[HostKey], old: Sequence[HostKey],
               name: str) -> None:
    if not confirm(new, old):
        raise UsageError(f"the host key of {name} was not pinned",
                         "check the fingerprint on the host, then confirm (or pass --yes)")


# --- host add ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AddRequest:
    name: str
    address: str
    port: int = 22
    user: str = "root"
    paths: tuple[str, ...] = ()
    root: str = "/"


@dataclass(frozen=True, slots=True, kw_only=True)
class AddResult:
    request: AddRequest
    keys: tuple[HostKey, ...]
    newly_pinned: bool
    pull_key: PullKey
    known_hosts: Path
    authorized_keys: str
    snippet: str

    def as_json(self) -> dict[str, Any]:
        req = self.request
        return {"name": req.name, "address": req.address, "port": req.port,
                "user": req.user, "paths": list(req.paths), "rrsync_root": req.root,
                "host_keys": [{"type": k.type, "fingerprint": k.fingerprint}
                              for k in self.keys],
                "newly_pinned": self.newly_pinned, "known_hosts": str(self.known_hosts),
                "pull_key": str(self.pull_key.path), "pull_key_created": self.pull_key.created,
                "public_key": self.pull_key.public, "authorized_keys": self.authorized_keys,
                "config": self.snippet}


def _check_request(req: AddRequest) -> None:
    problems = [m for m in (name_problem(req.name), address_problem(req.address)) if m]
    if not 0 < req.port < 65536:
        problems.append(f"{req.port} is not a TCP port (1-65535)")
    if not req.root.startswith("/") or any(c.isspace() or c in "\"'\\" for c in req.root):
        problems.append(f"--root {req.root!r} must be an absolute path without spaces "
                        "or quotes (it goes into authorized_keys)")
    else:
        problems += [m for p in req.paths if (m := path_problem(p, req.root))]
    if problems:
        raise UsageError("; ".join(problems), "see `phobos host add --help`")


def add(config: Config, req: AddRequest, confirm: Confirm) -> AddResult:
    """Create or reuse the pull key, pin ``req``'s host key after ``confirm``, and
    return the authorized_keys line and config table to add. A host whose pinned key
    differs from the offered one is refused (that is :func:`rekey`'s job)."""
    _check_request(req)
    key = ensure_pull_key(pull_key_path(config))
    known = known_hosts_path(config)
    ep = Endpoint(name=req.name, address=req.address, port=req.port, user=req.user,
                  identity=key.path, known_hosts=known)
    offered = scan(ep)
    old = ssh.pinned(known, req.name)
    newly = not old
    if old and not set(old) & set(offered):
        error = ssh.key_changed(ep, old, ", ".join(k.describe() for k in offered))
        raise UsageError(error.message, error.hint)
    if newly:
        _confirmed(confirm, offered, old, req.name)
        ssh.pin(known, req.name, offered)
    return AddResult(request=req, keys=tuple(offered), newly_pinned=newly, pull_key=key,
                     known_hosts=known, authorized_keys=authorized_keys_line(key, req.root),
                     snippet=config_snippet(req))


def authorized_keys_line(key: PullKey, root: str) -> str:
    """The read-only line for the client's ``~/.ssh/authorized_keys``."""
    return f'command="{RRSYNC} -ro {root}",restrict {key.public}'


def config_snippet(req: AddRequest) -> str:
    """The ``[hosts.NAME]`` table (and a pull job) for the admin to add to the config."""
    lines = [f"[hosts.{req.name}]", f"address = {json.dumps(req.address)}"]
    if req.port != 22:
        lines.append(f"port = {req.port}")
    if req.user != "root":
        lines.append(f"user = {json.dumps(req.user)}")
    if req.paths:
        lines.append(f"paths = {json.dumps(list(req.paths))}")
    else:
        lines.append('paths = []  # the remote paths to pull, e.g. ["/etc", "/home"]')
    lines += [f"rrsync_root = {json.dumps(req.root)}", "",
              f"[jobs.pull-{req.name}]", 'kind = "pull"', f"host = {json.dumps(req.name)}"]
    return "\n".join(lines) + "\n"


# --- host rekey -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RekeyResult:
    name: str
    old: tuple[HostKey, ...]
    new: tuple[HostKey, ...]
    changed: bool

    def as_json(self) -> dict[str, Any]:
        def keys(found: Sequence[HostKey]) -> list[dict[str, str]]:
            return [{"type": k.type, "fingerprint": k.fingerprint} for k in found]

        return {"name": self.name, "changed": self.changed, "old": keys(self.old),
                "new": keys(self.new)}


def rekey(config: Config, name: str, confirm: Confirm) -> RekeyResult:
    """Pin the key ``name`` offers now in place of the old one, after ``confirm``.
    Nothing is written when the pinned key still matches."""
    ep = endpoint(config, name)
    offered = scan(ep)
    old = ssh.pinned(ep.known_hosts, name)
    if old and set(old) & set(offered):
        return RekeyResult(name=name, old=tuple(old), new=tuple(offered), changed=False)
    _confirmed(confirm, offered, old, name)
    ssh.pin(ep.known_hosts, name, offered)
    return RekeyResult(name=name, old=tuple(old), new=tuple(offered), changed=True)


# --- host test --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "hint": self.hint}


@dataclass(slots=True)
class _Checks:
    items: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str, hint: str | None = None) -> bool:
        self.items.append(Check(name=name, ok=ok, detail=detail, hint=hint))
        return ok

    def fail(self, name: str, error: PhobosError) -> bool:
        return self.add(name, False, error.message, error.hint)


def check_host(config: Config, name: str) -> list[Check]:
    """Reachability, host key, login, each path, and that the key cannot write.
    Stops at the first check the later ones depend on."""
    host = require_host(config, name)
    ep = endpoint(config, name)
    checks = _Checks()
    if _reach_and_key(ep, checks) and _login(ep, checks):
        sources, _ = rsync.remote_sources(host.paths, host.rrsync_root)
        for path, source in zip(host.paths, sources, strict=True):
            _path_readable(ep, path, source, checks)
        _read_only(ep, sources[0] if sources else ".", checks)
    return checks.items


def _reach_and_key(ep: Endpoint, checks: _Checks) -> bool:
    try:
        offered = scan(ep)
    except HostUnreachable as exc:
        return checks.fail("reachable", exc)
    checks.add("reachable", True, f"sshd answers at {ep.where}")
    old = ssh.pinned(ep.known_hosts, ep.name)
    if not old:
        return checks.fail("host key", ssh.key_unknown(ep))
    if not set(old) & set(offered):
        offers = ", ".join(k.describe() for k in offered)
        return checks.fail("host key", ssh.key_changed(ep, old, offers))
    match = sorted(set(old) & set(offered))[0]
    return checks.add("host key", True, f"matches the pinned {match.describe()}")


def _login(ep: Endpoint, checks: _Checks) -> bool:
    if not ep.identity.exists():
        return checks.add("login", False, f"the pull key {ep.identity} does not exist",
                          f"run `phobos host add {ep.name} {ep.address}` to create it")
    probe = _ssh_probe(ep)
    if probe.returncode != 255:
        return checks.add("login", True, f"logged in as {ep.user} with {ep.identity}")
    error = ssh.diagnose(probe.tail, ep)
    if error is None:
        return checks.add("login", False, "ssh failed: " + _last_error(probe))
    return checks.fail("login", error)


def _path_readable(ep: Endpoint, path: str, source: str, checks: _Checks) -> bool:
    result = proc.run(rsync.list_argv(ep.login, ssh.rsh(ep), source), capture=True,
                      check=False, timeout=PROBE_TIMEOUT_SECONDS)
    if result.outcome is Outcome.SUCCESS:
        return checks.add(f"path {path}", True, "readable")
    return checks.add(f"path {path}", False,
                      f"cannot read it (rsync exit {result.returncode}): "
                      + _last_error(result, first=True),
                      "check that the path exists on the host and lies under its rrsync "
                      "root")


def _read_only(ep: Endpoint, target: str, checks: _Checks) -> bool:
    with tempfile.TemporaryDirectory(prefix="phobos-probe-") as empty:
        dest = f"{target.rstrip('/')}/.phobos-write-probe/" if target != "." else \
            ".phobos-write-probe/"
        result = proc.run(rsync.write_probe_argv(ep.login, ssh.rsh(ep), Path(empty), dest),
                          check=False, timeout=PROBE_TIMEOUT_SECONDS)
    if result.returncode == 0:
        return checks.add("read-only", False,
                          "the key can WRITE to the host: a (dry-run) push was accepted",
                          f"restrict it on {ep.name}: use the authorized_keys line printed "
                          "by `phobos host add` (command=\"/usr/bin/rrsync -ro ROOT\","
                          "restrict)")
    if result.returncode == 255:
        return checks.add("read-only", False, "could not check: " + _last_error(result))
    return checks.add("read-only", True,
                      f"a write was refused ({_last_error(result, first=True)})")


def _last_error(result: proc.Result, first: bool = False) -> str:
    errors = [line.removeprefix("stderr: ") for line in result.tail
              if line.startswith("stderr: ")]
    if not errors:
        return f"exit code {result.returncode}"
    return errors[0] if first else errors[-1]
