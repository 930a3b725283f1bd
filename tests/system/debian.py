"""The phobos .deb for system tests, and a Debian root to install it in with apt.

- :func:`built_deb` runs ``scripts/build-deb`` once per release and source state (the
  files git knows, as build-deb packages them) and caches the .deb with its lintian
  report under ``CACHE/deb``; a warm run only hashes the sources.
- :func:`install_root` is a cached rootfs of that release with a booted systemd and what
  ``phobos demo`` needs besides the package (sshd, ip), but **not** the package's
  dependencies: those are only downloaded into apt's cache (with the package lists), so
  ``apt-get install ./phobos_*.deb`` must resolve the Depends itself, offline, in a
  container without network.
- Loop devices: nspawn gives the container its own /dev without loop nodes. Binding
  ``/dev/loop-control`` lets ``losetup --find`` allocate a device, and
  :data:`MAKE_LOOP_NODES` creates the ``/dev/loopN`` nodes (what devtmpfs does on a real
  machine). Without the bind losetup says "cannot find an unused loop device"; without
  the nodes "failed to set up loop device: No such file or directory".
  :func:`detach_loops_under` frees loop devices a failed run left behind.
- The persistent mount namespace: on this machine's kernel (6.18) binding a new mount
  namespace's file (``unshare --mount=FILE``) fails with EINVAL when the new namespace
  was created on another CPU than the current one, in any mount namespace but the
  first (the kernel's loop check compares namespace sequence numbers, which are
  evidently not ordered across CPUs: inside the container it fails 30 of 30 times on
  one CPU and 0 of 30 on the other). phobos tries each CPU it may use in turn
  (``phobos.namespace``), so the demo runs unpinned.
"""

from __future__ import annotations

import contextlib
import hashlib
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from nspawn import (
    CACHE,
    REPO,
    SystemTestError,
    cache_lock,
    require,
    rootfs_tarball,
)

# A booted systemd, and what `phobos demo` and the checks need beyond the package.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "man-db")
# Container options: its own network (nspawn then grants CAP_NET_ADMIN, which the
# demo's network namespaces and veths need; apt has everything in its cache), and
# the loop allocator.
NSPAWN_OPTIONS = ("--private-network", "--bind=/dev/loop-control")
# Nodes for every loop device the kernel has, plus headroom for the ones losetup
# --find adds when all are busy.
MAKE_LOOP_NODES = """
last=-1
for dev in /sys/class/block/loop*; do
    n=${dev##*loop}; [ "$n" -gt "$last" ] && last=$n
done
for n in $(seq 0 $((last + 8))); do
    [ -e /dev/loop$n ] || mknod -m 0660 /dev/loop$n b 7 $n
done
"""
KEEP_BUILDS = 4  # cached builds per release (one per source state)
# What scripts/build-deb packages (its SOURCES), and the script itself.
SOURCES = ("src", "docs", "packaging", "pyproject.toml", "README.md", "scripts/build-deb")


def source_files() -> list[str]:
    """The files the package is built from: tracked and new ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard", "--", *SOURCES], cwd=REPO, check=True,
                            capture_output=True, timeout=60).stdout
    return sorted(name for name in listed.decode().split("\0")
                  if name and (REPO / name).is_file())


def source_hash() -> str:
    digest = hashlib.sha256()
    for name in source_files():
        digest.update(name.encode() + b"\0" + (REPO / name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def built_deb(release: str) -> Path:
    """The .deb of this source state for ``release`` (built first if not cached), with
    ``lintian.txt`` (lintian -I) beside it."""
    require("mmdebstrap", "systemd-nspawn", "dpkg-deb", "lintian", "git")
    builds = CACHE / "deb"
    directory = builds / f"{release}-{source_hash()}"
    if not (directory / "lintian.txt").exists():  # complete builds appear by rename
        with cache_lock(builds / f".{release}.lock"):
            if not (directory / "lintian.txt").exists():
                _build(release, directory)
                _prune(builds, release, keep=directory)
    debs = sorted(directory.glob("phobos_*.deb"))
    if len(debs) != 1:
        raise SystemTestError(f"{directory}: expected one phobos_*.deb, found {debs}")
    return debs[0]


def _build(release: str, directory: Path) -> None:
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run([str(REPO / "scripts" / "build-deb"), "--release", release,
                           "--out", str(partial), "--no-lintian"], cwd=REPO,
                          capture_output=True, text=True, timeout=1200,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemTestError(f"scripts/build-deb --release {release} exited with "
                              f"{done.returncode}:\n{done.stdout}{done.stderr}")
    (deb,) = partial.glob("phobos_*.deb")
    # lintian exits non-zero on errors: the test reads the tags, so keep them all.
    report = subprocess.run(["lintian", "-I", str(deb)], capture_output=True, text=True,
                            timeout=600)
    (partial / "lintian.txt").write_text(report.stdout)
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)


def _prune(builds: Path, release: str, keep: Path) -> None:
    """Drop all but the newest KEEP_BUILDS cached builds of ``release``."""
    old = sorted((p for p in builds.glob(f"{release}-*") if p.is_dir() and p != keep),
                 key=lambda p: p.stat().st_mtime, reverse=True)
    for path in old[KEEP_BUILDS - 1:]:
        shutil.rmtree(path, ignore_errors=True)


def field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), name], check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()


def install_root(release: str, deb: Path) -> Path:
    """A cached rootfs of ``release`` whose apt cache holds the package's dependencies
    (with Recommends, as a plain ``apt install`` takes them), downloaded, not installed."""
    depends = field(deb, "Depends")
    download = ("chroot \"$1\" apt-get satisfy -qq --download-only --yes "
                f"-o APT::Install-Recommends=true {shlex.quote(depends)}")
    options = ["--skip=cleanup/apt",  # keep the lists and the downloaded archives
               "--customize-hook=chroot \"$1\" apt-get clean", f"--customize-hook={download}"]
    return rootfs_tarball(release, BASE_PACKAGES, options=options)


@contextlib.contextmanager
def detach_loops_under(root: Path) -> Iterator[None]:
    """On the way out, detach loop devices whose backing file lies under ``root`` (the
    demo detaches its own; this catches a run that died half-way)."""
    try:
        yield
    finally:
        for backing in Path("/sys/class/block").glob("loop*/loop/backing_file"):
            with contextlib.suppress(OSError):
                if backing.read_text().startswith(str(root) + "/"):
                    device = f"/dev/{backing.parent.parent.name}"
                    subprocess.run(["losetup", "-d", device], check=False, timeout=30)
