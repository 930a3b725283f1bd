"""Pure parts of `phobos doctor` and `phobos unlock`: the exit-code policy, the parsers of
the NAS's files (dropbear options, shell fragments, kernel command lines, crypttab,
luksDump), the unlock argv, and the classification of what ssh + cryptroot-unlock said."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from phobos.config.secrets import passcommand_file
from phobos.doctor.clock import clock_findings
from phobos.doctor.findings import (
    Finding,
    Severity,
    areas,
    counts,
    error,
    exit_code,
    guarded,
    ok,
    warning,
)
from phobos.doctor.tools import parse_version
from phobos.errors import ExitCode, StepFailed
from phobos.tools.cryptsetup import parse_keyslots
from phobos.tools.errors import HostKeyChanged, HostKeyUnknown, HostUnreachable, LoginRefused
from phobos.unlock.client import Initramfs, default_known_hosts, outcome, unlock_argv
from phobos.unlock.errors import NotWaiting, UnlockCommandMissing, WrongPassphrase
from phobos.unlock.initramfs_files import (
    describe_ip,
    kernel_parameter,
    parse_crypttab,
    parse_dropbear_options,
    shell_value,
)

# --- the exit-code policy -------------------------------------------------------------


def _f(severity: str) -> Finding:
    return Finding(area="a", check="c", severity=Severity(severity), message="m")


@pytest.mark.parametrize(("severities", "strict", "code"), [
    ([], False, ExitCode.OK),
    (["ok", "ok"], False, ExitCode.OK),
    (["ok", "warning"], False, ExitCode.OK),
    (["ok", "warning"], True, ExitCode.FAILED),
    (["warning", "error", "ok"], False, ExitCode.FAILED),
    (["error"], True, ExitCode.FAILED),
])
def test_exit_code_reflects_the_worst_finding(severities: list[str], strict: bool,
                                              code: ExitCode) -> None:
    findings = [_f(s) for s in severities]
    assert exit_code(findings, strict=strict) is code


def test_counts_and_grouping_keep_first_seen_order() -> None:
    findings = [ok("tools", "a", "x"), error("config", "b", "y"),
                warning("tools", "c", "z")]
    assert counts(findings) == {"ok": 1, "warning": 1, "error": 1}
    assert [(area, [f.check for f in group]) for area, group in areas(findings)] == [
        ("tools", ["a", "c"]), ("config", ["b"])]


def test_a_check_that_raises_becomes_an_error_finding() -> None:
    from phobos.errors import PhobosError

    def broken() -> list[Finding]:
        raise PhobosError("cannot read drives.json", "fix or remove it")

    def unreadable() -> list[Finding]:
        raise PermissionError(13, "Permission denied", "/etc/x")

    assert guarded("drives", broken) == [error(
        "drives", "check", "cannot read drives.json", "fix or remove it")]
    [found] = guarded("units", unreadable)
    assert found.severity is Severity.ERROR and "Permission denied" in found.message


@pytest.mark.parametrize(("text", "version"), [
    ("borg 1.4.5", (1, 4, 5)),
    ("rsync  version 3.2.7  protocol version 31", (3, 2, 7)),
    ("OpenSSH_9.2p1 Debian-2+deb12u3, OpenSSL 3.0.11 19 Sep 2023", (9, 2, 0)),
    ("cryptsetup 2.6.1 flags: UDEV BLKID KEYRING", (2, 6, 1)),
    ("mount from util-linux 2.38.1 (libmount 2.38.1: selinux)", (2, 38, 1)),
    ("no digits here", None),
])
def test_tool_versions_are_read_from_their_first_line(text: str,
                                                      version: tuple[int, ...] | None) -> None:
    assert parse_version(text) == version


def test_clock_before_2024_is_an_error_and_a_sane_one_passes() -> None:
    [bad] = clock_findings(datetime(2001, 1, 1).astimezone())
    assert bad.severity is Severity.ERROR and "2001-01-01" in bad.message
    [good] = clock_findings(datetime(2026, 3, 1, 12, 0).astimezone())
    assert good.severity is Severity.OK


@pytest.mark.parametrize(("command", "path"), [
    ("cat /etc/phobos/borg.pass", Path("/etc/phobos/borg.pass")),
    ("/bin/cat '/etc/phobos/my pass'", Path("/etc/phobos/my pass")),
    ("pass show nas/borg", None),
    ("cat relative.pass", None),
    ("cat 'unbalanced", None),
    (None, None),
])
def test_a_cat_passcommand_names_the_file_to_check(command: str | None,
                                                   path: Path | None) -> None:
    assert passcommand_file(command) == path


# --- luksDump ---------------------------------------------------------------------------

LUKS2_DUMP = """LUKS header information
Version:       \t2
Epoch:         \t4
UUID:          \t0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0

Data segments:
  0: crypt
\toffset: 16777216 [bytes]

Keyslots:
  0: luks2
\tKey:        512 bits
\tPBKDF:      pbkdf2
  1: luks2
\tKey:        512 bits
Tokens:
Digests:
  0: pbkdf2
"""

LUKS1_DUMP = """LUKS header information for /dev/sdb1

Version:       \t1
Key Slot 0: ENABLED
\tIterations:         \t1000
Key Slot 1: DISABLED
Key Slot 2: ENABLED
Key Slot 3: DISABLED
"""


def test_keyslots_of_luks2_and_luks1_dumps() -> None:
    assert parse_keyslots(LUKS2_DUMP) == [0, 1]
    assert parse_keyslots(LUKS1_DUMP) == [0, 2]
    assert parse_keyslots("Keyslots:\n  0: luks2\nTokens:\n") == [0]


# --- the NAS's files ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "ports", "command"), [
    ("-I 180 -j -k -p 2222 -s -c cryptroot-unlock", (2222,), "cryptroot-unlock"),
    ("-p2222 -jks", (2222,), None),
    ("-jksp 2200", (2200,), None),
    ("-p 192.168.1.5:2222 -p [fe80::1]:2223", (2222, 2223), None),
    ("", (22,), None),
    ("-c /bin/cryptroot-unlock", (22,), "/bin/cryptroot-unlock"),
    ('-c "cryptroot-unlock"', (22,), '"cryptroot-unlock"'),  # unquoted expansion
])
def test_dropbear_options_are_read_as_dropbear_does(value: str, ports: tuple[int, ...],
                                                    command: str | None) -> None:
    options = parse_dropbear_options(value)
    assert options.ports == ports
    assert options.command == command


def test_shell_values_follow_shell_quoting_and_the_last_assignment_wins() -> None:
    text = """# DROPBEAR_OPTIONS="-p 1"
DROPBEAR_OPTIONS="-p 2222 -s"   # comment
export IP='10.0.0.5::10.0.0.1:255.255.255.0:nas:eth0:none'
DROPBEAR_OPTIONS=-p\\ 2200
"""
    assert shell_value(text, "DROPBEAR_OPTIONS") == "-p 2200"
    assert shell_value(text, "IP") == "10.0.0.5::10.0.0.1:255.255.255.0:nas:eth0:none"
    assert shell_value(text, "DEVICE") is None
    assert shell_value("IP=\n", "IP") == ""
    with pytest.raises(ValueError):
        shell_value('IP="dhcp\n', "IP")


@pytest.mark.parametrize(("cmdline", "value", "words"), [
    ("BOOT_IMAGE=/vmlinuz root=/dev/mapper/nas-root ro quiet", None, None),
    ("root=/dev/x ip=dhcp quiet", "dhcp", "DHCP"),
    ("ip=:::::eth0:dhcp", ":::::eth0:dhcp", "DHCP on eth0"),
    ("ip=192.168.1.5::192.168.1.1:255.255.255.0:nas:eno1:none", None,
     "static address 192.168.1.5 on eno1"),
    ("ip=dhcp ip=none", "none", None),
])
def test_ip_kernel_parameter(cmdline: str, value: str | None, words: str | None) -> None:
    found = kernel_parameter(cmdline, "ip")
    if value is not None:
        assert found == value
    if words is not None:
        assert found is not None and describe_ip(found) == words


def test_crypttab_entries() -> None:
    text = """# <target name> <source device> <key file> <options>
sda3_crypt UUID=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 none luks,discard
extbackup UUID=aaaa /etc/phobos/keys/ext-a.key luks,noauto

swap /dev/sda2 /dev/urandom
"""
    entries = parse_crypttab(text)
    assert [(e.name, e.key, e.options) for e in entries] == [
        ("sda3_crypt", "none", ("luks", "discard")),
        ("extbackup", "/etc/phobos/keys/ext-a.key", ("luks", "noauto")),
        ("swap", "/dev/urandom", ())]


# --- the unlock client ----------------------------------------------------------------------


def _target(tmp: Path = Path("/tmp/admin")) -> Initramfs:
    return Initramfs(host="nas.example.org", known_hosts=tmp / "kh",
                     identity=tmp / "id_ed25519")


def test_unlock_argv_pins_the_initramfs_key_under_its_own_alias() -> None:
    argv = unlock_argv(_target())
    assert argv[0] == "ssh" and argv[-3:] == ("--", "nas.example.org", "cryptroot-unlock")
    joined = " ".join(argv)
    for option in ("-p 2222", "BatchMode=yes", "StrictHostKeyChecking=yes",
                   "UserKnownHostsFile=/tmp/admin/kh", "GlobalKnownHostsFile=/dev/null",
                   "HostKeyAlias=nas.example.org-initramfs", "ForwardAgent=no",
                   "-i /tmp/admin/id_ed25519", "IdentitiesOnly=yes", "-T"):
        assert option in joined
    without = unlock_argv(Initramfs(host="nas", port=22,
                                    known_hosts=Path("/k h"), alias="boot"))
    assert "-i" not in without and "IdentitiesOnly=yes" not in without
    assert 'UserKnownHostsFile="/k h"' in without and "HostKeyAlias=boot" in without


def test_the_default_known_hosts_is_apart_from_ssh_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "/home/ann/.cfg")
    assert default_known_hosts() == Path("/home/ann/.cfg/phobos/initramfs_known_hosts")


def test_success_is_read_from_cryptroot_unlock_s_report() -> None:
    result = outcome(_target(), 0, ["Please unlock disk sda3_crypt",
                                    "cryptsetup: sda3_crypt set up successfully"])
    assert result.unlocked == ("sda3_crypt",) and not result.nothing_left
    # The initramfs may cut the connection once the boot goes on: still a success.
    cut = outcome(_target(), 255, ["cryptsetup: root set up successfully",
                                   "Connection to nas closed by remote host."])
    assert cut.unlocked == ("root",)
    nothing = outcome(_target(), 0, [])
    assert nothing.nothing_left and nothing.unlocked == ()


@pytest.mark.parametrize(("code", "lines", "error", "words"), [
    (1, ["Please unlock disk root", "cryptsetup: cryptsetup failed, bad password or options?"],
     WrongPassphrase, "passphrase was refused"),
    (1, ["cryptsetup: maximum number of tries exceeded for root"],
     WrongPassphrase, "no tries are left"),
    (127, ["sh: cryptroot-unlock: not found"], UnlockCommandMissing,
     "has no cryptroot-unlock"),
    (1, ["Try again later"], NotWaiting, "not ready"),
    (1, ["Error: Timeout reached while waiting for askpass."], NotWaiting,
     "nothing asked"),
    (3, ["something odd"], StepFailed, "exit code 3: something odd"),
])
def test_failures_of_cryptroot_unlock(code: int, lines: list[str], error: type[Exception],
                                      words: str) -> None:
    with pytest.raises(error, match=words):
        outcome(_target(), code, lines)


CHANGED = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
The fingerprint for the ED25519 key sent by the remote host is
SHA256:u3x8nq2lBUpGQ0J3zW4c2xq7d1j1Yb8kq9Xr7mVv2s0.
Host key for nas.example.org-initramfs has changed and you have requested strict checking.
Host key verification failed.""".splitlines()


@pytest.mark.parametrize(("lines", "error", "words"), [
    (CHANGED, HostKeyChanged, "SHA256:u3x8nq2lBUpGQ0J3zW4c2xq7d1j1Yb8kq9Xr7mVv2s0"),
    (["No ED25519 host key is known for nas.example.org-initramfs and you have requested "
      "strict checking.", "Host key verification failed."], HostKeyUnknown,
     "no host key is pinned"),
    (["root@nas.example.org: Permission denied (publickey)."], LoginRefused,
     "refused the login"),
    (["ssh: connect to host nas.example.org port 2222: Connection refused"],
     HostUnreachable, "unreachable: Connection refused"),
    (["ssh: Could not resolve hostname nas.example.org: Name or service not known"],
     HostUnreachable, "Name or service not known"),
    (["kex_exchange_identification: read: Connection reset by peer"], HostUnreachable,
     "closed before login"),
])
def test_ssh_failures_say_exactly_what_happened(lines: list[str], error: type[Exception],
                                                words: str) -> None:
    with pytest.raises(error, match=words) as caught:
        outcome(_target(), 255, lines)
    hint = getattr(caught.value, "hint", "") or ""
    if error in (HostKeyChanged, HostKeyUnknown):
        assert "--pin --fingerprint" in hint and "doctor --initramfs" in hint


def test_render_groups_findings_and_shows_fixes() -> None:
    from phobos.cli.doctor import render

    text = render("this machine", [ok("tools", "borg", "Borg 1.4.5"),
                                   error("config", "file", "bad\n  x: unknown key",
                                         "fix it")], 1)
    assert "\ntools\n  ok     borg  Borg 1.4.5" in text
    assert "  ERROR  file  bad\n" in text and "              x: unknown key" in text
    assert "fix: fix it" in text and text.endswith("1 error, 0 warnings, 1 ok (exit 1)")
