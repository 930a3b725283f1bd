"""Borg job kinds as pure planning: retention argv, archive-name globs, config problems,
resources, check coverage arithmetic, borgmatic config scanning."""

from __future__ import annotations

import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from configs import config_from

from phobos.core.locks import Resource
from phobos.errors import ConfigError
from phobos.jobs import archive, borgmatic, check
from phobos.jobs.archive import Retention
from phobos.repos.repo import Repo
from phobos.tools import borg as b

BORG14 = b.Borg(path="/usr/bin/borg", version=(1, 4, 5))


def config(jobs: dict[str, Any], **extra: Any) -> Any:
    # Keys outside /etc: the sources archive /etc (see config/layout.py).
    raw = {"paths": {"keys": "/var/lib/phobos-keys"},
           "storage": {"root": "/backup", "holding": "/backup/holding"},
           "repos": {"main": {"path": "/backup/borg", "passcommand": "cat /p"},
                     "usb": {"path": "/mnt/usb/borg"}},
           "hosts": {"luv": {"address": "luv"}, "chew": {"address": "chew"}},
           "jobs": jobs, **extra}
    return config_from(raw)


def problems(jobs: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config(jobs)
    return str(info.value)


@pytest.mark.parametrize(("keep", "args"), [
    ({"daily": 7, "weekly": 4, "monthly": 12},
     ["--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "12"]),
    ({"within": "2d", "last": 3, "hourly": 24, "yearly": 0},
     ["--keep-within", "2d", "--keep-last", "3", "--keep-hourly", "24", "--keep-yearly", "0"]),
    ({}, []),
])
def test_retention_argv(keep: dict[str, Any], args: list[str]) -> None:
    assert Retention(**keep).borg_args() == args


def test_retention_errors_name_the_key() -> None:
    text = problems({"n": {"kind": "archive", "repo": "main", "sources": ["/etc"],
                           "keep": {"dialy": 7, "within": "3 days", "weekly": -1}}})
    assert "jobs.n.keep.dialy: unknown key (did you mean 'daily'?)" in text
    assert "jobs.n.keep.within" in text and "Borg interval" in text
    assert "jobs.n.keep.weekly: must be 0 or more" in text


@pytest.mark.parametrize(("job", "template", "glob"), [
    ("nightly", archive.DEFAULT_NAME,
     "nightly-[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]*"),
    ("n", "{hostname}-{job}-{now}",
     "*-n-[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]*"),
    ("n", "{job}*{utcnow:%Y%m%d-%a}", "n[*][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-*"),
    ("n", "{job}-{unixtime}", "n-[0-9]*"),
    ("n", "{job}{{x}}-{now:%Y}", "n{{x}}-[0-9][0-9][0-9][0-9]*"),
])
def test_archive_glob(job: str, template: str, glob: str) -> None:
    assert archive.archive_glob(job, template) == glob
    assert archive.glob_matches(glob, archive.example_name(job, template))


def test_glob_keeps_jobs_with_a_common_prefix_apart() -> None:
    glob = archive.archive_glob("nightly", archive.DEFAULT_NAME)
    when = datetime(2026, 3, 1, 3, 0)
    assert archive.glob_matches(glob, archive.example_name("nightly", archive.DEFAULT_NAME,
                                                           when))
    assert archive.glob_matches(glob, "nightly-2026-03-01T03:00:00.checkpoint")
    assert not archive.glob_matches(glob, archive.example_name("nightly-2",
                                                               archive.DEFAULT_NAME, when))
    assert not archive.glob_matches(glob, "other-2026-03-01T03:00:00")


@pytest.mark.parametrize(("template", "words"), [
    ("{job}", "needs a time placeholder"),
    ("{job}-{nope}-{now}", "unknown placeholder {nope}"),
    ("{job}/{now}", "no '/'"),
    ("{job}-{now:%Y}", None),
])
def test_template_problem(template: str, words: str | None) -> None:
    found = archive.template_problem("n", template)
    assert (found is None) if words is None else (words in (found or ""))


def test_two_jobs_whose_prune_would_overlap_are_refused() -> None:
    text = problems({
        "a": {"kind": "archive", "repo": "main", "sources": ["/etc"], "keep": {"daily": 1},
              "archive_name": "host-{now}"},
        "b": {"kind": "archive", "repo": "main", "sources": ["/home"],
              "archive_name": "host-{now}"},
    })
    assert "jobs.a.archive_name: prune of this job would also delete job b's archives" in text
    # Distinct prefixes on one repo, and the same template on different repos, are fine.
    config({"a": {"kind": "archive", "repo": "main", "sources": ["/etc"], "keep": {"daily": 1}},
            "a-2": {"kind": "archive", "repo": "main", "sources": ["/etc"],
                    "keep": {"daily": 1}},
            "c": {"kind": "archive", "repo": "usb", "sources": ["/etc"], "keep": {"daily": 1},
                  "archive_name": "a-{now}"}})


def test_archive_config_problems() -> None:
    text = problems({"n": {"kind": "archive", "repo": "mian", "sources": ["/etc"]},
                     "e": {"kind": "archive", "repo": "main", "sources": []},
                     "m": {"kind": "archive", "repo": "main", "sources": ["/backup"]}})
    assert "jobs.n.repo: no repo named 'mian' (did you mean 'main'?)" in text
    assert "jobs.e.sources: name at least one path" in text
    assert "jobs.m.sources.[0]: /backup contains the repository /backup/borg" in text


def test_archive_resources() -> None:
    cfg = config({
        "all": {"kind": "archive", "repo": "main", "sources": ["/backup/holding", "/etc"]},
        "one": {"kind": "archive", "repo": "usb", "sources": ["/backup/holding/luv/etc"]},
        "local": {"kind": "archive", "repo": "usb", "sources": ["/home"]},
    })
    assert set(cfg.jobs["all"].resources(cfg)) == {
        Resource("repo:main", True), Resource("storage", False),
        Resource("holding:luv", False), Resource("holding:chew", False)}
    assert set(cfg.jobs["one"].resources(cfg)) == {
        Resource("repo:usb", True), Resource("holding:luv", False), Resource("storage", False)}
    assert set(cfg.jobs["local"].resources(cfg)) == {Resource("repo:usb", True)}


def test_archive_plan() -> None:
    cfg = config({"n": {"kind": "archive", "repo": "main", "sources": ["/etc"],
                        "exclude": ["*.tmp"], "keep": {"daily": 7}, "one_file_system": True}})
    repo = Repo(name="main", config=cfg.repos["main"], borg=BORG14,
                access=b.access(BORG14, "/backup/borg", lock_wait=60))
    create, prune, compact = archive.plan(cfg.jobs["n"], "n", repo)
    assert create.capture and create.argv[1] == "create"
    assert "/backup/borg::n-{now:%Y-%m-%dT%H:%M:%S}" in create.argv
    assert create.argv[-1] == "/etc" and "--one-file-system" in create.argv
    assert create.argv[5:7] == ("--compression", "zstd,3")
    assert prune.argv[prune.argv.index("--glob-archives") + 1].startswith("n-[0-9]")
    assert compact.argv[1] == "compact"
    assert 107 in create.warn_codes and 2 not in create.warn_codes
    without_keep = config({"n": {"kind": "archive", "repo": "main", "sources": ["/etc"]}})
    assert [s.name for s in archive.plan(without_keep.jobs["n"], "n", repo)] == ["create"]


def test_check_modes_and_problems() -> None:
    cfg = config({"full": {"kind": "check", "repo": "main"},
                  "slice": {"kind": "check", "repo": "main", "max_duration": "2h"},
                  "arch": {"kind": "check", "repo": "main", "last": 3},
                  "verify": {"kind": "check", "repo": "main", "verify_data": True}})
    assert [cfg.jobs[n].mode for n in ("full", "slice", "arch", "verify")] == [
        "full", "slice", "archives", "verify-data"]
    assert cfg.jobs["slice"].resources(cfg) == (Resource("repo:main", True),
                                                Resource("storage", False))
    text = problems({"bad": {"kind": "check", "repo": "main", "max_duration": "1h",
                             "last": 2, "archives_of": "nope"}})
    assert "jobs.bad.max_duration: a sliced check covers the repository only" in text
    assert "jobs.bad.archives_of: 'nope' is not an archive job" in text


def test_check_step_treats_found_problems_as_failure() -> None:
    cfg = config({"c": {"kind": "check", "repo": "main", "max_duration": "30m"}})
    repo = Repo(name="main", config=cfg.repos["main"], borg=BORG14,
                access=b.access(BORG14, "/backup/borg", lock_wait=60))
    step = check.plan(cfg.jobs["c"], repo, max_duration_arg=1700, glob=None)
    assert 1 not in step.warn_codes and "--max-duration" in step.argv
    assert step.argv[step.argv.index("--max-duration") + 1] == "1700"


SEGS = list(range(0, 100, 10))  # 10 segments: 0, 10, ..., 90


@pytest.mark.parametrize(("mode", "ok", "before", "after", "previous", "expected"), [
    # first slice of a pass: stops at segment 30 -> 4 of 10 checked
    ("slice", True, None, 30, check.Previous(last_full_pass=5.0),
     {"coverage": 0.4, "checked_segments": 4, "pass_complete": False, "pass_started": 100.0,
      "last_full_pass": 5.0, "position": 30}),
    # a middle slice keeps the pass's start
    ("slice", True, 30, 60, check.Previous(pass_started=50.0, last_full_pass=5.0),
     {"coverage": 0.7, "pass_started": 50.0, "last_full_pass": 5.0}),
    # the last slice completes the pass
    ("slice", True, 60, None, check.Previous(pass_started=50.0, last_full_pass=5.0),
     {"coverage": 1.0, "pass_complete": True, "pass_started": 50.0, "last_full_pass": 100.0}),
    # a completing slice that found problems does not count as a good full pass
    ("slice", False, 60, None, check.Previous(pass_started=50.0, last_full_pass=5.0),
     {"pass_complete": True, "last_full_pass": 5.0}),
    # a full check covers everything at once
    ("full", True, 30, None, check.Previous(pass_started=50.0),
     {"coverage": 1.0, "pass_started": 100.0, "last_full_pass": 100.0}),
])
def test_coverage(mode: str, ok: bool, before: int | None, after: int | None,
                  previous: check.Previous, expected: dict[str, Any]) -> None:
    stats = check.coverage(mode=mode, ok=ok, segments=SEGS, before=before, after=after,
                           now=100.0, previous=previous)
    assert stats["segments"] == 10
    assert {k: stats[k] for k in expected} == expected


def test_slice_calibration() -> None:
    assert check.slice_seconds(3, check.Previous().overshoot) == 2  # before any measurement
    assert check.previous_from_stats({"overshoot": 0.4}).overshoot == 0.4
    assert check.slice_seconds(7200, 0.0) == 7200
    assert check.slice_seconds(10, 1.4) == 8
    assert check.slice_seconds(1, 5.0) == 1
    assert check.measured_overshoot(lock_seconds=11.5, asked=10, stopped_for_time=True,
                                    previous=0.0) == 1.5
    assert check.measured_overshoot(lock_seconds=3.0, asked=10, stopped_for_time=False,
                                    previous=1.5) == 1.5
    assert check.measured_overshoot(lock_seconds=10.1, asked=10, stopped_for_time=True,
                                    previous=1.0) == 0.5


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_borgmatic_scan_both_layouts_includes_and_directories(tmp_path: Path) -> None:
    write(tmp_path / "common.yaml", """\
        keep_daily: 7
        """)
    new = write(tmp_path / "d" / "a.yaml", """\
        source_directories: [/backup/holding/luv, /etc]
        repositories:
          - path: /backup/borg
            label: main
          - path: ssh://u@host/./repo
        <<: !include ../common.yaml
        """)
    write(tmp_path / "d" / "b.yml", """\
        location:
          source_directories: [/home]
          repositories: [/srv/other-borg]
        retention: !retain
          keep_daily: 3
        """)
    write(tmp_path / "d" / "notes.txt", "not a config")
    found = borgmatic.scan((tmp_path / "d",))
    assert found.repositories == ("/backup/borg", "ssh://u@host/./repo", "/srv/other-borg")
    assert found.sources == ("/backup/holding/luv", "/etc", "/home")
    assert borgmatic.load_yaml(new)["keep_daily"] == 7
    cfg = config({})
    assert set(borgmatic.resources_for(cfg, found)) == {
        Resource("repo:main", True), Resource("storage", False),
        Resource("repo-path:ssh://u@host/./repo", True),
        Resource("repo-path:/srv/other-borg", True), Resource("holding:luv", False)}


def test_borgmatic_job_config(tmp_path: Path) -> None:
    conf = write(tmp_path / "c.yaml", "repositories: [{path: /backup/borg}]\n")
    cfg = config({"bm": {"kind": "borgmatic", "configs": [str(conf)]}})
    job = cfg.jobs["bm"]
    assert borgmatic.plan(job).argv == ("borgmatic", "-c", str(conf), "prune", "create")
    assert Resource("repo:main", True) in job.resources(cfg)
    text = problems({"bm": {"kind": "borgmatic", "configs": [str(tmp_path / "missing.yaml")]}})
    assert "jobs.bm.configs: cannot read borgmatic config" in text
    empty = write(tmp_path / "e.yaml", "source_directories: [/etc]\n")
    assert "name no repositories" in problems({"bm": {"kind": "borgmatic",
                                                      "configs": [str(empty)]}})
    bad = write(tmp_path / "bad.yaml", "repositories: [unclosed\n")
    assert "not valid YAML" in problems({"bm": {"kind": "borgmatic", "configs": [str(bad)]}})
