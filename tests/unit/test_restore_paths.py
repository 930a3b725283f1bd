"""Getting files back, the pure parts: paths as the person knows them and in archives,
find patterns, the catalog (versions, slots, pruning), the restore's target rules and
placing (real directories under tmp_path, never outside them), ``--at``, the Borg argv
for copies, a drill's record on its drive, and the recovery sheet's commands being the
guide's."""

from __future__ import annotations

import dataclasses
import os
import re
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from phobos.config.load import load
from phobos.config.model import Config
from phobos.core.locks import Resource
from phobos.drives import sheet
from phobos.drives.identity import get
from phobos.drives.rotation import rotation
from phobos.drives.state import record_drill
from phobos.errors import ConfigError, UsageError
from phobos.repos.catalog import Catalog, slots_of
from phobos.repos.find import search, versions
from phobos.repos.layout import KnownPath, Layout, parse_known, parse_pattern
from phobos.repos.placing import check_target, place, staging
from phobos.repos.restore import parse_when
from phobos.tools import borg as borgtool
from phobos.tools.borg_contents import Item, copy_env, parse_items, prefix_pattern

DOCS = Path(__file__).resolve().parents[2] / "docs"
UUID = "11111111-2222-4333-8444-555555555555"


def config_from(tmp_path: Path, body: str = "") -> Config:
    path = tmp_path / "phobos.toml"
    path.write_text(textwrap.dedent(f"""\
        [paths]
        state = "{tmp_path}/state"
        run = "{tmp_path}/run"

        [storage]
        holding = "/srv/backup/holding"

        [repos.main]
        path = "/srv/backup/borg"

        [hosts.luv]
        address = "luv.example.org"

        [hosts.chew]
        address = "chew.example.org"

        [drives.ext-a]
        luks_uuid = "{UUID}"
        """) + textwrap.dedent(body))
    return load(path)


# --- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("known", "archive", "restored", "strip"), [
    (KnownPath(None, "/etc/fstab"), "etc/fstab", "etc/fstab", 0),
    (KnownPath("luv", "/etc/fstab"), "srv/backup/holding/luv/etc/fstab", "luv/etc/fstab", 3),
    (KnownPath("luv", "/"), "srv/backup/holding/luv", "luv", 3),
    (KnownPath(None, "/"), "", "", 0),
])
def test_paths_as_known_and_in_archives(tmp_path: Path, known: KnownPath, archive: str,
                                        restored: str, strip: int) -> None:
    layout = Layout.of(config_from(tmp_path))
    assert layout.archive_path(known) == archive
    assert layout.restored_path(known) == restored
    assert layout.strip_components(known) == strip
    if archive:
        assert layout.known(archive) == known


def test_a_holding_folder_of_a_host_not_in_the_config_is_a_nas_path(tmp_path: Path) -> None:
    layout = Layout.of(config_from(tmp_path))
    assert layout.known("srv/backup/holding/gone/etc/x") == KnownPath(
        None, "/srv/backup/holding/gone/etc/x")
    assert str(layout.known("srv/backup/holding/chew/etc/x")) == "chew:/etc/x"


@pytest.mark.parametrize(("text", "expected"), [
    ("/etc/fstab", KnownPath(None, "/etc/fstab")), ("luv:/etc/", KnownPath("luv", "/etc")),
    ("//etc//x", KnownPath(None, "/etc/x")), ("chew:/", KnownPath("chew", "/")),
])
def test_parse_known(tmp_path: Path, text: str, expected: KnownPath) -> None:
    assert parse_known(text, config_from(tmp_path)) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("etc/fstab", "is not an absolute path"), ("/etc/../shadow", "contains '..'"),
    ("lvu:/etc/fstab", "no host named 'lvu' (did you mean 'luv'?)"),
])
def test_parse_known_refuses(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_known(text, config_from(tmp_path))


# --- patterns ---------------------------------------------------------------------------------

PATHS = ["etc/fstab", "etc/fstab.d/x", "srv/backup/holding/luv/etc/fstab",
         "srv/backup/holding/chew/etc/fstab", "srv/backup/holding/luv/home/a/thesis.tex",
         "home/b/thesis.tex", "srv/backup/holding/luv/etc/ssh/sshd_config"]


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("fstab", None, {0, 2, 3}), ("fstab", "luv", {2}), ("luv:fstab", None, {2}),
    ("/etc/fstab", None, {0, 2, 3}), ("/etc/*", "luv", {2, 6}),
    ("a/thesis.tex", None, {4}), ("*.tex", None, {4, 5}), ("fstab.[!x]", None, set()),
    ("/srv/backup/holding/luv/etc/fstab", None, {2}), ("ssh*", None, {6}),
    ("/etc/ssh*", None, {6}), ("[ef]stab", None, {0, 2, 3}),
])
def test_patterns_match_known_paths(tmp_path: Path, pattern: str, host: str | None,
                                    expected: set[int]) -> None:
    config = config_from(tmp_path)
    layout = Layout.of(config)
    parsed = parse_pattern(pattern, host, config)
    assert {i for i, p in enumerate(PATHS) if parsed.matches(layout, p)} == expected
    # The SQL prefilter never loses a match: run it through SQLite's GLOB for real.
    catalog = Catalog.open(tmp_path, "main")
    catalog.use_repository("r")
    catalog.add("a1", "a1", "2026-01-01T00:00:00", [Item(p, "-", 1, "m") for p in PATHS])
    column, globs = parsed.sql_globs(layout)
    prefiltered = {row.path for row in catalog.search(column, globs)}
    assert {PATHS[i] for i in expected} <= prefiltered
    catalog.close()


@pytest.mark.parametrize(("pattern", "host", "message"), [
    ("/", None, "would match everything"), ("fstab", "nope", "no host named 'nope'"),
    ("luv:fstab", "chew", "names host luv, --host says chew"),
])
def test_bad_patterns(tmp_path: Path, pattern: str, host: str | None, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_pattern(pattern, host, config_from(tmp_path))


# --- the catalog ------------------------------------------------------------------------------


def items(*specs: tuple[str, int, str]) -> list[Item]:
    return [Item(path, "-", size, mtime) for path, size, mtime in specs]


def test_catalog_keeps_versions_and_frees_slots(tmp_path: Path) -> None:
    catalog = Catalog.open(tmp_path, "main")
    assert catalog.use_repository("repo-1") is False
    catalog.add("id1", "n-1", "2026-01-01T03:00:00", items(("etc/a", 1, "m1"), ("etc/b", 2, "m1")))
    catalog.add("id2", "n-2", "2026-01-02T03:00:00", items(("etc/a", 1, "m1"), ("etc/b", 3, "m2")))
    catalog.add("id2", "n-2", "2026-01-02T03:00:00", [])  # listed twice: ignored
    rows = {(r.path, r.size): slots_of(r.holders) for r in catalog.search("path", ["etc/*"])}
    assert rows == {("etc/a", 1): [0, 1], ("etc/b", 2): [0], ("etc/b", 3): [1]}
    assert catalog.size_below(1, "etc") == (2, 4)
    assert catalog.size_below(0, "") == (2, 3)

    assert catalog.drop(["id1", "unknown"]) == 1
    rows = {(r.path, r.size): slots_of(r.holders) for r in catalog.search("path", ["etc/*"])}
    assert rows == {("etc/a", 1): [1], ("etc/b", 3): [1]}  # etc/b of size 2 is gone
    catalog.add("id3", "n-3", "2026-01-03T03:00:00", items(("etc/c", 5, "m3")))
    assert catalog.archives()["id3"].slot == 0  # the freed slot, not a new one
    assert catalog.refreshed is None
    catalog.mark_refreshed(1234.5)
    assert catalog.refreshed == 1234.5
    assert catalog.use_repository("repo-2") is True  # another repository: start afresh
    assert catalog.archives() == {} and catalog.search("name", ["*"]) == []
    assert oct(catalog.path.stat().st_mode & 0o777) == "0o600"
    catalog.close()


def test_versions_newest_first_unchanged_files_once(tmp_path: Path) -> None:
    config = config_from(tmp_path)
    catalog = Catalog.open(tmp_path, "main")
    for day, size in ((1, 10), (2, 10), (3, 12), (4, 12)):
        catalog.add(f"id{day}", f"nightly-{day}", f"2026-01-0{day}T03:00:00",
                    items(("srv/backup/holding/luv/etc/fstab", size, f"m{size}"),
                          ("etc/fstab", 1, "m")))
    layout = Layout.of(config)
    matches, more = search(catalog, layout, parse_pattern("luv:fstab", None, config), None)
    assert more == 0 and [str(m.known) for m in matches] == ["luv:/etc/fstab"]
    found = [(v.archive, v.archives, v.first[:10], v.size) for v in matches[0].versions]
    assert found == [("nightly-4", 2, "2026-01-03", 12), ("nightly-2", 2, "2026-01-01", 10)]
    # Only the archives the repository (or drive copy) holds count.
    matches, _ = search(catalog, layout, parse_pattern("fstab", None, config), {"id1", "id2"})
    assert [(str(m.known), len(m.versions)) for m in matches] == [
        ("/etc/fstab", 1), ("luv:/etc/fstab", 1)]
    limited, more = search(catalog, layout, parse_pattern("fstab", None, config), None, 1)
    assert len(limited) == 1 and more == 1
    slots = {a.slot: a for a in catalog.archives().values() if a.id == "id3"}
    assert versions(catalog.versions_of("etc/fstab"), slots)[0].archives == 1
    catalog.close()


# --- restore targets and placing --------------------------------------------------------------


def test_never_into_the_running_root(tmp_path: Path) -> None:
    for target in (Path("/"), tmp_path / ".." / ".." / ".." / ".." / ".." / ".."):
        with pytest.raises(UsageError, match="running system's root"):
            check_target(Path(os.path.abspath(target)), "etc/fstab", overwrite=True)


def test_existing_paths_need_overwrite_and_links_are_refused(tmp_path: Path) -> None:
    target = tmp_path / "restore"
    assert check_target(target, "luv/etc/fstab", overwrite=False) == target / "luv/etc/fstab"
    (target / "luv" / "etc").mkdir(parents=True)
    assert check_target(target, "luv/etc", overwrite=False) == target / "luv/etc"  # empty
    (target / "luv" / "etc" / "fstab").write_text("old")
    with pytest.raises(UsageError, match="exists and is not empty"):
        check_target(target, "luv/etc", overwrite=False)
    with pytest.raises(UsageError, match="fstab exists"):
        check_target(target, "luv/etc/fstab", overwrite=False)
    assert check_target(target, "luv/etc/fstab", overwrite=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (target / "chew").symlink_to(outside)
    with pytest.raises(UsageError, match="is a symbolic link"):
        check_target(target, "chew/etc/fstab", overwrite=True)
    (target / "file").write_text("x")
    with pytest.raises(UsageError, match="is in the way"):
        check_target(target, "file/etc/fstab", overwrite=True)


def stage(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_place_moves_new_paths_and_merges_existing_ones(tmp_path: Path) -> None:
    target = tmp_path / "restore"
    with staging(target) as staged:
        stage(staged, {"luv/etc/fstab": "new", "luv/etc/hosts": "hosts"})
        place(staged, "luv/etc", target)
    assert (target / "luv/etc/fstab").read_text() == "new"
    assert [p.name for p in target.iterdir()] == ["luv"]  # the staging directory is gone

    outside = tmp_path / "outside.txt"
    outside.write_text("must stay")
    (target / "luv/etc/fstab").unlink()
    (target / "luv/etc/fstab").symlink_to(outside)  # a link where a restored file goes
    (target / "luv/etc/mine").write_text("only in the target")
    (target / "luv/etc/hosts").unlink()
    (target / "luv/etc/hosts").mkdir()  # a directory where a file goes
    with staging(target) as staged:
        stage(staged, {"luv/etc/fstab": "newer", "luv/etc/hosts": "h2"})
        os.chmod(staged / "luv" / "etc", 0o751)
        place(staged, "luv/etc", target)
    assert outside.read_text() == "must stay"
    assert not (target / "luv/etc/fstab").is_symlink()
    assert (target / "luv/etc/fstab").read_text() == "newer"
    assert (target / "luv/etc/hosts").read_text() == "h2"
    assert (target / "luv/etc/mine").read_text() == "only in the target"
    assert oct((target / "luv/etc").stat().st_mode & 0o777) == "0o751"


def test_staging_is_removed_after_a_failure(tmp_path: Path) -> None:
    target = tmp_path / "restore"
    with pytest.raises(RuntimeError), staging(target) as staged:
        stage(staged, {"etc/x": "x"})
        raise RuntimeError("borg failed")
    assert list(target.iterdir()) == []


# --- --at, Borg argv --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-29", datetime(2026, 11, 29, 23, 59, 59, 999999)),
    ("2026-11-29 03:00", datetime(2026, 11, 29, 3, 0)),
    ("2026-11-29T03:00:05", datetime(2026, 11, 29, 3, 0, 5)),
    ("3d", datetime(2026, 11, 27, 12, 0)), ("12h", datetime(2026, 11, 30, 0, 0)),
])
def test_parse_when(text: str, expected: datetime) -> None:
    assert parse_when(text, now=datetime(2026, 11, 30, 12, 0)) == expected
    with pytest.raises(UsageError, match="neither a time nor a duration"):
        parse_when("yesterday")


def test_borg_argv_for_a_copy_and_a_restore() -> None:
    borg = borgtool.Borg(path="/usr/bin/borg", version=(1, 2, 4))
    acc = borgtool.access(borg, "/mnt/x/borg", lock_wait=30)
    copy = dataclasses.replace(acc, bypass_lock=True)
    assert borgtool.extract_argv(borg, copy, "a1", [prefix_pattern("srv/h/luv/etc")],
                                 strip_components=2, list_items=True) == [
        "/usr/bin/borg", "extract", "--lock-wait", "30", "--bypass-lock", "--list",
        "--strip-components", "2", "--", "/mnt/x/borg::a1", "pp:srv/h/luv/etc"]
    assert "--bypass-lock" not in borgtool.list_argv(borg, acc)
    env = copy_env(Path("/var/lib/phobos/borg-copies/ext-a"))
    assert env == {"BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
                   "BORG_SECURITY_DIR": "/var/lib/phobos/borg-copies/ext-a/security",
                   "BORG_CACHE_DIR": "/var/lib/phobos/borg-copies/ext-a/cache"}
    listed = parse_items('{"type": "d", "path": "etc", "mtime": "t"}\n\n'
                         '{"type": "-", "path": "etc/x", "size": 4, "mtime": "t", '
                         '"healthy": false}\n')
    assert listed == [Item("etc", "d", 0, "t"), Item("etc/x", "-", 4, "t", False)]


# --- drills from a drive ----------------------------------------------------------------------

DRILL = """
    [jobs.offsite]
    kind = "drive-sync"
    repo = "main"
    drives = ["ext-a"]

    [jobs.drill-a]
    kind = "drill"
    repo = "main"
    from_drive = "ext-a"
    """


def test_a_drill_from_a_drive_holds_the_drive_not_the_repo(tmp_path: Path) -> None:
    config = config_from(tmp_path, DRILL)
    assert config.jobs["drill-a"].resources(config) == (Resource("drive:ext-a", True),)


def test_a_drill_from_a_drive_must_name_a_drive_with_the_copy(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from(tmp_path, DRILL.replace('from_drive = "ext-a"', 'from_drive = "ext-b"'))
    assert any("jobs.drill-a.from_drive: no drive named 'ext-b'" in line
               for line in caught.value.problems), caught.value.problems
    with pytest.raises(ConfigError) as caught:
        config_from(tmp_path, DRILL.replace('drives = ["ext-a"]', 'drives = []'))
    assert any("no drive-sync job copies repo main to drive ext-a" in line
               for line in caught.value.problems), caught.value.problems


def test_drive_list_shows_the_last_drill(tmp_path: Path) -> None:
    config = config_from(tmp_path, DRILL)
    assert rotation(config, probe_devices=False)[0].last_drill is None
    record_drill(config, "ext-a", job="drill-a", run_id=7,
                 stats={"archive": "n-1", "files_checked": 20, "mismatches": 0})
    drill = rotation(config, probe_devices=False)[0].as_json()["last_drill"]
    assert drill["ok"] and drill["run_id"] == 7 and drill["files_checked"] == 20


# --- the sheet's commands are the guide's -----------------------------------------------------


def guide_lines() -> set[str]:
    text = (DOCS / "recovery.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return {line.split("  #")[0].strip() for block in blocks for line in block.splitlines()}


def test_the_sheets_restore_commands_are_the_guides() -> None:
    """The sheet fills in a drive's values; the guide writes them as variables. Every
    command the sheet prints, so written, is a line of the guide's shell blocks."""
    variables = {"luks_uuid": '"$LUKS_UUID"', "fs_uuid": '"$FS_UUID"',
                 "repo_dir": "$REPO_DIR", "repo": "main"}
    lines = guide_lines()
    for group in (sheet.UNLOCK_LUKS, sheet.MOUNT_PLAIN, sheet.BORG_SETTINGS, sheet.FIND,
                  sheet.EXTRACT, sheet.DONE, (sheet.PASSPHRASE, sheet.DONE_LUKS)):
        for template in group:
            assert template.format(**variables) in lines, template
    text = (DOCS / "recovery.md").read_text()
    for aside in (sheet.UNENCRYPTED, sheet.KEY_IMPORT.format(**variables)):
        assert aside in text.replace("\n", " "), aside


@pytest.mark.parametrize(("encryption", "present", "absent"), [
    ("none", [sheet.UNENCRYPTED], [sheet.PASSPHRASE, "key import"]),
    ("keyfile-blake2", [sheet.PASSPHRASE, 'key import "$REPO" main-key.txt'],
     [sheet.UNENCRYPTED]),
])
def test_the_sheet_prints_only_what_the_repository_needs(tmp_path: Path, encryption: str,
                                                         present: list[str],
                                                         absent: list[str]) -> None:
    config_from(tmp_path, DRILL)
    path = tmp_path / "phobos.toml"
    path.write_text(path.read_text().replace('path = "/srv/backup/borg"',
                                             f'path = "/srv/backup/borg"\nencryption = '
                                             f'"{encryption}"'))
    config = load(path)
    text = sheet.render_sheet(config, get(config, "ext-a"))
    for needle in present:
        assert needle in text, needle
    for needle in absent:
        assert needle not in text, needle
