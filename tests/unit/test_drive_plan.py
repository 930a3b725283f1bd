"""Pure parts of the off-site drive strand: config of drives and drive-sync jobs, argv
tables (rsync, borg with-lock, cryptsetup, mount), rsync listing parsing and the
verification, rotation from recorded state, the config snippet and the recovery sheet."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from configs import config_from

from phobos.config.model import Config
from phobos.core.locks import Resource
from phobos.drives.identity import by_uuid, get
from phobos.drives.init import KEY_BYTES, check_passphrase, snippet, write_keyfile
from phobos.drives.rotation import overdue_drives, rotation
from phobos.drives.sheet import render_sheet
from phobos.drives.unlockers import CryptsetupUnlocker, PlainUnlocker, unlocker_for
from phobos.errors import ConfigError, UsageError
from phobos.jobs import drive_sync
from phobos.jobs.drive_sync import DriveSyncJob
from phobos.tools import borg as borgtool
from phobos.tools import borg_repository, cryptsetup, rsync
from phobos.tools import mount as mnt
from phobos.tools.rsync import Entry

UUID_A = "11111111-2222-4333-8444-555555555555"
UUID_B = "66666666-7777-4888-9999-000000000000"


def drives_config(tmp_path: Path, body: str) -> Config:
    return config_from(textwrap.dedent(f"""\
        [paths]
        run = "/run/phobos"
        keys = "/etc/phobos/keys"

        [storage]
        holding = "/backup/holding"

        [repos.main]
        path = "/backup/borg"
        lock_wait = "1h"

        [hosts.luv]
        address = "luv.example.org"

        [drives.ext-a]
        luks_uuid = "{UUID_A}"

        [drives.ext-b]
        luks_uuid = "{UUID_B}"
        unlock = "none"
        mountpoint = "/mnt/ext-b"
        max_age = "10d"
        """) + textwrap.dedent(body), root=tmp_path)


OFFSITE = """
    [jobs.offsite]
    kind = "drive-sync"
    repo = "main"
    drives = ["ext-a", "ext-b"]
    """


def offsite(config: Config) -> DriveSyncJob:
    job = config.jobs["offsite"]
    assert isinstance(job, DriveSyncJob)
    return job


# --- config --------------------------------------------------------------------------------


def test_drive_defaults_resolve_from_paths(tmp_path: Path) -> None:
    config = drives_config(tmp_path, OFFSITE)
    a, b = get(config, "ext-a"), get(config, "ext-b")
    assert a.keyfile == Path("/etc/phobos/keys/ext-a.key")
    assert a.header_backup == Path("/etc/phobos/keys/ext-a.luks-header")
    assert a.mountpoint == Path("/run/phobos/drives/ext-a")
    assert a.mapping == "phobos-ext-a" and a.unlock == "luks" and a.max_age == 35 * 86400
    assert b.keyfile is None and b.mountpoint == Path("/mnt/ext-b") and b.max_age == 864000
    assert isinstance(unlocker_for(a), CryptsetupUnlocker)
    assert isinstance(unlocker_for(b), PlainUnlocker)
    assert by_uuid(config, UUID_B.upper()) == b
    assert by_uuid(config, "0000") is None
    with pytest.raises(UsageError, match="no drive named 'ext-c' \\(did you mean"):
        get(config, "ext-c")


def test_resources_read_the_repo_and_write_the_drives(tmp_path: Path) -> None:
    config = drives_config(tmp_path, OFFSITE + "holding = true\n")
    assert offsite(config).resources(config) == (
        Resource("drive:ext-a", True), Resource("drive:ext-b", True),
        Resource("repo:main", False), Resource("holding:luv", False))


@pytest.mark.parametrize(("body", "message"), [
    ('repo = "mian"\ndrives = ["ext-a"]', "jobs.offsite.repo: no repo named 'mian' "
     "(did you mean 'main'?)"),
    ('repo = "main"\ndrives = ["ext-c"]', "jobs.offsite.drives.[0]: no drive named 'ext-c'"),
    ('repo = "main"\ndrives = []', "jobs.offsite.drives: list at least one drive"),
    ('repo = "main"\ndrives = ["ext-a"]\ntarget = "/abs"', "must be a relative directory"),
    ('repo = "main"\ndrives = ["ext-a"]\ntarget = "../up"', "must be a relative directory"),
])
def test_job_config_errors(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        drives_config(tmp_path, f'[jobs.offsite]\nkind = "drive-sync"\n{body}\n')
    assert any(message in problem for problem in err.value.problems), err.value.problems


def test_unlock_must_be_known(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        drives_config(tmp_path, '[drives.ext-c]\nluks_uuid = "x"\nunlock = "tpm"\n')
    assert any("'tpm' is not one of 'luks', 'none'" in p for p in err.value.problems)


# --- plans -----------------------------------------------------------------------------------


def test_the_repo_is_copied_under_borgs_lock(tmp_path: Path) -> None:
    config = drives_config(tmp_path, OFFSITE + 'rsync_options = ["--max-alloc=4GiB"]\n')
    (copy,) = drive_sync.plan(offsite(config), config, Path("/run/phobos/drives/ext-a"))
    assert copy.dest == Path("/run/phobos/drives/ext-a/borg")
    assert copy.step.argv == (
        "borg", "with-lock", "--lock-wait", "3600", "/backup/borg",
        "rsync", "-a", "--delete", "--delete-excluded", "-ii", "--out-format=%i|%l|%n",
        "--exclude=/lock.exclusive", "--exclude=/lock.roster", "--max-alloc=4GiB",
        "--", "/backup/borg/", "./borg/")
    # Relative to the drive's root: a drive unmounted mid-copy never fills the mount point.
    assert copy.step.cwd == "/run/phobos/drives/ext-a"
    assert copy.step.capture and copy.step.name == "copy-repo"


def test_holding_area_and_target(tmp_path: Path) -> None:
    config = drives_config(tmp_path, OFFSITE + 'holding = true\ntarget = "repos/main"\n')
    repo, holding = drive_sync.plan(offsite(config), config, Path("/mnt/x"))
    assert repo.dest == Path("/mnt/x/repos/main")
    assert holding.step.argv == ("rsync", "-a", "--delete", "--delete-excluded", "-ii",
                                 "--out-format=%i|%l|%n", "--", "/backup/holding/",
                                 "./holding/")
    assert holding.step.cwd == "/mnt/x"
    assert holding.step.warn_codes == (24,)  # files vanishing on a live system


def test_borg_base_dir_reaches_borg(tmp_path: Path) -> None:
    config = drives_config(tmp_path, OFFSITE)
    (copy,) = drive_sync.plan(offsite(config), config, Path("/mnt/x"))
    # No base_dir here: only the stable host id (see borg_repository.host_id).
    assert copy.step.env == {"BORG_HOST_ID": borg_repository.host_id()}
    assert borgtool.base_env(Path("/b")) == {"BORG_HOST_ID": borg_repository.host_id(),
                                             "BORG_BASE_DIR": "/b"}
    assert copy.step.explain is not None
    assert copy.step.explain(11) == "file I/O error (drive full?)"
    assert copy.step.explain(2).endswith("or a Borg error such as a lock timeout")


# --- listing and verification ------------------------------------------------------------------


LISTING = """\
cd+++++++++|4096|./
>f+++++++++|73|README
.f         |41258|index.5
cd+++++++++|4096|data/
>f+++++++++|1000855|data/0/2
cL+++++++++|1|link
*deleting  |0|old
>f+++++++++|5|odd\\#012name
garbage line
"""


def test_parse_listing() -> None:
    assert rsync.parse_listing(LISTING) == {
        ".": Entry("d", 4096), "README": Entry("f", 73), "index.5": Entry("f", 41258),
        "data": Entry("d", 4096), "data/0/2": Entry("f", 1000855), "link": Entry("L", 1),
        "odd\nname": Entry("f", 5)}
    assert rsync.copied_bytes(LISTING) == 73 + 1000855 + 5


def test_scan_matches_a_listing_of_the_same_tree(tmp_path: Path) -> None:
    (tmp_path / "data" / "0").mkdir(parents=True)
    (tmp_path / "data" / "0" / "1").write_bytes(b"x" * 10)
    (tmp_path / "README").write_bytes(b"r")
    os.symlink("README", tmp_path / "link")
    expected = {".": Entry("d", 4096), "data": Entry("d", 4096),
                "data/0": Entry("d", 4096), "data/0/1": Entry("f", 10),
                "README": Entry("f", 1), "link": Entry("L", 6)}
    assert drive_sync.differences(expected, drive_sync.scan(tmp_path)) == []


def test_differences_name_what_is_wrong() -> None:
    expected = {".": Entry("d", 1), "a": Entry("f", 1), "b": Entry("f", 2),
                "c": Entry("f", 3), "d": Entry("f", 3), "e": Entry("f", 3),
                "f": Entry("f", 3)}
    found = {".": Entry("d", 9), "a": Entry("f", 1), "b": Entry("f", 1), "x": Entry("f", 0)}
    assert drive_sync.differences(expected, found) == [
        "4 missing on the drive (c, d, e, ...)", "1 unexpected on the drive (x)",
        "1 different type or size (b)"]


# --- argv tables --------------------------------------------------------------------------------


def test_cryptsetup_argv_never_holds_a_secret() -> None:
    key = Path("/etc/phobos/keys/ext-a.key")
    fast = cryptsetup.pbkdf_options(1000)
    assert cryptsetup.pbkdf_options(None) == ()
    assert cryptsetup.luks_format("/dev/sdb", key, label="phobos-ext-a", pbkdf=fast) == (
        "cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--key-file",
        str(key), "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--label",
        "phobos-ext-a", "--", "/dev/sdb")
    assert cryptsetup.add_passphrase("/dev/sdb", key) == (
        "cryptsetup", "luksAddKey", "--batch-mode", "--key-file", str(key), "--", "/dev/sdb")
    assert cryptsetup.test_passphrase("/dev/sdb") == (
        "cryptsetup", "open", "--test-passphrase", "--batch-mode", "--", "/dev/sdb")
    assert cryptsetup.open_mapping("/dev/sdb", "phobos-ext-a", key) == (
        "cryptsetup", "open", "--type", "luks", "--key-file", str(key), "--", "/dev/sdb",
        "phobos-ext-a")
    assert cryptsetup.open_mapping("/dev/sdb", "m", key, readonly=True)[3:5] == (
        "luks", "--readonly")
    assert cryptsetup.close_mapping("phobos-ext-a") == ("cryptsetup", "close", "--", "phobos-ext-a")
    assert cryptsetup.header_backup("/dev/sdb", Path("/k/h")) == (
        "cryptsetup", "luksHeaderBackup", "--header-backup-file", "/k/h", "--", "/dev/sdb")
    assert cryptsetup.explain(2) == "no permission (bad passphrase or key)"


def test_mount_argv() -> None:
    assert mnt.mount("/dev/mapper/x", Path("/m"), readonly=True) == (
        "mount", "-o", "nodev,nosuid,noexec,noatime,ro", "--", "/dev/mapper/x", "/m")
    assert mnt.mkfs_ext4("/dev/mapper/x", "extbackup", force=True) == (
        "mkfs.ext4", "-q", "-m", "0", "-L", "extbackup", "-F", "--", "/dev/mapper/x")
    assert mnt.sync_fs(Path("/m")) == ("sync", "--file-system", "--", "/m")
    assert mnt.parse_export("DEVNAME=/dev/x\nUUID=abc\nTYPE=ext4\n") == {
        "DEVNAME": "/dev/x", "UUID": "abc", "TYPE": "ext4"}


# --- rotation ------------------------------------------------------------------------------------


def write_state(config: Config, last: dict[str, float]) -> None:
    config.paths.state.mkdir(parents=True, exist_ok=True)
    data = {"version": 1, "events": [],
            "drives": {name: {"last_sync": ts} for name, ts in last.items()}}
    (config.paths.state / "drives.json").write_text(json.dumps(data))


def test_rotation_due_next_is_the_oldest_copy(tmp_path: Path) -> None:
    config = drives_config(tmp_path, OFFSITE)
    now = 1_000_000_000.0
    assert [s.due_next for s in rotation(config, now=now, probe_devices=False)] == [
        True, False]  # nothing synced yet: the first in name order
    write_state(config, {"ext-a": now - 3 * 86400})
    got = {s.name: s for s in rotation(config, now=now, probe_devices=False)}
    assert got["ext-b"].due_next and got["ext-b"].overdue and got["ext-b"].age is None
    assert not got["ext-a"].due_next and not got["ext-a"].overdue
    assert got["ext-a"].age == 3 * 86400 and got["ext-a"].jobs == ("offsite",)
    assert got["ext-a"].attached is None  # not probed
    write_state(config, {"ext-a": now - 3 * 86400, "ext-b": now - 86400})
    got = {s.name: s for s in rotation(config, now=now, probe_devices=False)}
    assert got["ext-a"].due_next and not got["ext-b"].due_next


def test_overdue_uses_each_drives_max_age(tmp_path: Path) -> None:
    config = drives_config(tmp_path, OFFSITE)
    now = 1_000_000_000.0
    write_state(config, {"ext-a": now - 20 * 86400, "ext-b": now - 20 * 86400})
    assert [s.name for s in overdue_drives(config, now=now)] == ["ext-b"]  # 10d
    assert [s.name for s in overdue_drives(config, now=now + 16 * 86400)] == [
        "ext-a", "ext-b"]


def test_drive_outside_any_job_is_never_due(tmp_path: Path) -> None:
    config = drives_config(tmp_path, "")
    assert not any(s.due_next for s in rotation(config, probe_devices=False))


# --- init helpers and the sheet -------------------------------------------------------------------


def test_snippet_for_both_kinds(tmp_path: Path) -> None:
    config = drives_config(tmp_path, OFFSITE)
    assert snippet(get(config, "ext-a")) == (
        f'[drives.ext-a]\nluks_uuid = "{UUID_A}"\nkeyfile = "/etc/phobos/keys/ext-a.key"\n'
        'label = "extbackup"')
    assert 'unlock = "none"' in snippet(get(config, "ext-b"))


@pytest.mark.parametrize(("given", "message"), [
    (None, "without a recovery passphrase"), ("", "without a recovery passphrase"),
    ("short", "shorter than 8 characters")])
def test_passphrase_is_required(given: str | None, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_passphrase(given)
    assert check_passphrase("long enough") == "long enough"


def test_keyfile_is_fresh_and_private(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "k.key"
    write_keyfile(key, force=False)
    first = key.read_bytes()
    assert len(first) == KEY_BYTES and oct(key.stat().st_mode & 0o777) == "0o400"
    with pytest.raises(UsageError, match="refusing to replace a drive key"):
        write_keyfile(key, force=False)
    write_keyfile(key, force=True)
    assert key.read_bytes() != first


def test_recovery_sheet_has_the_commands(tmp_path: Path) -> None:
    config = drives_config(tmp_path, OFFSITE)
    sheet = render_sheet(config, get(config, "ext-a"))
    for needle in (UUID_A, "/etc/phobos/keys/ext-a.key", "/etc/phobos/keys/ext-a.luks-header",
                   f'cryptsetup open --readonly "$(blkid -U {UUID_A})" extbackup',
                   "add --key-file ext-a.key after --readonly",
                   "cryptsetup open --readonly --header ext-a.luks-header /dev/sdX extbackup",
                   "mount -o ro /dev/mapper/extbackup /mnt/extbackup",
                   "REPO=/mnt/extbackup/borg", 'borg --bypass-lock list --last 3 "$REPO"',
                   "export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes",
                   "read -rsp 'Borg passphrase: ' BORG_PASSPHRASE",
                   "host luv's /etc is backup/holding/luv/etc",
                   "borg key export --paper /backup/borg main-key.txt",
                   "cryptsetup close extbackup", "/borg: Borg repository 'main'"):
        assert needle in sheet, needle
    # Only what applies to this drive and repository (repokey, passphrase): no keyfile
    # import, no unencrypted-repository switch, no by-uuid links (absent without udev).
    for needle in ("key import", "UNENCRYPTED", "/dev/disk/by-uuid"):
        assert needle not in sheet, needle
    plain = render_sheet(config, get(config, "ext-b"))
    assert "phobos did not encrypt this drive" in plain and "cryptsetup" not in plain
    assert f"mount -o ro -U {UUID_B} /mnt/extbackup" in plain
