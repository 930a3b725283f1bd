"""phobos installed the Debian way: ``scripts/build-deb`` builds the release's .deb,
``apt-get install`` puts it into a booted Debian (systemd-nspawn) and resolves its
Depends from the archive (Debian's own borgbackup: 1.2 on bookworm, 1.4 on trixie),
``phobos demo`` runs the seed's day there with that Borg, and ``apt-get purge`` removes
the package but keeps /etc/phobos and the history (all of it with PHOBOS_PURGE_DATA=yes).

Needs root, mmdebstrap, systemd-nspawn, nsenter, dpkg-deb, lintian and git (scripts/setup
installs them); it fails, never skips, when they are missing. Cold (no cached build
root, package or rootfs) a release takes about four minutes; warm about one.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from subprocess import CompletedProcess

import pytest
from debian import (
    MAKE_LOOP_NODES,
    NSPAWN_OPTIONS,
    built_deb,
    detach_loops_under,
    field,
    install_root,
)
from nspawn import Container, booted

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.timeout(1500)]

# What each release must bring: its Python (the venv's interpreter) and its Borg.
RELEASES = {"bookworm": ("python3.11", "1.2."), "trixie": ("python3.13", "1.4.")}
REQUIRED = {"borgbackup", "rsync", "openssh-client", "cryptsetup-bin"}
DATA = ("/etc/phobos", "/var/lib/phobos", "/var/log/phobos")
CONFIG = "/etc/phobos/phobos.toml"
COMPLETIONS = {"bash": "/usr/share/bash-completion/completions/phobos",
               "zsh": "/usr/share/zsh/vendor-completions/_phobos",
               "fish": "/usr/share/fish/vendor_completions.d/phobos.fish"}
# The container's commands get a clean environment, not the test runner's.
ENV = ("env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "HOME=/root", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive")


def _run(ct: Container, *argv: str, check: bool = True, timeout: float = 120,
         env: Sequence[str] = ()) -> CompletedProcess[str]:
    return ct.run([*ENV, *env, *argv], check=check, timeout=timeout)


def _sh(ct: Container, script: str, **kwargs: object) -> CompletedProcess[str]:
    return _run(ct, "/bin/sh", "-c", script, **kwargs)  # type: ignore[arg-type]


def _installed(ct: Container, package: str) -> str:
    """The installed version of ``package``, or "" when it is not installed."""
    done = _run(ct, "dpkg-query", "-W", "-f=${Status} ${Version}", package, check=False)
    words = done.stdout.split()
    return words[-1] if done.returncode == 0 and words[:3] == ["install", "ok",
                                                                "installed"] else ""


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_deb_installs_runs_the_demo_and_purges(release: str) -> None:
    timings: dict[str, float] = {}
    started = time.monotonic()
    deb = built_deb(release)
    timings["build (or cache)"] = time.monotonic() - started
    _check_package(deb, release)
    tarball = install_root(release, deb)
    timings["rootfs (or cache)"] = time.monotonic() - started - sum(timings.values())
    with booted(binds=[(deb.parent, "/dist")], tarball=tarball,
                options=NSPAWN_OPTIONS) as ct, detach_loops_under(ct.root):
        steps = (("apt install", lambda: _apt_install(ct, deb, release)),
                 ("installed files", lambda: _check_installed(ct, release)),
                 ("demo", lambda: _demo(ct)),
                 ("history + units", lambda: _history_and_units(ct)),
                 ("purge", lambda: _purge_keeps_data(ct)),
                 ("purge all", lambda: _purge_data_too(ct, deb)))
        for name, step in steps:
            begun = time.monotonic()
            step()
            timings[name] = time.monotonic() - begun
    print(f"\n{release}: {deb.name} ({deb.stat().st_size // 1024} KiB); " + ", ".join(
        f"{name} {seconds:.1f}s" for name, seconds in timings.items()))


def _check_package(deb: Path, release: str) -> None:
    python, _ = RELEASES[release]
    depends = {part.split()[0] for part in field(deb, "Depends").split(",")}
    assert REQUIRED | {python} <= depends, depends
    lintian = (deb.parent / "lintian.txt").read_text()
    tags = [line for line in lintian.splitlines() if line[:2] in ("E:", "W:")]
    assert tags == [], lintian


def _apt_install(ct: Container, deb: Path, release: str) -> None:
    assert _installed(ct, "borgbackup") == ""  # so apt has to resolve Depends
    _run(ct, "apt-get", "install", "--yes", f"/dist/{deb.name}", timeout=600)
    assert _installed(ct, "phobos") == field(deb, "Version")
    assert _installed(ct, "borgbackup").startswith(RELEASES[release][1])
    automatic = _run(ct, "apt-mark", "showauto").stdout.split()
    assert set(automatic) >= REQUIRED, automatic  # pulled in as dependencies


def _check_installed(ct: Container, release: str) -> None:
    assert _run(ct, "phobos", "--version").stdout.strip() == "phobos 0.1.0"
    assert _run(ct, "dpkg", "--verify", "phobos").stdout == ""  # md5sums match the files
    borg = _run(ct, "phobos", "doctor", "--json", check=False).stdout
    assert f'Borg {RELEASES[release][1]}' in borg and "/usr/bin/borg" in borg, borg
    assert _run(ct, "man", "-w", "phobos").stdout.strip() == \
        "/usr/share/man/man1/phobos.1.gz"
    assert "phobos" in _sh(ct, "man phobos 2>/dev/null | head -5").stdout
    _check_completions(ct)
    example = "/usr/share/doc/phobos/examples/phobos.toml"
    _run(ct, "phobos", "-c", example, "config", "check")
    files = _run(ct, "dpkg", "-L", "phobos").stdout.split()
    # No conffiles, no units, no udev rules: nothing the package could enable.
    shipped = ("/etc", "/lib/systemd", "/usr/lib/systemd", "/lib/udev", "/usr/lib/udev")
    assert [f for f in files if f.startswith(shipped)] == []
    assert not ct.path("/etc/phobos").exists()
    assert _phobos_units(ct) == []


def _check_completions(ct: Container) -> None:
    """bash completes; zsh and fish files exist exactly when phobos can write them."""
    words = _run(ct, "bash", "-c", f"source {COMPLETIONS['bash']}; "
                 "COMP_WORDS=(phobos dri); COMP_CWORD=1; _phobos; echo ${COMPREPLY[*]}")
    assert words.stdout.split() == ["drive"]
    for shell in ("zsh", "fish"):
        generated = _run(ct, "phobos", "completion", shell, check=False)
        shipped = ct.path(COMPLETIONS[shell])
        if generated.returncode == 0 and generated.stdout:
            assert shipped.read_text() == generated.stdout
        else:
            assert not shipped.exists()


def _phobos_units(ct: Container) -> list[str]:
    listed = _run(ct, "systemctl", "list-unit-files", "--no-legend", "--plain", "phobos*",
                  check=False).stdout.split()
    units = [word for word in listed if word.startswith("phobos")]
    files = [p.name for p in ct.path("/etc/systemd/system").rglob("phobos*")]
    return units + files


def _demo(ct: Container) -> None:
    """The whole demo, as a service of the container's systemd (its capabilities, not
    ours): hosts, Borg, a check, a loop-device drive, a failing job and its mail."""
    _sh(ct, MAKE_LOOP_NODES)
    done = _run(ct, "systemd-run", "--wait", "--pipe", "--quiet", "--collect",
                "phobos", "demo", check=False, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    for expected in ("/usr/bin/borg create", "plugged in as /dev/loop",
                     "mail in the admin's mailbox", "sandbox removed"):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    assert "UNEXPECTED" not in out, out


def _history_and_units(ct: Container) -> None:
    """An admin's config, a run in the history, and the units `phobos systemd install`
    enables: what the purge must keep, and remove."""
    ct.path(CONFIG).parent.mkdir(mode=0o750)
    ct.path(CONFIG).write_text(textwrap.dedent("""\
        [jobs.hello]
        kind = "command"
        argv = ["/bin/true"]
        schedule = "*-*-* 04:00"
        """))
    _run(ct, "phobos", "run", "hello")
    assert ct.path("/var/lib/phobos/history.sqlite").is_file()
    _run(ct, "phobos", "systemd", "install")
    state = _run(ct, "systemctl", "is-enabled", "phobos-job-hello.timer", check=False)
    assert state.stdout.strip() == "enabled"
    # The units run the stable /usr/bin/phobos, not a path inside the venv.
    service = ct.path("/etc/systemd/system/phobos-job-hello.service").read_text()
    assert "ExecStart=/usr/bin/phobos " in service, service


def _data_files(ct: Container) -> set[str]:
    return {str(path.relative_to(ct.root)) for directory in DATA
            for path in ct.path(directory).rglob("*") if path.is_file()}


def _purge_keeps_data(ct: Container) -> None:
    files = [f for f in _run(ct, "dpkg", "-L", "phobos").stdout.split()
             if not ct.path(f).is_dir()]
    data = _data_files(ct)
    assert {"etc/phobos/phobos.toml", "var/lib/phobos/history.sqlite"} <= data
    purged = _run(ct, "apt-get", "purge", "--yes", "phobos", timeout=300)
    assert "phobos: kept" in purged.stdout, purged.stdout
    assert _installed(ct, "phobos") == ""
    assert [f for f in files if ct.path(f).exists() or ct.path(f).is_symlink()] == []
    assert not ct.path("/usr/lib/phobos").exists()  # byte-code included
    # prerm ran `phobos systemd uninstall`
    assert _phobos_units(ct) == [], purged.stdout + purged.stderr
    # All kept, but the manifest of the units just removed.
    assert _data_files(ct) == data - {"var/lib/phobos/systemd-installed.json"}
    assert _installed(ct, "borgbackup") != ""  # dependencies stay until autoremove


def _purge_data_too(ct: Container, deb: Path) -> None:
    _run(ct, "apt-get", "install", "--yes", f"/dist/{deb.name}", timeout=600)
    _run(ct, "apt-get", "purge", "--yes", "phobos", env=["PHOBOS_PURGE_DATA=yes"],
         timeout=300)
    assert [d for d in DATA if ct.path(d).exists()] == []
    assert not ct.path("/usr/lib/phobos").exists()
