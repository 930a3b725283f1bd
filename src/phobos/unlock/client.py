"""Remote unlock of the NAS at boot: the seed's dropbear-initramfs + ``cryptroot-unlock``.

Two halves, one per machine:

- On the NAS, :func:`initramfs_findings` (``phobos doctor --initramfs``) checks the
  dropbear-initramfs setup from its files: packages, authorized_keys, host keys,
  ``DROPBEAR_OPTIONS``, network in the initramfs, /etc/crypttab, and whether the
  initramfs was rebuilt after they changed. Every path is below ``root``, so a copy of
  another system's /etc is checked the same way.
- On the admin's machine, :func:`unlock` (``phobos unlock HOST``) logs in to the
  initramfs's dropbear, runs ``cryptroot-unlock`` and feeds it the passphrase on stdin.
  The initramfs has its own host key (it lives unencrypted in /boot), so it is pinned
  separately: its own known_hosts file, under the alias ``HOST-initramfs``, never
  accepted behind the admin's back (:func:`pin` shows it and asks first).

How ``cryptroot-unlock`` behaves (cryptsetup-initramfs, Debian 12), which the client
relies on: with stdin not a terminal it prints ``Please unlock disk NAME``, reads stdin
to EOF and hands those bytes, unchanged, to cryptsetup: so the passphrase goes without
a trailing newline, and stdin is closed after it. Then it reports on stderr
``cryptsetup: NAME set up successfully`` (exit 0), ``cryptsetup: cryptsetup failed, bad
password or options?`` or ``cryptsetup: maximum number of tries exceeded for NAME``
(exit 1); ``Try again later`` when cryptroot has not started yet; it exits 0 silently
when nothing is left to unlock.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phobos.core import proc
from phobos.doctor.checks import Finding, error, ok, warning
from phobos.errors import PhobosError, StepFailed, UsageError
from phobos.tools import ssh
from phobos.tools.ssh import HostKey

AREA = "initramfs"
NEW_DIR = Path("etc/dropbear/initramfs")  # Debian 12 (dropbear-initramfs >= 2020.81-4)
OLD_DIR = Path("etc/dropbear-initramfs")  # Debian 11 and before
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa", "dss")
# The dropbear hook's own test of authorized_keys (/usr/share/initramfs-tools/hooks/dropbear).
_KEY_LINE = re.compile(r"^([^#]+)?(ssh-(rsa|ed25519)|ecdsa-sha2-nistp(256|384|521)) ")
# dropbear(8) options that take a value (in the same word or the next one).
_VALUE_OPTIONS = frozenset("bcrpPWKITGAm")
_DHCP = frozenset({"", "on", "any", "dhcp", "bootp", "rarp", "both"})

# --- the NAS's files ------------------------------------------------------------------


def shell_value(text: str, name: str) -> str | None:
    """The value the last ``NAME=...`` line of a shell fragment sets (as ``.`` would),
    or None. Raises ValueError for unbalanced quotes."""
    value = None
    pattern = re.compile(rf"^\s*(?:export\s+)?{re.escape(name)}=(.*)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            words = shlex.split(match.group(1), comments=True)
            value = words[0] if words else ""
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class DropbearOptions:
    """What ``DROPBEAR_OPTIONS`` sets: listen ports (``[address:]port``) and the forced
    command (``-c``)."""

    listen: tuple[str, ...] = ()
    command: str | None = None

    @property
    def ports(self) -> tuple[int, ...]:
        found = []
        for item in self.listen or ("22",):
            with_port = item.rpartition(":")[2]
            if with_port.isdigit():
                found.append(int(with_port))
        return tuple(found)


def parse_dropbear_options(value: str) -> DropbearOptions:
    """Parse the words of ``DROPBEAR_OPTIONS`` as dropbear does. The init script expands
    the variable unquoted, so the words are split on whitespace and quotes stay
    literal; ``-p2222`` and ``-p 2222`` both work, flags combine (``-jks``)."""
    listen: list[str] = []
    command = None
    words = value.split()
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        for pos, letter in enumerate(word[1:], start=1):
            if letter not in _VALUE_OPTIONS:
                continue
            argument = word[pos + 1:]
            if not argument and index < len(words):
                argument = words[index]
                index += 1
            if letter == "p":
                listen.append(argument)
            elif letter == "c":
                command = argument
            break
    return DropbearOptions(listen=tuple(listen), command=command)


def kernel_parameter(cmdline: str, name: str) -> str | None:
    """The value of the last ``name=`` word of a kernel command line."""
    value = None
    for word in cmdline.split():
        if word.startswith(f"{name}="):
            value = word[len(name) + 1:]
    return value


def describe_ip(value: str) -> str:
    """``ip=`` in words: DHCP or a static address (on a device)."""
    fields = value.split(":")
    if fields[0] in _DHCP and (len(fields) < 7 or fields[6] in _DHCP | {"none", "off"}):
        return "DHCP" + (f" on {fields[5]}" if len(fields) > 5 and fields[5] else "")
    device = f" on {fields[5]}" if len(fields) > 5 and fields[5] else ""
    return f"static address {fields[0]}{device}"


def dropbear_fingerprint(path: Path) -> HostKey | None:
    """The public half of a dropbear ed25519 host key file (its format: SSH string
    ``ssh-ed25519``, then an SSH string of the 32-byte seed and the 32-byte public
    key), or None for other types and unreadable files."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        (type_len,) = struct.unpack(">I", data[:4])
        type_name = data[4:4 + type_len]
        (body_len,) = struct.unpack(">I", data[4 + type_len:8 + type_len])
    except struct.error:
        return None
    body = data[8 + type_len:8 + type_len + body_len]
    if type_name != b"ssh-ed25519" or body_len != 64 or len(body) != 64:
        return None
    public = body[32:]
    blob = (struct.pack(">I", len(type_name)) + type_name + struct.pack(">I", 32) + public)
    return HostKey("ssh-ed25519", base64.b64encode(blob).decode("ascii"))


# --- the checks -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Where this dropbear-initramfs keeps its files: ``directory`` and config file."""

    directory: Path
    config: Path
    legacy: bool


def _layout(root: Path) -> Layout:
    new, old = root / NEW_DIR, root / OLD_DIR
    if new.is_dir() or not old.is_dir():
        return Layout(directory=new, config=new / "dropbear.conf", legacy=False)
    return Layout(directory=old, config=old / "config", legacy=True)


def initramfs_findings(root: Path = Path("/")) -> list[Finding]:
    """Everything remote unlock needs on the NAS, read from the files below ``root``."""
    layout = _layout(root)
    findings = [_package(root, "dropbear-initramfs", "dropbear in the initramfs"),
                _package(root, "cryptsetup-initramfs", "cryptroot and cryptroot-unlock")]
    findings += _layout_findings(root, layout)
    findings += _authorized_keys(layout)
    options, option_findings = _options(layout)
    findings += _host_keys(layout, options)
    findings += option_findings
    findings += _network(root)
    findings += _crypttab(root)
    findings += _freshness(root, layout)
    return findings


def _package(root: Path, name: str, purpose: str) -> Finding:
    admindir = root / "var/lib/dpkg"
    try:
        result = proc.run(("dpkg-query", f"--admindir={admindir}", "-W",
                           "-f=${db:Status-Abbrev} ${Version}", name), capture=True,
                          check=False, timeout=60)
    except PhobosError as exc:
        return warning(AREA, name, f"cannot ask dpkg: {exc.message}",
                       "is this a Debian system?")
    status, _, version = result.stdout.strip().partition(" ")
    if result.returncode == 0 and status.startswith("i"):
        return ok(AREA, name, f"installed ({version.strip()})")
    return error(AREA, name, f"not installed: no {purpose}",
                 f"apt install {name}")


def _layout_findings(root: Path, layout: Layout) -> list[Finding]:
    old = root / OLD_DIR
    if layout.legacy:
        return [ok(AREA, "layout", f"old layout {layout.directory} (Debian 11 and "
                   "before); Debian 12 moves it to /etc/dropbear/initramfs on upgrade")]
    if (old / "authorized_keys").is_file():
        return [warning(AREA, "layout", f"{old}/authorized_keys is left from an older "
                        f"release: this one reads only {layout.directory}",
                        f"merge it into {layout.directory}/authorized_keys and remove "
                        f"{old}")]
    return []


def _key_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if _KEY_LINE.match(line)]


def _authorized_keys(layout: Layout) -> list[Finding]:
    path = layout.directory / "authorized_keys"
    fix = (f"put your admin key (e.g. ~/.ssh/id_ed25519.pub) into {path}, then "
           "update-initramfs -u")
    if not path.is_file():
        pubs = sorted(layout.directory.glob("id_*.pub"))
        if pubs:
            return [ok(AREA, "authorized_keys", f"no {path.name}; the hook uses "
                       f"{', '.join(p.name for p in pubs)}")]
        return [error(AREA, "authorized_keys", f"{path} does not exist: nobody can log in "
                      "to the initramfs", fix)]
    keys = _key_lines(path.read_text(encoding="utf-8", errors="replace"))
    if not keys:
        return [error(AREA, "authorized_keys", f"{path} holds no usable key (ssh-ed25519, "
                      "ssh-rsa or ecdsa-sha2-nistp*): login to the initramfs won't work",
                      fix)]
    findings = [ok(AREA, "authorized_keys", f"{path}: {len(keys)} key"
                   + ("s" if len(keys) != 1 else ""))]
    mode = path.stat().st_mode
    if mode & 0o022:
        findings.append(warning(AREA, "authorized_keys", f"{path} is writable by group or "
                                "others: they could add a key", f"chmod 0600 {path}"))
    return findings


def _port_flag(options: DropbearOptions) -> str:
    ports = options.ports
    return f" --port {ports[0]}" if ports and ports[0] != DEFAULT_PORT else ""


def _host_keys(layout: Layout, options: DropbearOptions) -> list[Finding]:
    found = [layout.directory / f"dropbear_{kind}_host_key" for kind in HOST_KEY_TYPES]
    present = [path for path in found if path.is_file()]
    if not present:
        return [error(AREA, "host key", f"no dropbear_*_host_key in {layout.directory}: "
                      "dropbear will not start", "dropbearkey -t ed25519 -f "
                      f"{layout.directory}/dropbear_ed25519_host_key, then "
                      "update-initramfs -u")]
    findings = []
    for path in present:
        key = dropbear_fingerprint(path)
        if key is None:
            findings.append(ok(AREA, "host key", f"{path.name} (fingerprint: dropbearkey -y "
                               f"-f {path})"))
        else:
            findings.append(ok(AREA, "host key", f"{path.name}: {key.describe()}",
                               "pin it on your admin machine while the NAS waits at boot: "
                               f"phobos unlock HOST{_port_flag(options)} --pin "
                               f"--fingerprint {key.fingerprint}"))
    return findings


def _options(layout: Layout) -> tuple[DropbearOptions, list[Finding]]:
    try:
        value = shell_value(_read(layout.config), "DROPBEAR_OPTIONS")
    except ValueError as exc:
        return DropbearOptions(), [error(AREA, "options", f"{layout.config}: cannot parse "
                                         f"DROPBEAR_OPTIONS: {exc}", "fix the quoting")]
    options = parse_dropbear_options(value or "")
    ports = ", ".join(map(str, options.ports)) or "?"
    flag = _port_flag(options)
    findings = [ok(AREA, "port", f"dropbear listens on port {ports}"
                   + (" (dropbear's default)" if not options.listen else ""),
                   f"phobos unlock HOST{flag}" if flag else None)]
    findings.append(_forced_command(layout, options))
    return options, findings


def _forced_command(layout: Layout, options: DropbearOptions) -> Finding:
    if options.command is None:
        return ok(AREA, "forced command", "none: phobos unlock runs cryptroot-unlock "
                  "itself; a key may also get a shell in the initramfs",
                  f"to allow nothing else: add -c cryptroot-unlock to DROPBEAR_OPTIONS in "
                  f"{layout.config}, then update-initramfs -u")
    if os.path.basename(options.command) != "cryptroot-unlock":
        return warning(AREA, "forced command", f"-c {options.command}: every login runs "
                       "that instead of cryptroot-unlock; phobos unlock needs "
                       "cryptroot-unlock", f"use -c cryptroot-unlock in {layout.config}")
    return ok(AREA, "forced command", f"-c {options.command}: every login runs "
              "cryptroot-unlock and nothing else")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _boot_cmdlines(root: Path) -> list[tuple[str, str]]:
    """(where, kernel command line) configured for the next boot: GRUB and
    systemd-boot's /etc/kernel/cmdline."""
    found = []
    grub_files = [root / "etc/default/grub", *sorted((root / "etc/default/grub.d")
                                                    .glob("*.cfg"))]
    for path in grub_files:
        text = _read(path)
        for name in ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"):
            try:
                value = shell_value(text, name)
            except ValueError:
                value = None
            if value:
                found.append((f"{path} {name}", value))
    kernel = root / "etc/kernel/cmdline"
    if kernel.is_file():
        found.append((str(kernel), _read(kernel)))
    return found


def _network(root: Path) -> list[Finding]:
    """ip= on the kernel command line wins over IP= in initramfs.conf (and conf.d)."""
    sources: list[tuple[str, str]] = []
    for where, cmdline in [(f"{root / 'proc/cmdline'} (this boot)",
                            _read(root / "proc/cmdline")), *_boot_cmdlines(root)]:
        value = kernel_parameter(cmdline, "ip")
        if value is not None:
            sources.append((where, value))
    conf = [root / "etc/initramfs-tools/initramfs.conf",
            *sorted((root / "etc/initramfs-tools/conf.d").glob("*"))]
    for path in conf:
        try:
            value = shell_value(_read(path), "IP")
        except ValueError:
            value = None
        if value is not None:
            sources.append((f"{path} IP=", value))
    if not sources:
        return [ok(AREA, "network", "no ip= or IP= set: the initramfs asks DHCP (the "
                   "default); you need to know which address it gets",
                   "for a fixed one: IP=ADDR::GATEWAY:NETMASK:HOSTNAME:DEVICE in "
                   "/etc/initramfs-tools/initramfs.conf, then update-initramfs -u")]
    where, value = sources[0]
    if value.split(":")[0] in ("none", "off"):
        return [error(AREA, "network", f"ip={value} ({where}): the initramfs brings up "
                      "no network, so nobody can reach dropbear",
                      "set ip=dhcp or a static address there, then update-grub / "
                      "update-initramfs -u")]
    return [ok(AREA, "network", f"{describe_ip(value)} (ip={value}, {where})")]


@dataclass(frozen=True, slots=True, kw_only=True)
class CryptEntry:
    name: str
    device: str
    key: str
    options: tuple[str, ...] = field(default=())


def parse_crypttab(text: str) -> list[CryptEntry]:
    """The entries of /etc/crypttab (``name device key options``)."""
    entries = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#") or len(words) < 2:
            continue
        key = words[2] if len(words) > 2 else "none"
        options = tuple(words[3].split(",")) if len(words) > 3 else ()
        entries.append(CryptEntry(name=words[0], device=words[1], key=key, options=options))
    return entries


def _crypttab(root: Path) -> list[Finding]:
    path = root / "etc/crypttab"
    entries = parse_crypttab(_read(path))
    if not entries:
        return [error(AREA, "crypttab", f"{path} lists no encrypted volume: nothing for "
                      "cryptroot-unlock to unlock", "add the root file system's LUKS "
                      "device (see crypttab(5)), then update-initramfs -u")]
    boot = [e for e in entries if "noauto" not in e.options]
    names = ", ".join(e.name for e in boot) or "none"
    count = f"{len(entries)} entr" + ("y" if len(entries) == 1 else "ies")
    findings = [ok(AREA, "crypttab", f"{path}: {count}, unlocked at boot: {names}")]
    if root == Path("/"):
        findings += _root_volume(entries)
    return findings


def _root_volume(entries: Sequence[CryptEntry]) -> list[Finding]:
    """Whether the running system's / lies on a LUKS mapping that crypttab lists."""
    st = os.stat("/")
    mappings = crypt_mappings(f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}")
    if not mappings:
        return [warning(AREA, "root volume", "/ is not on a LUKS device here: nothing "
                        "needs unlocking at boot", "remote unlock is for an encrypted "
                        "root file system; nothing to do otherwise")]
    listed = {e.name for e in entries}
    missing = [m for m in mappings if m not in listed]
    if missing:
        return [error(AREA, "root volume", f"/ lies on {', '.join(missing)}, which "
                      "/etc/crypttab does not list: the initramfs will not ask for it",
                      "add it to /etc/crypttab, then update-initramfs -u")]
    return [ok(AREA, "root volume", f"/ lies on {', '.join(mappings)}")]


def crypt_mappings(devno: str, sysfs: Path = Path("/sys/dev/block")) -> list[str]:
    """Names of the dm-crypt mappings a block device is (or is stacked on: LVM on LUKS)."""
    node = sysfs / devno
    if not node.exists():
        return []
    real = node.resolve()
    found = []
    if _read(real / "dm" / "uuid").startswith("CRYPT-"):
        found.append(_read(real / "dm" / "name").strip())
    slaves = real / "slaves"
    for slave in sorted(slaves.iterdir()) if slaves.is_dir() else []:
        found += crypt_mappings(_read(slave / "dev").strip(), sysfs)
    return found


def _freshness(root: Path, layout: Layout) -> list[Finding]:
    """The initramfs must be rebuilt after its inputs change."""
    initrd = _current_initrd(root)
    if initrd is None:
        return [warning(AREA, "initramfs", f"no {root / 'boot'}/initrd.img-*",
                        "update-initramfs -u")]
    built = initrd.stat().st_mtime
    inputs = [layout.directory / "authorized_keys", layout.config,
              *(layout.directory / f"dropbear_{k}_host_key" for k in HOST_KEY_TYPES),
              root / "etc/crypttab", root / "etc/initramfs-tools/initramfs.conf",
              *sorted((root / "etc/initramfs-tools/conf.d").glob("*"))]
    newer = [p for p in inputs if p.is_file() and p.stat().st_mtime > built]
    if newer:
        return [warning(AREA, "initramfs", f"{', '.join(map(str, newer))} changed after "
                        f"{initrd} was built: the initramfs still has the old version",
                        "update-initramfs -u")]
    return [ok(AREA, "initramfs", f"{initrd} is newer than its dropbear and crypttab "
               "settings")]


def _current_initrd(root: Path) -> Path | None:
    if root == Path("/"):
        running = root / "boot" / f"initrd.img-{os.uname().release}"
        if running.is_file():
            return running
    images = sorted((root / "boot").glob("initrd.img-*"), key=lambda p: p.stat().st_mtime)
    return images[-1] if images else None


# --- the admin's side: phobos unlock HOST ------------------------------------------------


DEFAULT_PORT = 2222  # dropbear-initramfs's usual -p; cli_doctor repeats it
UNLOCK_COMMAND = "cryptroot-unlock"
_SUCCESS = re.compile(r"cryptsetup: (?P<name>\S+) set up successfully")
_CONNECT = re.compile(r"ssh: connect to host \S+ port \d+: (?P<reason>.+)$")
_RESOLVE = re.compile(r"ssh: Could not resolve hostname [^:]+: (?P<reason>.+)$")


def default_known_hosts() -> Path:
    """``$XDG_CONFIG_HOME/phobos/initramfs_known_hosts`` (``~/.config`` by default):
    apart from ``~/.ssh/known_hosts``, where the NAS's normal key lives."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "phobos" / "initramfs_known_hosts"


@dataclass(frozen=True, slots=True, kw_only=True)
class Initramfs:
    """The NAS's initramfs as the admin reaches it. Its key is pinned as ``alias``."""

    host: str
    port: int = DEFAULT_PORT
    user: str = "root"
    known_hosts: Path
    identity: Path | None = None
    alias: str = ""

    def __post_init__(self) -> None:
        if not self.alias:
            object.__setattr__(self, "alias", f"{self.host}-initramfs")

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def ssh_options(target: Initramfs) -> tuple[str, ...]:
    """Pinned key in our own file under the alias, no prompts, and nothing forwarded
    into an environment that booted from an unencrypted /boot."""
    return (
        *ssh.pinned_options(port=target.port, known_hosts=target.known_hosts,
                            alias=target.alias, identity=target.identity),
        "-o", "ForwardAgent=no",
        "-o", "ForwardX11=no",
        "-o", "ClearAllForwardings=yes",
        "-o", "PermitLocalCommand=no",
    )


def unlock_argv(target: Initramfs) -> tuple[str, ...]:
    """ssh running cryptroot-unlock (a forced ``-c cryptroot-unlock`` runs it anyway)."""
    return ("ssh", *ssh_options(target), "-T", "-l", target.user, "--", target.host,
            UNLOCK_COMMAND)


def _ssh_env() -> dict[str, str]:
    """The agent socket, so a key with a passphrase works (BatchMode cannot ask)."""
    sock = os.environ.get("SSH_AUTH_SOCK")
    return {"SSH_AUTH_SOCK": sock} if sock else {}


def passphrase_from_command(command: str) -> str:
    """The first line a command prints, run without a shell (``shlex.split``)."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--passphrase-command: {exc}") from None
    if not argv:
        raise UsageError("--passphrase-command is empty")
    result = proc.run(argv, capture=True, timeout=120)
    lines = result.stdout.splitlines()
    if not lines or not lines[0]:
        raise UsageError(f"{argv[0]} printed no passphrase",
                         "the passphrase must be the first line of its output")
    return lines[0]


class WrongPassphrase(StepFailed):
    """The initramfs refused the passphrase."""


class NotWaiting(StepFailed):
    """The initramfs is not (or no longer) waiting for a passphrase."""


class UnlockCommandMissing(StepFailed):
    """There is no cryptroot-unlock where we logged in."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UnlockResult:
    """``unlocked``: the volumes cryptroot-unlock reported set up; empty with
    ``nothing_left`` when no volume was waiting any more."""

    target: Initramfs
    unlocked: tuple[str, ...]
    nothing_left: bool
    lines: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"host": self.target.host, "port": self.target.port, "ok": True,
                "unlocked": list(self.unlocked), "nothing_left": self.nothing_left}


def require_pinned(target: Initramfs) -> None:
    """Fail before asking for the passphrase when no key is pinned for the initramfs."""
    if not ssh.pinned(target.known_hosts, target.alias):
        raise key_unknown(target)


def unlock(target: Initramfs, passphrase: str, *,
           echo: Callable[[str], None] | None = None, timeout: float = 120.0
           ) -> UnlockResult:
    """Log in, run cryptroot-unlock, write the passphrase (no newline) and close stdin.
    Returns what was unlocked; raises a typed error saying exactly what went wrong."""
    if not passphrase:
        raise UsageError("the passphrase is empty")
    if target.identity is not None and not target.identity.is_file():
        raise UsageError(f"--identity {target.identity}: no such key file")
    lines: list[str] = []
    try:
        result = proc.run(unlock_argv(target), env=_ssh_env(), secrets=(passphrase,),
                          stdin_data=passphrase.encode("utf-8"),
                          sink=lambda _stream, line: lines.append(line), check=False,
                          ok_codes=range(256), timeout=timeout)
    except StepFailed:  # with check=False only the timeout raises
        raise NotWaiting(f"{target.host}: no answer from the initramfs within "
                         f"{timeout:g} seconds; stopped waiting",
                         "look at the NAS's console; a slow key derivation needs a longer "
                         "--timeout") from None
    # What the initramfs said is shown; ssh's own failure banner is not: the error
    # raised for it says the same in fewer words.
    if echo is not None and (result.returncode != 255 or _SUCCESS.search("\n".join(lines))):
        for line in lines:
            echo(line)
    return outcome(target, result.returncode, lines)


def outcome(target: Initramfs, returncode: int, lines: Sequence[str]) -> UnlockResult:
    """What an ssh + cryptroot-unlock run did, from its exit code and output lines."""
    text = "\n".join(lines)
    unlocked = tuple(m.group("name") for line in lines if (m := _SUCCESS.search(line)))
    if unlocked:  # even if ssh then lost the connection: the boot went on
        return UnlockResult(target=target, unlocked=unlocked, nothing_left=False,
                            lines=tuple(lines))
    if returncode == 255:
        raise ssh_failure(target, lines)
    if returncode == 0:
        return UnlockResult(target=target, unlocked=(), nothing_left=True, lines=tuple(lines))
    raise _unlock_failure(target, returncode, text)


def _unlock_failure(target: Initramfs, returncode: int, text: str) -> StepFailed:
    said = _last(text)
    if "maximum number of tries exceeded" in text:
        return WrongPassphrase(
            f"{target.host}: wrong passphrase, and no tries are left ({said})",
            "the initramfs gives up on that volume: reboot the NAS (or use its console) "
            "and try again")
    if "bad password" in text:
        return WrongPassphrase(
            f"{target.host}: the passphrase was refused ({said})",
            "check it and run phobos unlock again; after `tries` wrong ones (crypttab, "
            "default 3) the initramfs stops asking until a reboot")
    if returncode == 127 or "not found" in text:
        return UnlockCommandMissing(
            f"{target.host} ({target.where}) has no {UNLOCK_COMMAND} ({said})",
            "install cryptsetup-initramfs on the NAS and run update-initramfs -u; if the "
            "NAS has already booted you reached its normal system, not the initramfs")
    if "Try again later" in text:
        return NotWaiting(f"{target.host}: the initramfs is not ready to unlock yet",
                          "wait a few seconds and run phobos unlock again")
    if "Timeout reached" in text:
        return NotWaiting(f"{target.host}: nothing asked for a passphrase ({said})",
                          "the volume may be unlocked already, or unlocked by a keyscript; "
                          "look at the NAS's console")
    return StepFailed(f"{target.host}: {UNLOCK_COMMAND} failed with exit code "
                      f"{returncode}" + (f": {said}" if said else ""),
                      "log in by hand to see more: ssh -p PORT root@HOST")


def _last(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def ssh_failure(target: Initramfs, lines: Sequence[str]) -> StepFailed:
    """The typed error for ssh's own failure (exit 255)."""
    text = "\n".join(lines)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return key_changed(target, ssh.pinned(target.known_hosts, target.alias),
                           ssh.offered_fingerprint(lines))
    if "Host key verification failed" in text:
        return key_unknown(target)
    if "Permission denied" in text:
        return ssh.LoginRefused(
            f"the initramfs of {target.host} ({target.where}) refused the login as "
            f"{target.user}" + (f" with {target.identity}" if target.identity else ""),
            "add your public key to /etc/dropbear/initramfs/authorized_keys on the NAS, "
            "then update-initramfs -u; a key with a passphrase must be in ssh-agent")
    for line in lines:
        match = _CONNECT.search(line) or _RESOLVE.search(line)
        if match:
            return unreachable(target, match.group("reason"))
    if "kex_exchange_identification" in text or "Connection closed" in text:
        return unreachable(target, "the connection was closed before login")
    return StepFailed(f"ssh to {target.where} failed: {_last(text) or 'exit code 255'}",
                      "run the same with ssh -v to see more")


def unreachable(target: Initramfs, reason: str) -> ssh.HostUnreachable:
    return ssh.HostUnreachable(
        f"the initramfs of {target.host} ({target.where}) is unreachable: {reason}",
        "is the NAS booting and waiting for its passphrase? does the initramfs get a "
        "network (`phobos doctor --initramfs` on the NAS checks ip=)? does dropbear "
        "listen on this port (-p in DROPBEAR_OPTIONS; --port here)?")


def _pin_hint(target: Initramfs) -> str:
    port = f" --port {target.port}" if target.port != DEFAULT_PORT else ""
    return (f"on the NAS, `phobos doctor --initramfs` prints the initramfs's host key; "
            f"while the NAS waits for its passphrase pin that key (apart from the "
            f"system's): phobos unlock {target.host}{port} --pin --fingerprint SHA256:...")


def key_unknown(target: Initramfs) -> ssh.HostKeyUnknown:
    return ssh.HostKeyUnknown(
        f"no host key is pinned for the initramfs of {target.host} (alias "
        f"{target.alias} in {target.known_hosts}), so phobos will not send it a passphrase",
        _pin_hint(target))


def key_changed(target: Initramfs, old: Sequence[HostKey],
                offered: str | None) -> ssh.HostKeyChanged:
    was = ", ".join(k.describe() for k in old) or "(none readable)"
    return ssh.HostKeyChanged(
        f"the initramfs of {target.host} ({target.where}) offers host key "
        f"{offered or 'a different key'}, not the pinned {was}: phobos refuses to send "
        "the passphrase. Either the NAS is already up and this is its normal sshd, the "
        "initramfs was rebuilt with new keys, or someone is in between",
        "if the NAS really waits for its passphrase and its initramfs key was changed: "
        + _pin_hint(target))


# --- pinning ---------------------------------------------------------------------------


Confirm = Callable[[Sequence[HostKey], Sequence[HostKey]], bool]


@dataclass(frozen=True, slots=True, kw_only=True)
class PinResult:
    target: Initramfs
    offered: tuple[HostKey, ...]
    old: tuple[HostKey, ...]
    changed: bool

    def as_json(self) -> dict[str, Any]:
        def keys(found: Iterable[HostKey]) -> list[dict[str, str]]:
            return [{"type": k.type, "fingerprint": k.fingerprint} for k in found]

        return {"host": self.target.host, "alias": self.target.alias,
                "known_hosts": str(self.target.known_hosts), "changed": self.changed,
                "old": keys(self.old), "offered": keys(self.offered)}


def scan(target: Initramfs) -> list[HostKey]:
    """The host keys the initramfs offers now (ssh-keyscan)."""
    result = proc.run(ssh.keyscan_argv(target.host, target.port), capture=True,
                      check=False, timeout=60)
    keys = ssh.parse_keys(result.stdout)
    if not keys:
        reason = _last("\n".join(r.removeprefix("stderr: ") for r in result.tail))
        raise unreachable(target, reason or "ssh-keyscan received no host key")
    return keys


def pin(target: Initramfs, confirm: Confirm) -> PinResult:
    """Pin the keys the initramfs offers under its alias, after ``confirm``; nothing
    is written when a pinned key still matches."""
    offered = scan(target)
    old = ssh.pinned(target.known_hosts, target.alias)
    if set(old) & set(offered):
        return PinResult(target=target, offered=tuple(offered), old=tuple(old),
                         changed=False)
    if not confirm(offered, old):
        raise UsageError(f"the initramfs host key of {target.host} was not pinned",
                         "compare the fingerprint with `phobos doctor --initramfs` on the "
                         "NAS, then confirm (or pass --fingerprint)")
    ssh.pin(target.known_hosts, target.alias, offered)
    return PinResult(target=target, offered=tuple(offered), old=tuple(old), changed=True)
