"""Restore drills on a real repository: a clean drill, a source file changed behind the
backup's back (same size and mtime) detected, a normally changed file skipped."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from borgbox import initialized

# Borg integration: every test runs with the venv's Borg 1.4 and Debian's 1.2.
pytestmark = pytest.mark.usefixtures("each_borg")


def _drill_config(box: Any) -> None:
    box.write(f"""\
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/src"]

        [jobs.drill]
        kind = "drill"
        repo = "main"
        archives_of = "nightly"
        sample = 1000
        """)


def test_drill_passes_then_detects_a_changed_file(sandbox: Any) -> None:
    box = initialized(sandbox)
    _drill_config(box)
    box.ok("run", "nightly")
    box.ok("run", "drill")
    clean = box.last_run("drill")["stats"]
    assert clean["files_checked"] == 40 and clean["mismatches"] == 0
    assert clean["bytes_read"] == 40 * 20_000 and clean["skipped_changed"] == 0

    src = box.root / "src"
    hidden = src / "dir1" / "file0005.bin"  # content changed, size and mtime kept
    st = hidden.stat()
    data = bytearray(hidden.read_bytes())
    data[100] ^= 0xFF
    hidden.write_bytes(bytes(data))
    os.utime(hidden, ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = src / "dir2" / "file0006.bin"  # an ordinary edit: newer mtime
    edited.write_bytes(b"new content")
    (src / "dir3" / "file0007.bin").unlink()  # gone from the source

    result = box.phobos("run", "drill")
    assert result.returncode == 1
    run = box.last_run("drill")
    stats = run["stats"]
    assert stats["mismatches"] == 1 and stats["mismatched_files"] == [str(hidden)]
    assert stats["files_checked"] == 38
    assert stats["skipped_changed"] == 1 and stats["skipped_missing"] == 1
    assert "restore drill: 1 of 38 restored files differ" in run["message"]


def test_repo_drill_cli(sandbox: Any) -> None:
    box = initialized(sandbox)
    _drill_config(box)
    box.ok("run", "nightly")
    report = json.loads(box.ok("repo", "drill", "main", "--sample", "5", "--json").stdout)
    assert report["files_checked"] == 5 and report["mismatches"] == 0
    assert report["archive"].startswith("nightly-")
    limited = json.loads(box.ok("repo", "drill", "main", "--sample", "100", "--max-bytes",
                                "100000", "--json").stdout)
    assert limited["files_checked"] == 5 and limited["bytes_read"] == 100_000
