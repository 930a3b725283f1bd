"""A booted systemd for system tests: a cached Debian 12 rootfs run with systemd-nspawn.

- :func:`rootfs_tarball` builds the rootfs once with mmdebstrap (about 20 s) and caches it
  as a tarball outside the repository (``/var/cache/phobos-test``, or
  ``$PHOBOS_TEST_CACHE``); a fresh CI clone on the same machine reuses it, a new machine
  rebuilds it. The cache key covers the suite and the package list.
- :func:`wheelhouse` builds phobos and its dependencies as wheels on the host (pip's own
  cache makes this a few seconds), so the container installs them with ``--no-index``.
- :class:`Container` unpacks a private copy of the rootfs, boots it
  (``systemd-nspawn -b --register=no --keep-unit``; the host has no systemd, so no
  machinectl), and runs commands inside with ``nsenter --target <its systemd> --all``.
  Leaving the context powers it off (SIGKILL after a grace period) and deletes the copy.

A missing tool raises :class:`SystemTestError`: system tests fail, they never skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PHOBOS_TEST_CACHE", "/var/cache/phobos-test"))
SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "rsync",
            "ca-certificates")
PREFIX = Path("/opt/phobos")  # the venv phobos is installed into, inside the container
PHOBOS = PREFIX / "bin" / "phobos"


class SystemTestError(AssertionError):
    """The system test cannot run here, or the container misbehaved."""


def require(*tools: str, why_root: str = "systemd-nspawn") -> None:
    """Fail (never skip) when a tool is missing or we are not root."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise SystemTestError(f"missing {', '.join(missing)}: run scripts/setup "
                              "(system tests never skip)")
    if os.geteuid() != 0:
        raise SystemTestError(f"system tests need root ({why_root})")


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (parallel runs build a cache entry once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def rootfs_tarball(suite: str = SUITE, packages: Sequence[str] = PACKAGES, *,
                   options: Sequence[str] = (), key: str = "") -> Path:
    """The cached rootfs tarball, built first if absent (under a lock: parallel runs
    build it once). ``options`` are extra mmdebstrap arguments (hooks); ``key`` names
    whatever else they depend on, for the cache key."""
    require("mmdebstrap", "systemd-nspawn", "nsenter")
    digest = hashlib.sha256(repr((suite, tuple(packages), tuple(options), key)).encode())
    tarball = CACHE / f"rootfs-{suite}-{digest.hexdigest()[:12]}.tar"
    if tarball.exists():  # complete: it appears by rename; no need to queue for the lock
        return tarball
    with cache_lock(CACHE / ".lock"):
        if not tarball.exists():
            partial = tarball.with_suffix(".partial.tar")
            subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root",
                            f"--include={','.join(packages)}", *options, suite,
                            str(partial)],
                           check=True, timeout=600, stdin=subprocess.DEVNULL)
            partial.replace(tarball)
    return tarball


def wheelhouse(directory: Path) -> Path:
    """Wheels of phobos (from a copy of the work tree: no build/ in the repo) and of
    everything it depends on, in ``directory``."""
    source = directory / "src-copy"
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    wheels = directory / "wheels"
    pip = REPO / ".venv" / "bin" / "pip"
    subprocess.run([str(pip), "wheel", "--quiet", "--wheel-dir", str(wheels), str(source)],
                   check=True, timeout=600, capture_output=True)
    return wheels


class Container:
    """One booted container on a private copy of the cached rootfs."""

    def __init__(self, tarball: Path, workdir: Path, binds: Sequence[tuple[Path, str]] = (),
                 options: Sequence[str] = ()) -> None:
        self.tarball = tarball
        self.workdir = workdir
        self.root = workdir / "rootfs"
        self.binds = list(binds)
        self.options = list(options)  # extra systemd-nspawn arguments
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.pid = 0  # the container's systemd, as seen from the host

    def unpack(self) -> None:
        self.root.mkdir(parents=True)
        subprocess.run(["tar", "-xf", str(self.tarball), "-C", str(self.root)], check=True,
                       timeout=300)

    def path(self, inside: str) -> Path:
        """A path of the container's file system, seen from the host."""
        return self.root / inside.lstrip("/")

    def boot(self, timeout: float = 90) -> None:
        argv = ["systemd-nspawn", "-q", "-D", str(self.root), "--register=no",
                "--keep-unit", "--console=passive", "-b"]
        argv += [f"--bind-ro={host}:{inside}" for host, inside in self.binds]
        argv += self.options
        log = open(self.workdir / "nspawn.log", "wb")  # noqa: SIM115 - closed in stop()
        self.nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        self.pid = self._find_init(timeout)
        # Until systemd listens on its socket, systemctl fails at once: ask again.
        while True:
            state = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                             timeout=timeout)
            if state.stdout.strip() in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                failed = self.run(["systemctl", "--failed", "--no-pager"], check=False)
                raise SystemTestError(f"container did not boot: {state.stdout}"
                                      f"{state.stderr}\n{failed.stdout}")
            time.sleep(0.2)

    def _find_init(self, timeout: float) -> int:
        """The PID of the container's systemd: nspawn's child that is PID 1 inside."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.nspawn is not None
            if self.nspawn.poll() is not None:
                log = (self.workdir / "nspawn.log").read_text(errors="replace")
                raise SystemTestError(f"systemd-nspawn exited with {self.nspawn.returncode}:"
                                      f"\n{log}")
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and _is_init_under(entry, self.nspawn.pid):
                    return int(entry.name)
            time.sleep(0.1)
        raise SystemTestError("the container's systemd did not start")

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 120,
            ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container (all its namespaces)."""
        full = ["nsenter", f"--target={self.pid}", "--all", "--", *argv]
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise SystemTestError(f"{' '.join(argv)} exited with {done.returncode}:\n"
                                  f"{done.stdout}{done.stderr}")
        return done

    def sh(self, script: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.run(["/bin/sh", "-c", script], **kwargs)  # type: ignore[arg-type]

    def install_phobos(self, wheels_inside: str) -> None:
        """Install phobos into a venv at PREFIX with the container's own Python."""
        self.run(["python3", "-m", "venv", str(PREFIX)])
        self.run([str(PREFIX / "bin" / "pip"), "install", "--quiet", "--no-index",
                  "--find-links", wheels_inside, "phobos"], timeout=300)

    def journal(self, unit: str) -> str:
        return self.run(["journalctl", "--no-pager", "-o", "cat", "-u", unit],
                        check=False).stdout

    def stop(self, grace: float = 30) -> None:
        """Power off (SIGTERM makes nspawn ask the container's systemd to halt), then
        SIGKILL what is left; always reaped."""
        if self.nspawn is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.nspawn.send_signal(signal.SIGTERM)
        try:
            self.nspawn.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.nspawn.pid, signal.SIGKILL)
            self.nspawn.wait(timeout=30)
        self.nspawn = None


def _is_init_under(proc_dir: Path, parent: int) -> bool:
    """Whether the process is a child of ``parent`` and PID 1 of its own PID namespace."""
    try:
        fields = dict(line.split(":", 1) for line in (proc_dir / "status").read_text()
                      .splitlines() if ":" in line)
    except OSError:
        return False
    nspids = fields.get("NSpid", "").split()
    return fields.get("PPid", "").strip() == str(parent) and len(nspids) > 1 \
        and nspids[-1] == "1"


@contextlib.contextmanager
def booted(binds: Sequence[tuple[Path, str]] = (), *, tarball: Path | None = None,
           options: Sequence[str] = ()) -> Iterator[Container]:
    """A booted container on a fresh copy of the cached rootfs (or of ``tarball``), with
    extra systemd-nspawn ``options``; powered off and deleted afterwards, whatever
    happened."""
    tarball = tarball or rootfs_tarball()
    workdir = Path(tempfile.mkdtemp(prefix="phobos-nspawn-", dir="/var/tmp"))
    container = Container(tarball, workdir, binds, options)
    try:
        container.unpack()
        container.boot()
        yield container
    finally:
        container.stop()
        shutil.rmtree(workdir, ignore_errors=True)
