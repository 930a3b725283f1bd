"""The NAS-side files of remote unlock (Debian's dropbear-initramfs and
cryptsetup-initramfs): where they live below a root, and how to read them as the
initramfs does: ``DROPBEAR_OPTIONS``, authorized_keys lines, dropbear host keys, the
kernel command line's ``ip=``, /etc/crypttab. Every path is below ``root``, so a copy of
another system's /etc reads the same way. Reading only: the checks that judge these
files are :mod:`phobos.doctor.initramfs`.
"""

from __future__ import annotations

import base64
import re
import shlex
import struct
from dataclasses import dataclass, field
from pathlib import Path

from phobos.tools.ssh import HostKey

NEW_DIR = Path("etc/dropbear/initramfs")  # Debian 12 (dropbear-initramfs >= 2020.81-4)
OLD_DIR = Path("etc/dropbear-initramfs")  # Debian 11 and before
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa", "dss")
UNLOCK_COMMAND = "cryptroot-unlock"  # cryptsetup-initramfs's program that asks for it
# The dropbear hook's own test of authorized_keys (/usr/share/initramfs-tools/hooks/dropbear).
_KEY_LINE = re.compile(r"^([^#]+)?(ssh-(rsa|ed25519)|ecdsa-sha2-nistp(256|384|521)) ")
# dropbear(8) options that take a value (in the same word or the next one).
_VALUE_OPTIONS = frozenset("bcrpPWKITGAm")
_DHCP = frozenset({"", "on", "any", "dhcp", "bootp", "rarp", "both"})


def read_or_empty(path: Path) -> str:
    """The text of ``path``; empty when it cannot be read (a missing file sets
    nothing, as for the shell that sources it)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Where this dropbear-initramfs keeps its files: ``directory`` and config file."""

    directory: Path
    config: Path
    legacy: bool

    @property
    def authorized_keys(self) -> Path:
        return self.directory / "authorized_keys"

    @property
    def host_keys(self) -> tuple[Path, ...]:
        """Every host key file dropbear may use, present or not."""
        return tuple(self.directory / f"dropbear_{kind}_host_key" for kind in HOST_KEY_TYPES)


def find_layout(root: Path) -> Layout:
    """The new layout, unless only the old directory exists below ``root``."""
    new, old = root / NEW_DIR, root / OLD_DIR
    if new.is_dir() or not old.is_dir():
        return Layout(directory=new, config=new / "dropbear.conf", legacy=False)
    return Layout(directory=old, config=old / "config", legacy=True)


def key_lines(text: str) -> list[str]:
    """The lines of an authorized_keys file that the dropbear hook accepts."""
    return [line for line in text.splitlines() if _KEY_LINE.match(line)]


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


def boot_cmdlines(root: Path) -> list[tuple[str, str]]:
    """(where, kernel command line) configured for the next boot: GRUB and
    systemd-boot's /etc/kernel/cmdline."""
    found = []
    grub_files = [root / "etc/default/grub", *sorted((root / "etc/default/grub.d")
                                                    .glob("*.cfg"))]
    for path in grub_files:
        text = read_or_empty(path)
        for name in ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"):
            try:
                value = shell_value(text, name)
            except ValueError:
                value = None
            if value:
                found.append((f"{path} {name}", value))
    kernel = root / "etc/kernel/cmdline"
    if kernel.is_file():
        found.append((str(kernel), read_or_empty(kernel)))
    return found


def dropbear_fingerprint(path: Path) -> HostKey | None:
    """The public half of a dropbear ed25519 host key file (its format: SSH string
    ``ssh-ed25519``, then an SSH string of the 32-byte secret and the 32-byte
    public key), or None for other types and unreadable files."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class CryptEntry:
    """One line of /etc/crypttab."""

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
