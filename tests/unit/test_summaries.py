"""The DETAIL column of `phobos status`: one line per kind from real stats shapes."""

from __future__ import annotations

import pytest

from phobos.schedule.summaries import size, summary


@pytest.mark.parametrize(("kind", "stats", "expected"), [
    ("pull", {"files": 166, "files_transferred": 160, "bytes_transferred": 50780,
              "failed_hosts": []}, "166 files, 160 changed, 49.6 KiB moved"),
    ("pull", {"files": 3, "files_transferred": 0, "bytes_transferred": 0,
              "failed_hosts": ["h2"]}, "3 files, 0 changed, 0 B moved; failed: h2"),
    ("archive", {"nfiles": 190, "original_size": 51100, "deduplicated_size": 10200,
                 "pruned": 2}, "190 files, 49.9 KiB → 10.0 KiB new; pruned 2"),
    ("check", {"coverage": 0.25, "pass_complete": False}, "coverage 25%"),
    ("check", {"coverage": 1.0, "pass_complete": True}, "coverage 100% (pass complete)"),
    ("check", {"mode": "full", "repo": "main"}, "full of main"),
    ("drive-sync", {"drives": {"ext-a": {"files": 11, "bytes": 3 * 1024 ** 3}}},
     "ext-a: 11 files, 3.0 GiB"),
    ("drill", {"files_checked": 20, "mismatches": 0}, "20 files checked, 0 mismatches"),
    ("command", {"anything": 1}, ""),
    ("archive", None, ""),
    ("archive", {"nfiles": "garbage", "original_size": "x"}, ""),
])
def test_summary(kind: str, stats: dict[str, object] | None, expected: str) -> None:
    assert summary(kind, stats) == expected


def test_size_units() -> None:
    assert [size(n) for n in (0, 1023, 1024, 5 * 1024 ** 4, None)] == [
        "0 B", "1023 B", "1.0 KiB", "5.0 TiB", "?"]
