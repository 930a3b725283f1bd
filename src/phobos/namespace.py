"""The persistent backup mount namespace.

The backup filesystem (``[storage] device``) and the off-site drives are mounted only
inside one mount namespace, so no process outside it (a stray ``rm -rf``, ransomware
running as some user, an indexer) can even see them. The namespace is kept alive by
bind-mounting its ``/proc/PID/ns/mnt`` onto a file, ``RUN/ns/mnt``; the directory
``RUN/ns`` is first made a private bind mount of itself, because the kernel refuses to
put an nsfs file on a shared mount (it would propagate into the namespace itself).
Unmounting ``RUN/ns/mnt`` drops the namespace and everything mounted in it.

How jobs get inside: the runner calls :func:`enter_for_job` before taking locks, and
if the job's resources touch a drive (or the storage, when ``[storage] device`` hides
it), the *runner process itself* joins the namespace with ``setns(2)``. That was chosen
over wrapping every step in ``nsenter``: every child then inherits the namespace
without any kind having to know about it, and phobos's own Python code (creating
directories on a drive, verifying a copy) sees the same mounts as its tools. setns of
a mount namespace needs a single-threaded process, which ``phobos run`` is at that
point; it is checked, not assumed. A process joins for the rest of its life: that is
what ``phobos run`` wants, and why in-process callers (tests) use the CLI instead.

Under systemd, a job that needs the hidden storage but no drive does not join: joining
costs the unit its own mount namespace, and with it ``ProtectSystem=`` and every other
mount-based option (a copy of a mount namespace leaves out the nsfs mount that holds
this one). Its unit sets ``PHOBOS_STORAGE_MOUNT=private`` instead, and the runner mounts
the storage device in the unit's namespace (:func:`mount_storage_privately`): hidden
from every other process just the same, since nothing propagates out of a unit's
namespace, writable only where the job writes, and gone with the unit.

Without ``[storage] device`` a storage-only job stays outside: the namespace would hide
nothing it needs, and inside it host mounts made after its creation are invisible.

Inside the namespace the ns file is an ordinary empty file (the bind mount was made
after the copy), so "am I inside?" compares ``/proc/self/ns/mnt`` with the namespace id
recorded next to it (``RUN/ns/id``) when it was created.

``RUN`` ([paths] run) and [paths] state must not live on the storage device: the runner
opens them before and after joining.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from phobos.config.model import Config
from phobos.core import locks
from phobos.core.files import exclusive_lock, write_atomic
from phobos.core.locks import Resource
from phobos.core.proc import Log, StepRunner, child_env, direct_runner
from phobos.core.step import Step
from phobos.errors import PhobosError, StepFailed, UsageError
from phobos.tools import mount as mnt
from phobos.tools.mount import MountEntry

CLONE_NEWNS = 0x00020000
NS_DIR = "ns"
# Set to "private" by systemd units whose jobs mount the storage in the unit's own mount
# namespace instead of joining the backup namespace (see mount_storage_privately).
STORAGE_MOUNT_ENV = "PHOBOS_STORAGE_MOUNT"

@dataclass(frozen=True, slots=True, kw_only=True)
class Namespace:
    """Where one config's namespace lives: ``RUN/ns`` (a private bind mount of itself)."""

    directory: Path

    @property
    def file(self) -> Path:
        return self.directory / "mnt"

    @property
    def id_file(self) -> Path:
        return self.directory / "id"

    @property
    def lock_file(self) -> Path:
        return self.directory.parent / "ns.lock"


def of(config: Config) -> Namespace:
    return Namespace(directory=config.paths.run / NS_DIR)


# --- where are we --------------------------------------------------------------------------


def own_id() -> int:
    """The inode of this process's mount namespace (the number in ``mnt:[...]``)."""
    return os.stat("/proc/self/ns/mnt").st_ino


def recorded_id(ns: Namespace) -> int | None:
    try:
        return int(ns.id_file.read_text().strip())
    except (OSError, ValueError):
        return None


def is_inside(ns: Namespace) -> bool:
    """Whether this process already is in the backup namespace."""
    recorded = recorded_id(ns)
    return recorded is not None and recorded == own_id()


def is_alive(ns: Namespace, entries: Sequence[MountEntry] | None = None) -> bool:
    """Seen from outside: the ns file is a live nsfs bind mount."""
    entry = mnt.mounted_at(entries if entries is not None else mnt.read_mountinfo(), ns.file)
    return entry is not None and entry.fstype == "nsfs"


def exists(ns: Namespace) -> bool:
    return is_inside(ns) or is_alive(ns)


# --- creating and joining ----------------------------------------------------------------


@contextlib.contextmanager
def _locked(ns: Namespace) -> Iterator[None]:
    """Serialize creation and storage mounting between phobos processes."""
    ns.lock_file.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(ns.lock_file, mode=0o600):
        yield


def ensure(config: Config, run: StepRunner) -> Namespace:
    """Create the namespace unless it exists (idempotent, safe against concurrent calls)."""
    ns = of(config)
    with _locked(ns):
        if is_inside(ns):
            return ns
        entries = mnt.read_mountinfo()
        if is_alive(ns, entries):
            if recorded_id(ns) != ns.file.stat().st_ino:
                _record_id(ns)  # the id file was lost: the bind mount still knows
            return ns
        _create(ns, entries, run)
    return ns


def create(config: Config, run: StepRunner) -> Namespace:
    """``phobos ns create``: make sure the namespace exists and the storage device is
    mounted in it, without this process staying inside."""
    ns = ensure(config, run)
    if is_inside(ns):
        with _locked(ns):
            _mount_storage(config, run)
    elif config.storage.device is not None:
        with visiting(ns), _locked(ns):
            _mount_storage(config, run)
    return ns


def _create(ns: Namespace, entries: Sequence[MountEntry], run: StepRunner) -> None:
    ns.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if mnt.mounted_at(entries, ns.directory) is None:
        run(Step(name="ns-bind", argv=mnt.bind(ns.directory, ns.directory)))
    run(Step(name="ns-private", argv=mnt.make_private(ns.directory)))
    ns.file.touch(mode=0o600)
    _persist_on_some_cpu(ns, run)
    _record_id(ns)


def _persist_on_some_cpu(ns: Namespace, run: StepRunner) -> None:
    """``unshare --mount=FILE``, pinned to each CPU this process may use in turn until
    the kernel keeps the namespace.

    Why: binding a new namespace's file is refused (EINVAL) unless the new namespace is
    newer than the caller's, and where the caller's mount namespace is not the first
    (inside a container) kernels such as 6.18 number namespaces per CPU: created on one
    CPU the bind fails every time, on another it works. Other failures stop at once."""
    argv = mnt.persist_new_namespace(ns.file)
    refused = []
    for cpu in sorted(os.sched_getaffinity(0)):
        try:
            run(Step(name="ns-create", argv=mnt.on_cpu(cpu, argv)))
            return
        except StepFailed as exc:
            if mnt.BIND_REFUSED not in exc.message:
                raise
            refused.append(str(cpu))
    raise PhobosError(f"cannot create the backup mount namespace: the kernel refused to "
                      f"keep it ({mnt.BIND_REFUSED}) on every CPU phobos may use "
                      f"({', '.join(refused)})",
                      "in a container or nested mount namespace, allow phobos more CPUs "
                      "(taskset, CPUAffinity=) or run it on the host")


def _record_id(ns: Namespace) -> None:
    write_atomic(ns.id_file, f"{ns.file.stat().st_ino}\n")


def _require_single_thread() -> None:
    threads = len(os.listdir("/proc/self/task"))
    if threading.active_count() > 1 or threads > 1:
        raise PhobosError(f"cannot join the backup mount namespace from a process with "
                          f"{threads} threads (setns needs a single-threaded process)",
                          "run the job as its own process: `phobos run JOB`")


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise PhobosError(f"cannot join the backup mount namespace: {os.strerror(err)}",
                          "phobos needs root (CAP_SYS_ADMIN) for the namespace")


def _join(path: Path | str) -> None:
    """setns into the namespace at ``path``, keeping the working directory: setns
    resets it to the namespace's root."""
    cwd = _cwd()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.chdir(cwd)


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:
        return "/"


def enter(config: Config, run: StepRunner, *, create: bool = True,
          mount_storage: bool = True) -> bool:
    """Join the namespace (creating it if ``create``) and, if ``mount_storage``, make sure
    the storage device is mounted in it. Returns False only when it does not exist and
    ``create`` is off."""
    ns = of(config)
    if not is_inside(ns):
        if create:
            ensure(config, run)
        elif not is_alive(ns):
            return False
        _require_single_thread()
        _join(ns.file)
    if mount_storage:
        with _locked(ns):
            _mount_storage(config, run)
    return True


def _mount_storage(config: Config, run: StepRunner) -> None:
    device = config.storage.device
    root = config.storage.root
    if device is None or mnt.mounted_at(mnt.read_mountinfo(), root) is not None:
        return
    root.mkdir(parents=True, exist_ok=True)
    run(Step(name="mount-storage", argv=mnt.mount(device, root, options=("noatime",))))


def needs_namespace(config: Config, resources: Sequence[Resource]) -> bool:
    """Drives always live in the namespace; repos, holding areas and the storage do when
    ``[storage] device`` hides the backup filesystem there."""
    if _touches_drive(resources):
        return True
    if config.storage.device is None:
        return False
    return any(res.kind in (locks.STORAGE, locks.REPO, locks.HOLDING) for res in resources)


def enter_for_job(config: Config, resources: Sequence[Resource], log: Log) -> None:
    """The runner's hook: join the namespace if the job needs it (see module doc), or
    mount the storage in this process's own namespace when its unit says so."""
    if not needs_namespace(config, resources):
        return
    if os.environ.get(STORAGE_MOUNT_ENV) == "private" and not _touches_drive(resources):
        mount_storage_privately(config, resources, direct_runner(log))
        return
    ns = of(config)
    if is_inside(ns):
        log(f"already inside the backup mount namespace ({ns.file})")
    else:
        log(f"joining the backup mount namespace ({ns.file})")
    enter(config, direct_runner(log))


def _touches_drive(resources: Sequence[Resource]) -> bool:
    return any(res.kind == locks.DRIVE for res in resources)


def written_paths(config: Config, resources: Sequence[Resource]) -> set[Path]:
    """The paths a job with ``resources`` writes: the repositories it uses (Borg writes
    lock files even to read), the holding area if it writes a host's folder there (the
    pull creates it), the storage root if it writes ``storage``."""
    paths: set[Path] = set()
    for res in resources:
        if res.kind == locks.REPO and res.target in config.repos:
            local = config.repos[res.target].path  # None: on a server, over SSH
            if local is not None:
                paths.add(local)
        elif res.kind == locks.HOLDING and res.write:
            paths.add(config.storage.holding)
        elif res.kind == locks.STORAGE and res.write:
            paths.add(config.storage.root)
    return paths


def storage_writes(config: Config, resources: Sequence[Resource]) -> list[Path]:
    """Those of :func:`written_paths` on the storage."""
    root = config.storage.root
    return sorted(p for p in written_paths(config, resources)
                  if p == root or root in p.parents)


def mount_storage_privately(config: Config, resources: Sequence[Resource],
                            run: StepRunner) -> None:
    """Mount the storage device in this process's own mount namespace, writable only
    where the job writes (:func:`storage_writes`).

    For systemd units that keep their sandbox (``ProtectSystem=strict`` and the rest
    need a mount namespace of the unit's own, from which the backup namespace cannot be
    joined): the mount is as hidden as the backup namespace's, since nothing propagates
    out of the unit's namespace, and it goes away with the unit. Refused where a mount
    would show in other namespaces (in the host's own): that would show the storage to
    all."""
    device, root = config.storage.device, config.storage.root
    if device is None:
        return
    entries = mnt.read_mountinfo()
    if mnt.mounted_at(entries, root) is not None:
        return
    below = mnt.containing(entries, root)
    if below is None or below.reaches_other_namespaces:
        raise PhobosError(f"{STORAGE_MOUNT_ENV}=private, but a mount on {root} would "
                          f"propagate out of this mount namespace and show the storage "
                          "to every process", f"unset {STORAGE_MOUNT_ENV}: it is for the "
                          "units `phobos systemd install` writes")
    run(Step(name="mount-storage", argv=mnt.mount(device, root, options=("noatime",))))
    writes = storage_writes(config, resources)
    if root in writes:
        return
    for path in writes:
        path.mkdir(parents=True, exist_ok=True)
        run(Step(name="storage-writable", argv=mnt.bind(path, path)))
    run(Step(name="storage-read-only", argv=mnt.remount_readonly(root)))


def require_inside(config: Config) -> None:
    """Refuse to mount drives anywhere but in the namespace."""
    if not is_inside(of(config)):
        raise PhobosError("not inside the backup mount namespace: refusing to mount a drive "
                          "where every process could see it",
                          "run it through `phobos run JOB`, which joins the namespace")


@contextlib.contextmanager
def visiting(ns: Namespace) -> Iterator[None]:
    """Be inside the (live) namespace for the block, then return to where we were."""
    _require_single_thread()
    home = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _join(ns.file)
        try:
            yield
        finally:
            cwd = _cwd()
            _setns(home)
            with contextlib.suppress(OSError):
                os.chdir(cwd)
    finally:
        os.close(home)


def exec_inside(config: Config, argv: Sequence[str]) -> NoReturn:
    """Replace this process by ``argv`` running inside the namespace (``phobos ns enter``),
    finding programs as phobos does: next to phobos too (a Borg installed in its venv)."""
    enter(config, direct_runner())
    env = {**os.environ, "PATH": child_env()["PATH"]}
    try:
        os.execvpe(argv[0], list(argv), env)
    except OSError as exc:
        raise UsageError(f"cannot run {argv[0]}: {exc.strerror}") from None


# --- status and destruction --------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """What ``phobos ns status`` shows: mounts seen only inside, and the proof that
    none of them is visible outside (``leaked`` is empty)."""

    file: Path
    alive: bool
    ns_id: int | None
    caller_inside: bool
    hidden: tuple[MountEntry, ...] = ()
    leaked: tuple[MountEntry, ...] = ()
    inside_count: int = 0
    outside_count: int = 0


def status(config: Config) -> Status:
    ns = of(config)
    if is_inside(ns):
        inside, outside = mnt.read_mountinfo(), mnt.read_mountinfo("1")
    elif is_alive(ns):
        outside = mnt.read_mountinfo()
        with visiting(ns):
            inside = mnt.read_mountinfo()
    else:
        return Status(file=ns.file, alive=False, ns_id=None, caller_inside=False)
    return compare(ns, inside, outside)


def compare(ns: Namespace, inside: Sequence[MountEntry],
            outside: Sequence[MountEntry]) -> Status:
    """Mounts present only inside, and which of those have their filesystem mounted
    anywhere outside too (none should: that is the proof of invisibility)."""
    outside_keys = {entry.key for entry in outside}
    hidden = tuple(e for e in inside if e.key not in outside_keys)
    devices_outside = {e.devno for e in outside}
    leaked = tuple(e for e in hidden if e.devno in devices_outside)
    return Status(file=ns.file, alive=True, ns_id=recorded_id(ns), caller_inside=is_inside(ns),
                  hidden=hidden, leaked=leaked, inside_count=len(inside),
                  outside_count=len(outside))


def destroy(config: Config, run: StepRunner,
            cleanup_inside: Callable[[], None] | None = None) -> bool:
    """Drop the namespace: ``cleanup_inside`` (release drives) and the storage unmount run
    inside first, so filesystems are unmounted cleanly rather than torn down with it.
    Returns whether a namespace existed."""
    ns = of(config)
    if is_inside(ns):
        raise UsageError("cannot destroy the backup namespace from inside it",
                         "leave it (exit the `phobos ns enter` shell) and run this again")
    with _locked(ns):
        alive = is_alive(ns)
        if alive:
            with visiting(ns):
                if cleanup_inside is not None:
                    cleanup_inside()
                _umount_storage(config, run)
            run(Step(name="ns-drop", argv=mnt.umount(ns.file)))
        if mnt.mounted_at(mnt.read_mountinfo(), ns.directory) is not None:
            run(Step(name="ns-unbind", argv=mnt.umount(ns.directory)))
        ns.id_file.unlink(missing_ok=True)
    return alive


def _umount_storage(config: Config, run: StepRunner) -> None:
    if config.storage.device is None:
        return
    if mnt.mounted_at(mnt.read_mountinfo(), config.storage.root) is not None:
        run(Step(name="umount-storage", argv=mnt.umount(config.storage.root)))
