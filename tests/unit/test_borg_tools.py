"""phobos.tools.borg: version parsing, environment, argv tables, parsers, exit codes, locks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from phobos.errors import ToolMissing
from phobos.tools import borg as b
from phobos.tools import borg_repository

BORG14 = b.Borg(path="/usr/bin/borg", version=(1, 4, 5))
BORG12 = b.Borg(path="/usr/bin/borg", version=(1, 2, 4))
BORG11 = b.Borg(path="/usr/bin/borg", version=(1, 1, 18))


def acc(borg: b.Borg = BORG14, **kwargs: object) -> b.Access:
    return b.access(borg, Path("/backup/borg"), lock_wait=86400.0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "version"), [
    ("borg 1.4.5\n", (1, 4, 5)),
    ("borg 1.2.4", (1, 2, 4)),
    ("borg 1.4.0b1", (1, 4, 0)),
    ("borg.exe 2.0", (2, 0, 0)),
])
def test_parse_version(text: str, version: tuple[int, int, int]) -> None:
    assert b.parse_version(text) == version


def test_parse_version_garbage() -> None:
    with pytest.raises(ToolMissing):
        b.parse_version("no version here")


def test_features_by_version() -> None:
    assert BORG14.modern_exit_codes and BORG14.has_compact
    assert not BORG12.modern_exit_codes and BORG12.has_compact
    assert not BORG11.has_compact


def test_access_passphrase_goes_through_a_pipe_never_env_or_argv() -> None:
    a = acc(passphrase="correct horse\n", base_dir=Path("/var/lib/phobos/borg"))
    assert a.env["BORG_PASSPHRASE_FD"] == "0"
    assert a.stdin == b"correct horse\n"
    assert a.secrets == ("correct horse\n",)
    assert "correct horse" not in " ".join(a.env.values())
    assert a.env["BORG_BASE_DIR"] == "/var/lib/phobos/borg"
    assert a.env["BORG_EXIT_CODES"] == "modern"
    assert "correct horse" not in " ".join(b.create_argv(BORG14, a, archive="x", sources=["/"]))


def test_access_passcommand_and_legacy_exit_codes_on_12() -> None:
    a = acc(BORG12, passcommand="cat /etc/phobos/borg.pass")
    assert a.env["BORG_PASSCOMMAND"] == "cat /etc/phobos/borg.pass"
    assert a.stdin is None and a.secrets == ()
    assert "BORG_EXIT_CODES" not in a.env
    with pytest.raises(ValueError):
        acc(passcommand="x", passphrase="y")


BORG = "/usr/bin/borg"
LOC = "/backup/borg"


@pytest.mark.parametrize(("argv", "expected"), [
    (b.create_argv(BORG14, acc(), archive="nightly-{now}", sources=[Path("/etc"), "/home"],
                   exclude=["*/.cache"], compression="zstd,3", options=["--one-file-system"]),
     [BORG, "create", "--lock-wait", "86400", "--json", "--compression", "zstd,3",
      "--exclude", "*/.cache", "--one-file-system", "--", f"{LOC}::nightly-{{now}}", "/etc",
      "/home"]),
    (b.prune_argv(BORG14, acc(), keep=["--keep-daily", "7"], glob="nightly-*"),
     [BORG, "prune", "--lock-wait", "86400", "--list", "--glob-archives", "nightly-*",
      "--keep-daily", "7", "--", LOC]),
    (b.compact_argv(BORG12, acc(BORG12)),
     [BORG, "compact", "--lock-wait", "86400", "--info", "--", LOC]),
    (b.compact_argv(BORG11, acc(BORG11)), None),
    (b.check_argv(BORG14, acc()), [BORG, "check", "--lock-wait", "86400", "--info", "--", LOC]),
    (b.check_argv(BORG14, acc(), max_duration=7200),
     [BORG, "check", "--lock-wait", "86400", "--info", "--repository-only", "--max-duration",
      "7200", "--", LOC]),
    (b.check_argv(BORG14, acc(), last=3, verify_data=True, glob="n-*"),
     [BORG, "check", "--lock-wait", "86400", "--info", "--archives-only", "--verify-data",
      "--glob-archives", "n-*", "--last", "3", "--", LOC]),
    (b.init_argv(BORG14, acc(), "repokey-blake2"),
     [BORG, "init", "--lock-wait", "86400", "--encryption", "repokey-blake2",
      "--make-parent-dirs", "--", LOC]),
    (b.key_export_argv(BORG14, acc(), Path("/root/key"), paper=True),
     [BORG, "key", "export", "--lock-wait", "86400", "--paper", "--", LOC, "/root/key"]),
    (b.list_argv(BORG14, acc(), glob="n-*", last=1),
     [BORG, "list", "--lock-wait", "86400", "--json", "--glob-archives", "n-*", "--last", "1",
      "--", LOC]),
    (b.extract_argv(BORG14, acc(), "a1", ["pf:etc/hosts"]),
     [BORG, "extract", "--lock-wait", "86400", "--", f"{LOC}::a1", "pf:etc/hosts"]),
])
def test_argv_table(argv: list[str] | None, expected: list[str] | None) -> None:
    assert argv == expected


def test_lock_wait_is_whole_seconds_at_least_one() -> None:
    assert b.access(BORG14, LOC, lock_wait=0.2).lock_wait == 1
    assert b.access(BORG14, LOC, lock_wait=90.6).lock_wait == 91


def test_check_refuses_slices_with_archive_options() -> None:
    with pytest.raises(ValueError):
        b.check_argv(BORG14, acc(), max_duration=60, last=1)


def test_prune_needs_a_rule() -> None:
    with pytest.raises(ValueError):
        b.prune_argv(BORG14, acc(), keep=[], glob="x-*")


def test_parse_create_json() -> None:
    text = json.dumps({"archive": {"name": "n-1", "duration": 1.5, "stats": {
        "original_size": 100, "compressed_size": 50, "deduplicated_size": 10, "nfiles": 3}}})
    stats = b.parse_create_json(text)
    assert stats.as_stats() == {"archive": "n-1", "original_size": 100, "compressed_size": 50,
                                "deduplicated_size": 10, "nfiles": 3, "duration": 1.5}
    with pytest.raises(ValueError):
        b.parse_create_json("not json")


def test_prune_and_compact_parsers() -> None:
    lines = ["stderr: Keeping archive (rule: daily #1): n-5",
             "stderr: Pruning archive (1/3): n-1", "stderr: Pruning archive (3/3): n-3"]
    assert b.pruned_count(lines) == 3
    assert b.pruned_count(["nothing"]) == 0
    assert b.freed_bytes(["stderr: compaction freed about 1.50 MB repository space."]) == 1500000
    assert b.freed_bytes(["compaction freed about 805 B repository space."]) == 805
    assert b.freed_bytes(["compaction freed about 2 GiB repository space."]) == 2 * 2**30
    assert b.freed_bytes([]) is None


@pytest.mark.parametrize(("borg", "problems_fail", "expected"), [
    (BORG14, False, (1, *range(100, 128))),
    (BORG14, True, tuple(range(100, 128))),
    (BORG12, False, (1,)),
    (BORG12, True, ()),
])
def test_warn_codes(borg: b.Borg, problems_fail: bool, expected: tuple[int, ...]) -> None:
    assert b.warn_codes(borg, problems_fail=problems_fail) == expected


@pytest.mark.parametrize(("code", "words"), [
    (73, "lock"), (52, "wrong passphrase"), (13, "does not exist"), (107, "vanished"),
    (115, "warning"), (2, "error"), (137, "signal 9"), (48, "error"),
])
def test_meaning(code: int, words: str) -> None:
    assert words in b.meaning(code)


def test_lock_holders_from_roster(tmp_path: Path) -> None:
    assert borg_repository.lock_holders(tmp_path) == []
    (tmp_path / "lock.exclusive").mkdir()
    # The host part is what counts.
    node = f"whatever@{borg_repository.host_id().rpartition('@')[2]}"
    roster = {"exclusive": [[node, os.getpid(), 0], ["other.example@1", 77, 0]]}
    (tmp_path / "lock.roster").write_text(json.dumps(roster))
    mine, remote = borg_repository.lock_holders(tmp_path)
    assert mine.local and mine.alive and mine.exclusive and mine.pid == os.getpid()
    assert mine.command  # this very process's command line
    assert "this host" in mine.describe() and "since" in mine.describe()
    assert not remote.local and remote.alive is None
    assert "host other.example@1" in remote.describe()


def test_stale_lock_is_described_as_stale(tmp_path: Path) -> None:
    node = borg_repository.host_id()
    dead = 2**22 + 12345  # above pid_max on this machine: never alive
    (tmp_path / "lock.roster").write_text(json.dumps({"exclusive": [[node, dead, 0]]}))
    (holder,) = borg_repository.lock_holders(tmp_path)
    assert holder.alive is False and "stale" in holder.describe()


def test_check_position_and_segments(tmp_path: Path) -> None:
    (tmp_path / "config").write_text("[repository]\nversion = 1\nkey = abc\n\tdef\n")
    assert borg_repository.check_position(tmp_path) is None
    (tmp_path / "config").write_text("[repository]\nversion = 1\nlast_segment_checked = 41\n")
    assert borg_repository.check_position(tmp_path) == 41
    for directory, names in (("0", ["0", "3", "999"]), ("1", ["1000", "1002"])):
        (tmp_path / "data" / directory).mkdir(parents=True)
        for name in names:
            (tmp_path / "data" / directory / name).write_bytes(b"")
    (tmp_path / "data" / "0" / "index.5").write_bytes(b"")
    assert borg_repository.segment_ids(tmp_path) == [0, 3, 999, 1000, 1002]
    assert borg_repository.segment_ids(tmp_path / "missing") == []


def test_find_caches_the_version_by_binary_identity(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "borg"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho borg 1.2.4\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    cache = tmp_path / "state" / "borg-version.json"
    b._found.clear()
    assert b.find(cache=cache).version == (1, 2, 4)
    assert json.loads(cache.read_text())[str(fake)]["version"] == [1, 2, 4]
    b._found.clear()
    fake.write_text("#!/bin/sh\necho borg 1.4.0\n")  # an upgrade rewrites the binary
    assert b.find(cache=cache).version == (1, 4, 0)
    b._found.clear()
    fake.write_text("#!/bin/sh\nexit 3\n")  # a version call would fail now...
    os.utime(fake, ns=(0, json.loads(cache.read_text())[str(fake)]["identity"][2]))
    cache.write_text(json.dumps({str(fake): {"identity": b._identity(str(fake)),
                                             "version": [1, 4, 0]}}))
    assert b.find(cache=cache).version == (1, 4, 0)  # ...but the cache answers
    b._found.clear()
    fake.write_text("#!/bin/sh\necho borg 1.1.18\n")
    with pytest.raises(ToolMissing, match=r"needs 1\.2 or later"):
        b.find(cache=cache)
    fake.unlink()
    # Not on PATH: the Borg installed next to phobos (its venv's bin) is used, if any.
    beside = Path(sys.executable).parent / "borg"
    if beside.exists():
        assert b.find(cache=cache).path == str(beside)
    else:
        with pytest.raises(ToolMissing, match="not found on PATH"):
            b.find(cache=cache)
    b._found.clear()


def test_lock_wait_rewrite_and_exclusive_commands() -> None:
    argv = b.create_argv(BORG14, acc(), archive="x", sources=["/etc"])
    assert b.with_lock_wait(argv, 10)[2:4] == ["--lock-wait", "10"]
    assert b.with_lock_wait(["borg", "list"], 5) == ["borg", "list"]
    assert b.needs_exclusive(argv) and b.needs_exclusive(b.check_argv(BORG14, acc()))
    assert not b.needs_exclusive(b.list_argv(BORG14, acc()))
    assert not b.needs_exclusive(b.extract_argv(BORG14, acc(), "a", []))


def test_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert borg_repository.cache_dir(tmp_path, None) is None  # not a repository
    (tmp_path / "config").write_text("[repository]\nid = abc123\n")
    assert borg_repository.cache_dir(tmp_path, Path("/base")) == Path("/base/.cache/borg/abc123")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert borg_repository.cache_dir(tmp_path, None) == Path("/xdg/borg/abc123")
