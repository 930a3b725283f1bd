"""The check kind on real repositories: a full check, sliced checks whose coverage
advances and completes, a corrupted segment found, an archives-only check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from borgbox import BorgBox, initialized

from phobos.tools import borg_repository

# Borg integration: every test runs with the venv's Borg 1.4 and Debian's 1.2.
pytestmark = pytest.mark.usefixtures("each_borg")

CHECKS = """\
    [jobs.full]
    kind = "check"
    repo = "main"

    [jobs.slice]
    kind = "check"
    repo = "main"
    max_duration = "1s"

    [jobs.recent]
    kind = "check"
    repo = "main"
    last = 1
    archives_of = "nightly"
    """


def _with_checks(box: BorgBox, extra: str = "") -> None:
    box.write(f"""\
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/src"]
        """ + CHECKS + extra)


def test_full_check_records_a_complete_pass(sandbox: Any) -> None:
    box = initialized(sandbox)
    _with_checks(box)
    box.ok("run", "nightly")
    box.ok("run", "full")
    stats = box.last_run("full")["stats"]
    assert stats["mode"] == "full" and stats["coverage"] == 1.0 and stats["pass_complete"]
    assert stats["last_full_pass"] is not None
    assert stats["segments"] == len(borg_repository.segment_ids(box.repo))
    box.ok("run", "recent")
    recent = box.last_run("recent")
    assert recent["stats"]["mode"] == "archives"
    argv = json.loads(box.ok("log", str(recent["id"]), "--json").stdout)["steps"][0]["argv"]
    assert "--archives-only" in argv and argv[argv.index("--last") + 1] == "1"


def _big_repo(box: BorgBox) -> None:
    """2 GiB of incompressible data in 8 MiB segments: a 1 s slice covers part of it
    even from the page cache (~1.3 GB/s here)."""
    box.borg("config", str(box.repo), "max_segment_size", str(8 * 1024 * 1024))
    bulk = box.root / "src" / "bulk"
    bulk.mkdir(parents=True)
    for index in range(32):
        with (bulk / f"blob{index}").open("wb") as out:
            for _ in range(64):
                out.write(os.urandom(1 << 20))
    box.borg("create", "--compression", "none", f"{box.repo}::bulk", str(box.root / "src"))


def test_sliced_checks_advance_coverage_until_a_pass_completes(sandbox: Any) -> None:
    box = initialized(sandbox)
    _with_checks(box)
    _big_repo(box)
    total = len(borg_repository.segment_ids(box.repo))
    assert total > 200
    seen: list[dict[str, Any]] = []
    for _ in range(40):
        box.ok("run", "slice")
        stats = box.last_run("slice")["stats"]
        seen.append(stats)
        if stats["pass_complete"]:
            break
        # phobos repo info shows the pass in progress from the repository itself
        info = box.ok("repo", "list").stdout
        assert f"up to segment {stats['position']}" in info
    coverages = [s["coverage"] for s in seen]
    assert len(seen) >= 2, "the first slice should not cover 2 GiB in 1 s"
    assert coverages == sorted(coverages) and coverages[-1] == 1.0
    assert 0 < coverages[0] < 1
    assert all(s["last_full_pass"] is None for s in seen[:-1])
    assert seen[-1]["last_full_pass"] is not None
    assert len({s["pass_started"] for s in seen}) == 1  # one pass, started by the first
    assert all(s["max_duration_arg"] == 1 for s in seen)
    assert borg_repository.check_position(box.repo) is None
    # the next slice starts a new pass
    box.ok("run", "slice")
    again = box.last_run("slice")["stats"]
    assert again["pass_started"] > seen[0]["pass_started"]
    if again["pass_complete"]:  # the data is in the page cache now: it may be quicker
        assert again["last_full_pass"] > seen[-1]["last_full_pass"]
    else:
        assert again["last_full_pass"] == seen[-1]["last_full_pass"]


def _corrupt_a_segment(repo: Path) -> Path:
    segments = borg_repository.segment_ids(repo)
    biggest = max((repo / "data" / str(s // 1000) / str(s) for s in segments),
                  key=lambda p: p.stat().st_size)
    with biggest.open("r+b") as handle:
        handle.seek(biggest.stat().st_size // 2)
        data = handle.read(16)
        handle.seek(biggest.stat().st_size // 2)
        handle.write(bytes(b ^ 0xFF for b in data))
    return biggest


def test_corrupted_segment_is_detected_by_full_and_sliced_checks(sandbox: Any) -> None:
    box = initialized(sandbox)
    _with_checks(box)
    box.ok("run", "nightly")
    segment = _corrupt_a_segment(box.repo)
    for job in ("full", "slice"):
        result = box.phobos("run", job)
        assert result.returncode == 1, result.stderr
        run = box.last_run(job)
        assert run["outcome"] == "failed"
        assert "exit code 1" in run["message"]
        assert "found problems" in run["message"] or "integrity" in run["message"].lower()
        log = box.log_text(run["id"])
        assert f"segment {segment.name}" in log or segment.name in log
        assert run["stats"]["last_full_pass"] is None  # a failed pass is not a good pass
