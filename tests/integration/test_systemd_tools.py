"""Rendered units against the real systemd tools: `systemd-analyze verify` with empty
stderr (it warns with rc 0), `systemd-analyze security --offline=true` exposure per unit
kind, OnCalendar= lines through `systemd-analyze calendar`, device unit names through
`systemd-escape`, and install/uninstall into an alternate root with the real
`systemctl --root`."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from hostile import base_raw, with_value
from phobos.config.load import parse
from phobos.config.model import Config
from phobos.systemd.names import device_unit, escape_path
from phobos.systemd.units import Target, render

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "unit" / "golden" / "systemd"
PHOBOS = REPO / ".venv" / "bin" / "phobos"  # verify needs ExecStart= to exist

# Exposure ceilings (`systemd-analyze security`, lower is better; borgmatic's sample unit
# scores 2.7). The goals are 2.0 for pull/archive/check and 2.7 for drives. A pull
# keeps setuid/setgid bits and talks to the network: 2.2 is its floor with rsync
# --archive semantics. With [storage] device, storage-only jobs mount the storage in
# their own unit (CAP_SYS_ADMIN, @mount, the storage's device node: +0.6-0.7). Drive
# units join the backup namespace and so cannot have a mount namespace of their own on
# a real systemd (the QEMU system test showed it: the nsfs mount holding the backup
# namespace is left out of the copy): every mount-based option goes, 3.6. Those options
# would not have confined them anyway: setns() replaces the unit's view by the
# namespace's. The numbers are the measured scores: loosening any unit fails here.
LIMITS = {
    "plain": {"pull": 2.2, "archive": 2.0, "check": 2.0, "command": 2.0,
              "command+network": 2.2, "drive-sync": 3.6, "drive": 3.6, "failure": 2.0},
    "namespace": {"pull": 2.9, "archive": 2.0, "check": 2.0, "command": 2.0,
                  "command+network": 2.8, "drive-sync": 3.6, "drive": 3.6, "failure": 2.0},
}

KINDS_CONFIG = """
[storage]
root = "/backup"
holding = "/backup/holding"

[repos.main]
path = "/backup/borg"
passcommand = "cat /etc/phobos/borg.pass"

[hosts.luv]
address = "luv.example.org"
paths = ["/etc", "/home"]

[drives.ext-a]
luks_uuid = "2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11"
keyfile = "/etc/phobos/keys/ext-a.key"

[jobs.pull]
kind = "pull"
host = "luv"
schedule = "*-*-* 06:00"

[jobs.archive]
kind = "archive"
repo = "main"
sources = ["/backup/holding", "/etc", "/home"]
exclude = ["/etc/phobos/keys", "/etc/phobos/borg.pass"]
schedule = "*-*-* 03:00"

[jobs.check]
kind = "check"
repo = "main"
schedule = "Sun *-*-* 07:00"

[jobs.command]
kind = "command"
argv = ["/usr/local/bin/tidy"]
writes = ["storage"]

[jobs."command+network"]
kind = "command"
argv = ["/usr/local/bin/sync-nuhc"]
writes = ["holding:luv"]

[jobs.drive-sync]
kind = "drive-sync"
repo = "main"
drives = ["ext-a"]

[systemd.sandbox."command+network"]
network = true

[notify]
led = { driver = "blinkstick" }
email = { to = ["root"] }
"""


def _config(text: str, source: Path = Path("/etc/phobos/phobos.toml")) -> Config:
    return parse(tomllib.loads(text), source, text)


def _kinds_config(namespace: bool) -> Config:
    text = KINDS_CONFIG.replace('"command+network"', '"command-network"')
    config = _config(text)
    if namespace:
        storage = dataclasses.replace(config.storage, device="UUID=0d6c1b7e-9f7d-4a55")
        config = dataclasses.replace(config, storage=storage)
    return config


def _write(files: dict[str, str], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in files.items():
        (directory / name).write_text(text)
        paths.append(directory / name)
    return paths


def _target(config_file: Path) -> Target:
    return Target(executable=PHOBOS, config=config_file)


@pytest.mark.parametrize("case", ["nas", "plain", "kinds", "kinds-namespace"])
def test_verify_has_nothing_to_say(case: str, tmp_path: Path) -> None:
    if case.startswith("kinds"):
        config = _kinds_config(namespace=case.endswith("namespace"))
    else:
        config = _config((GOLDEN / f"{case}.toml").read_text())
    units = [p for p in _write(render(config, _target(tmp_path / "phobos.toml")), tmp_path)
             if p.suffix in (".service", ".timer")]
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_verify_units_with_hostile_but_legal_values(tmp_path: Path) -> None:
    """Values that need every kind of escaping (spaces, quotes, backslashes, %, $, ':')
    in the paths, description, program and config file: systemd reads the units
    without a word (unknown keys, relative paths or bad specifiers would be warnings)."""
    raw = with_value(base_raw(tmp_path), ("systemd", "sandbox", "tidy", "read_write_paths"),
                     ["/srv/a b/%i/$X/\"q'\\;", "/srv/a:b", "/srv/x\\"])
    raw = with_value(raw, ("jobs", "nightly", "description"), '100% "sure"; $HOME a\\b')
    raw = with_value(raw, ("paths", "state"), "/var/lib/pho bos:%n")
    odd = tmp_path / "o d%d$x"  # systemd refuses quotes and backslashes in a program
    odd.mkdir()
    (odd / "phobos").symlink_to(PHOBOS)
    source = tmp_path / "c o%n$X\\'q\";" / "phobos.toml"
    config = parse(raw, source)
    units = [p for p in _write(render(config, Target(executable=odd / "phobos",
                                                     config=source)),
                               tmp_path / "units")
             if p.suffix in (".service", ".timer")]
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, units)],
                          capture_output=True, text=True, timeout=120)
    assert done.stderr == "" and done.returncode == 0, done.stderr


def exposure(unit: Path) -> float:
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                           str(unit)], capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


@pytest.mark.parametrize("mode", ["plain", "namespace"])
def test_exposure_per_kind(mode: str, tmp_path: Path) -> None:
    config = _kinds_config(namespace=mode == "namespace")
    files = render(config, _target(tmp_path / "phobos.toml"))
    _write(files, tmp_path)
    scores = {job.replace("command-network", "command+network"):
              exposure(tmp_path / f"phobos-job-{job}.service") for job in config.jobs}
    scores["drive"] = exposure(tmp_path / "phobos-drive-ext-a.service")
    scores["failure"] = exposure(tmp_path / "phobos-failure@.service")
    print(mode, scores)  # shown with -s: the numbers the docs quote
    over = {kind: (score, LIMITS[mode][kind]) for kind, score in scores.items()
            if score > LIMITS[mode][kind]}
    assert over == {}


def test_on_calendar_lines_are_systemd_calendars(tmp_path: Path) -> None:
    files = render(_config((GOLDEN / "nas.toml").read_text()), _target(tmp_path / "c"))
    specs = [line.split("=", 1)[1] for name, text in files.items() if name.endswith(".timer")
             for line in text.splitlines() if line.startswith("OnCalendar=")]
    assert len(specs) == 5  # four jobs and the hourly overdue check
    for spec in specs:
        done = subprocess.run(["systemd-analyze", "calendar", spec], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("uuid", ["A2EA-96ED", "2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11",
                                  "0-0", "x.y:z_w"])
def test_device_unit_matches_systemd_escape(uuid: str) -> None:
    done = subprocess.run(["systemd-escape", "--path", "--suffix=device",
                           f"/dev/disk/by-uuid/{uuid}"], capture_output=True, text=True,
                          check=True, timeout=30)
    assert device_unit(uuid) == done.stdout.strip()


@pytest.mark.parametrize("path", ["/a b/ç", "/.x/.y", "//srv//backup/", "/tab\there"])
def test_escape_path_matches_systemd_escape(path: str) -> None:
    done = subprocess.run(["systemd-escape", "--path", path], capture_output=True, text=True,
                          check=True, timeout=30)
    assert escape_path(path) == done.stdout.strip()


# --- install / uninstall into an image root -----------------------------------------------


def _phobos(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PHOBOS), "-c", str(config), *args], capture_output=True,
                          text=True, timeout=120)


def _image_config(tmp_path: Path) -> Path:
    text = (GOLDEN / "nas.toml").read_text()
    config = tmp_path / "phobos.toml"
    config.write_text(text)
    return config


def test_install_and_uninstall_offline(tmp_path: Path) -> None:
    config = _image_config(tmp_path)
    root = tmp_path / "image"
    root.mkdir()
    foreign = root / "etc/systemd/system/other.service"
    foreign.parent.mkdir(parents=True)
    foreign.write_text("[Service]\nExecStart=/bin/true\n")

    done = _phobos(config, "systemd", "install", "--root", str(root))
    assert done.returncode == 0, done.stderr
    unit_dir = root / "etc/systemd/system"
    assert (unit_dir / "phobos-job-nightly.timer").is_file()
    assert (unit_dir / "timers.target.wants/phobos-job-nightly.timer").is_symlink()
    device = r"dev-disk-by\x2duuid-A2EA\x2d96ED.device.wants"
    assert (unit_dir / device / "phobos-drive-ext-b.service").is_symlink()
    assert not (root / "etc/udev/rules.d/90-phobos-drives.rules").exists()
    assert (root / "root/.cache/borg").is_dir()  # bound into the units: must exist
    assert (root / "var/lib/phobos/systemd-installed.json").is_file()
    assert "enabled offline" in done.stdout

    again = _phobos(config, "systemd", "install", "--root", str(root))
    assert "0 written" in again.stdout
    listed = _phobos(config, "systemd", "list", "--root", str(root), "--json")
    assert '"outdated"' not in listed.stdout and '"installed"' in listed.stdout

    done = _phobos(config, "systemd", "uninstall", "--root", str(root))
    assert done.returncode == 0, done.stderr
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*phobos*"))
    assert left == ["var/lib/phobos"]  # phobos's state directory: its data, not a unit
    assert list((root / "var/lib/phobos").iterdir()) == []
    assert foreign.read_text() == "[Service]\nExecStart=/bin/true\n"


def test_install_drops_units_of_removed_jobs_and_keeps_edited_files(tmp_path: Path) -> None:
    config = _image_config(tmp_path)
    root = tmp_path / "image"
    root.mkdir()
    assert _phobos(config, "systemd", "install", "--root", str(root)).returncode == 0
    unit_dir = root / "etc/systemd/system"
    edited = unit_dir / "phobos-job-offsite.service"
    edited.write_text(edited.read_text() + "# mine\n")
    listed = _phobos(config, "systemd", "list", "--root", str(root))
    assert re.search(r"phobos-job-offsite\.service\s+modified", listed.stdout)

    text = config.read_text().replace("[jobs.check]", "[jobs.weekly]")
    config.write_text(text.replace("[jobs.offsite]\n", "[jobs.offsite2]\n"))
    done = _phobos(config, "systemd", "install", "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert not (unit_dir / "phobos-job-check.timer").exists()
    assert not (unit_dir / "timers.target.wants/phobos-job-check.timer").exists()
    assert (unit_dir / "timers.target.wants/phobos-job-weekly.timer").is_symlink()
    assert edited.exists() and "kept" in done.stderr

    done = _phobos(config, "systemd", "uninstall", "--root", str(root))
    assert done.returncode == 1 and "kept" in done.stderr
    assert sorted(p.name for p in unit_dir.rglob("phobos-*")) == [edited.name]


def test_render_dir(tmp_path: Path) -> None:
    config = _image_config(tmp_path)
    done = _phobos(config, "systemd", "render", "--dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "phobos-failure@.service").is_file()
    printed = _phobos(config, "systemd", "render")
    assert "### phobos-job-nightly.timer" in printed.stdout
