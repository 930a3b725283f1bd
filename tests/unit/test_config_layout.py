"""Cross-table layout checks (config/layout.py): each layout that loses data or carries
keys off-site is refused with its reason and key path; risky ones are warnings; values
that can never be valid are refused at load time."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from phobos.config.layout import layout_warnings
from phobos.config.load import parse
from phobos.config.model import Config
from phobos.errors import ConfigError

BASE = tomllib.loads("""
[paths]
state = "/var/lib/phobos"
run = "/run/phobos"
keys = "/etc/phobos/keys"

[storage]
root = "/backup"
holding = "/backup/holding"

[repos.main]
path = "/backup/borg"
passphrase_file = "/etc/phobos/borg.pass"

[drives.ext-a]
luks_uuid = "2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11"

[drives.ext-b]
luks_uuid = "a2ea-96ed"

[jobs.nightly]
kind = "archive"
repo = "main"
sources = ["/backup/holding", "/srv"]
""")


def load(**changes: Any) -> Config:
    """BASE with ``changes`` ({"storage.holding": "/x"}: dotted keys, None deletes)."""
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *tables, key = dotted.split(".")
        table = raw
        for name in tables:
            table = table.setdefault(name, {})
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return parse(raw, Path("/etc/phobos/phobos.toml"))


def refused(**changes: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(**changes)
    return str(info.value)


def test_the_base_layout_is_fine() -> None:
    config = load()
    assert layout_warnings(config) == []


@pytest.mark.parametrize("changes, where, reason", [
    ({"storage.holding": "/backup/borg"}, "repos.main.path", "overlap: pulls write"),
    ({"storage.holding": "/backup/borg/holding"}, "repos.main.path", "overlap"),
    ({"repos.main.path": "/backup/holding/borg"}, "repos.main.path", "overlap"),
    ({"repos.main.path": "/backup"}, "repos.main.path", "is the storage root"),
    ({"repos.other": {"path": "/backup/borg"}}, "repos.other.path",
     "two repositories cannot share"),
    ({"repos.other": {"path": "/backup/borg/inner"}}, "repos.other.path", "overlap"),
    ({"paths.state": "/backup/holding/state"}, "storage.holding",
     "phobos's state (history with every run's log) /backup/holding/state is inside the "
     "holding area"),
    ({"paths.keys": "/backup/holding/keys"}, "storage.holding", "keys directory"),
    ({"paths.keys": "/srv/keys"}, "jobs.nightly.sources",
     "the keys directory /srv/keys is inside the source /srv: it would be archived and "
     "carried off-site on a drive; add \"/srv/keys\" to the job's `exclude`"),
    ({"repos.main.passphrase_file": "/srv/borg.pass"}, "jobs.nightly.sources",
     "repo main passphrase /srv/borg.pass is inside the source /srv"),
    ({"paths.run": "/backup/holding"}, "paths.run", "locks and the backup namespace"),
    ({"drives.ext-a.mountpoint": "/"}, "drives.ext-a.mountpoint", "system directory"),
    ({"drives.ext-a.mountpoint": "/etc"}, "drives.ext-a.mountpoint", "system directory"),
    ({"drives.ext-a.mountpoint": "/backup/borg"}, "drives.ext-a.mountpoint",
     "overlaps repository main /backup/borg"),
    ({"drives.ext-a.mountpoint": "/backup/holding/x"}, "drives.ext-a.mountpoint",
     "overlaps the holding area"),
    ({"drives.ext-a.mountpoint": "/backup"}, "drives.ext-a.mountpoint",
     "is or holds the storage root /backup: the mounted drive would hide it"),
    ({"drives.ext-a.mountpoint": "/srv/drive"}, "drives.ext-a.mountpoint",
     "overlaps job nightly's source /srv"),
    ({"drives.ext-a.mountpoint": "/run/phobos"}, "drives.ext-a.mountpoint",
     "is or holds the run directory"),
    ({"drives.ext-a.mountpoint": "/mnt/d", "drives.ext-b.mountpoint": "/mnt/d"},
     "drives.ext-b.mountpoint", "also drive ext-a's mountpoint"),
    ({"drives.ext-b.luks_uuid": "2F1E6B1C-1B8E-4F37-9D53-0C5D0A8E6F11"},
     "drives.ext-b.luks_uuid", "drive ext-a has the same UUID"),
    ({"notify.led": {"driver": "file", "path": "/etc/passwd"}}, "notify.led.path",
     "system file"),
    ({"notify.led": {"driver": "file", "path": "/backup/borg/led"}}, "notify.led.path",
     "inside repository main"),
    ({"systemd.sandbox.nightly2": {"network": True}}, "systemd.sandbox.nightly2",
     "no job named 'nightly2' (did you mean 'nightly'?)"),
    ({"notify.ping": {"jobs": {"nigthly": "https://hc-ping.com/x"}}},
     "notify.ping.jobs.nigthly", "no job named 'nigthly' (did you mean 'nightly'?)"),
])
def test_layouts_that_lose_data_are_refused(changes: dict[str, Any], where: str,
                                            reason: str) -> None:
    text = refused(**changes)
    assert f"{where}: " in text and reason in text, text


def test_an_excluded_keys_directory_may_be_inside_a_source() -> None:
    load(**{"paths.keys": "/srv/keys", "jobs.nightly.exclude": ["/srv/keys"]})
    load(**{"paths.keys": "/srv/keys/phobos", "jobs.nightly.exclude": ["pp:/srv/keys/"]})
    text = refused(**{"paths.keys": "/srv/keys", "jobs.nightly.exclude": ["*/keys"]})
    assert "the keys directory /srv/keys is inside the source /srv" in text


def test_one_message_per_place() -> None:
    # The keyfiles inside the keys directory are not reported again.
    text = refused(**{"paths.keys": "/srv/keys"})
    assert text.count("inside the source /srv") == 1


def test_mountpoints_that_hide_nothing_are_fine() -> None:
    load(**{"drives.ext-a.mountpoint": "/mnt/ext-a"})
    load(**{"drives.ext-a.mountpoint": "/backup/drives/ext-a"})  # beside the repository
    load(**{"drives.ext-a.mountpoint": "/var/lib/phobos/drives/ext-a"})


def test_risky_layouts_are_warnings() -> None:
    config = load(**{"paths.state": "/run/phobos-state"})
    assert [w.split(":")[0] for w in layout_warnings(config)] == ["paths.state"]
    config = load(**{"storage.device": "UUID=0d6c1b7e", "repos.main.path": "/srv2/borg"})
    assert layout_warnings(config) == [
        "repos.main.path: /srv2/borg is outside storage.root /backup: it is not on "
        "UUID=0d6c1b7e, which only the backup namespace shows"]


@pytest.mark.parametrize("changes, where, reason", [
    ({"storage.device": "UUID=x\nExecStartPre=/bin/sh"}, "storage.device", "a newline"),
    ({"storage.device": "--bind"}, "storage.device", "is not a device"),
    ({"storage.device": "LABEL=a/b"}, "storage.device", "is not a device"),
    ({"storage.root": "/backup/../etc"}, "storage.root", "contains '..'"),
    ({"repos.main.path": "/backup/bo\x00rg"}, "repos.main.path", "NUL"),
    ({"repos.main.path": "/backup/bo\trg"}, "repos.main.path", "control character"),
    ({"drives.ext-a.luks_uuid": "../../etc"}, "drives.ext-a.luks_uuid", "is not a UUID"),
    ({"drives.ext-a.luks_uuid": "0" * 65}, "drives.ext-a.luks_uuid", "is not a UUID"),
    ({"jobs.nightly.description": "two\nlines"}, "jobs.nightly.description", "newline"),
    ({"jobs.nightly.description": "ends in \\"}, "jobs.nightly.description", "backslash"),
    ({"jobs.nightly.randomized_delay": float("inf")}, "jobs.nightly.randomized_delay",
     "at most 3650 days"),
    ({"jobs.nightly.estimate": float("nan")}, "jobs.nightly.estimate", "at most 3650 days"),
    ({"jobs.nightly.timeout": 10**400}, "jobs.nightly.timeout", "at most 3650 days"),
    ({"jobs.nightly.timeout": "99999d"}, "jobs.nightly.timeout", "at most 3650 days"),
    ({"hosts.luv": {"address": "luv", "paths": ["/etc"], "user": "--log-file=/tmp/x"}},
     "hosts.luv.user", "is not a login name"),
    ({"hosts.luv": {"address": "luv", "paths": ["/etc"], "user": "a@b"}},
     "hosts.luv.user", "is not a login name"),
    ({"jobs." + "n" * 212: {"kind": "command", "argv": ["/bin/true"]}}, "jobs.nnnn",
     "212 characters long; names are at most 211"),
])
def test_values_that_can_never_work_are_refused_at_load(changes: dict[str, Any], where: str,
                                                         reason: str) -> None:
    text = refused(**changes)
    assert where in text and reason in text, text


def test_the_longest_name_loads() -> None:
    load(**{"jobs." + "n" * 211: {"kind": "command", "argv": ["/bin/true"]}})


def test_config_check_prints_the_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    from phobos.__main__ import main

    config = tmp_path / "phobos.toml"
    config.write_text('[paths]\nstate = "/run/phobos-state"\n')
    assert main(["-c", str(config), "config", "check"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{config}: ok")
    assert err.startswith("phobos: warning: paths.state: /run/phobos-state is usually a tmpfs")


def test_the_example_the_package_installs_is_a_valid_layout() -> None:
    from phobos.config.load import load

    load(Path(__file__).resolve().parents[2] / "docs" / "examples" / "phobos.toml")
