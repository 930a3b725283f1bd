"""Doctor check area ``initramfs`` (``phobos doctor --initramfs``, run on the NAS):
everything remote unlock needs, read from the files below ``root``: packages,
authorized_keys, host keys, ``DROPBEAR_OPTIONS``, network in the initramfs,
/etc/crypttab, and whether the initramfs was rebuilt after they changed. Needs no phobos
config. How the files are read is :mod:`phobos.unlock.initramfs_files`; the admin's side
that these checks prepare for is :mod:`phobos.unlock.client`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from phobos.core import proc
from phobos.doctor.findings import Finding, error, ok, warning
from phobos.errors import PhobosError
from phobos.unlock.defaults import DEFAULT_PORT
from phobos.unlock.initramfs_files import (
    OLD_DIR,
    UNLOCK_COMMAND,
    CryptEntry,
    DropbearOptions,
    Layout,
    boot_cmdlines,
    describe_ip,
    dropbear_fingerprint,
    find_layout,
    kernel_parameter,
    key_lines,
    parse_crypttab,
    parse_dropbear_options,
    read_or_empty,
    shell_value,
)

AREA = "initramfs"


def initramfs_findings(root: Path = Path("/")) -> list[Finding]:
    """Everything remote unlock needs on the NAS, read from the files below ``root``."""
    layout = find_layout(root)
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


def _authorized_keys(layout: Layout) -> list[Finding]:
    path = layout.authorized_keys
    fix = (f"put your admin key (e.g. ~/.ssh/id_ed25519.pub) into {path}, then "
           "update-initramfs -u")
    if not path.is_file():
        pubs = sorted(layout.directory.glob("id_*.pub"))
        if pubs:
            return [ok(AREA, "authorized_keys", f"no {path.name}; the hook uses "
                       f"{', '.join(p.name for p in pubs)}")]
        return [error(AREA, "authorized_keys", f"{path} does not exist: nobody can log in "
                      "to the initramfs", fix)]
    keys = key_lines(path.read_text(encoding="utf-8", errors="replace"))
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
    present = [path for path in layout.host_keys if path.is_file()]
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
        value = shell_value(read_or_empty(layout.config), "DROPBEAR_OPTIONS")
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
    if os.path.basename(options.command) != UNLOCK_COMMAND:
        return warning(AREA, "forced command", f"-c {options.command}: every login runs "
                       "that instead of cryptroot-unlock; phobos unlock needs "
                       "cryptroot-unlock", f"use -c cryptroot-unlock in {layout.config}")
    return ok(AREA, "forced command", f"-c {options.command}: every login runs "
              "cryptroot-unlock and nothing else")


def _network(root: Path) -> list[Finding]:
    """ip= on the kernel command line wins over IP= in initramfs.conf (and conf.d)."""
    sources: list[tuple[str, str]] = []
    for where, cmdline in [(f"{root / 'proc/cmdline'} (this boot)",
                            read_or_empty(root / "proc/cmdline")), *boot_cmdlines(root)]:
        value = kernel_parameter(cmdline, "ip")
        if value is not None:
            sources.append((where, value))
    conf = [root / "etc/initramfs-tools/initramfs.conf",
            *sorted((root / "etc/initramfs-tools/conf.d").glob("*"))]
    for path in conf:
        try:
            value = shell_value(read_or_empty(path), "IP")
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


def _crypttab(root: Path) -> list[Finding]:
    path = root / "etc/crypttab"
    entries = parse_crypttab(read_or_empty(path))
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
    if read_or_empty(real / "dm" / "uuid").startswith("CRYPT-"):
        found.append(read_or_empty(real / "dm" / "name").strip())
    slaves = real / "slaves"
    for slave in sorted(slaves.iterdir()) if slaves.is_dir() else []:
        found += crypt_mappings(read_or_empty(slave / "dev").strip(), sysfs)
    return found


def _freshness(root: Path, layout: Layout) -> list[Finding]:
    """The initramfs must be rebuilt after its inputs change."""
    initrd = _current_initrd(root)
    if initrd is None:
        return [warning(AREA, "initramfs", f"no {root / 'boot'}/initrd.img-*",
                        "update-initramfs -u")]
    built = initrd.stat().st_mtime
    inputs = [layout.authorized_keys, layout.config, *layout.host_keys,
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
