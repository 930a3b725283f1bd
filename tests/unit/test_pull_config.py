"""The pull kind's config: host/hosts, did-you-mean for unknown hosts, host-table
checks, derived resources, the planned steps, and the host snippet of `host add`."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest
from configs import config_from, problems_of

from phobos.config.model import Config
from phobos.core.locks import Resource
from phobos.core.model import Outcome
from phobos.errors import PhobosError, UsageError
from phobos.hosts import AddRequest, config_snippet
from phobos.jobs.pull import HostResult, PullJob, _failure, _stats, plan_host
from phobos.tools.rsync import Features

HEADER = """\
[paths]
keys = "/etc/phobos/keys"

[storage]
holding = "/backup/holding"

[hosts.luv]
address = "luv.example.org"
paths = ["/etc", "/home"]
exclude = ["*/.cache"]

[hosts.chew]
address = "10.0.0.7"
port = 2222
user = "backup"
paths = ["/srv/data/photos"]
rrsync_root = "/srv/data"
bwlimit = "10m"
"""


def _load(tmp_path: Path, body: str) -> Config:
    return config_from(HEADER + textwrap.dedent(body), root=tmp_path)


def _problems(tmp_path: Path, body: str) -> list[str]:
    return problems_of(HEADER + textwrap.dedent(body), root=tmp_path)


def test_single_and_several_hosts(tmp_path: Path) -> None:
    config = _load(tmp_path, """
        [jobs.pull-luv]
        kind = "pull"
        host = "luv"

        [jobs.pull-all]
        kind = "pull"
        hosts = ["luv", "chew"]
        max_parallel = 2
        """)
    one, both = config.jobs["pull-luv"], config.jobs["pull-all"]
    assert isinstance(one, PullJob) and isinstance(both, PullJob)
    assert one.host_names == ("luv",)
    assert both.host_names == ("luv", "chew")
    assert one.max_parallel == 4
    assert one.resources(config) == (Resource("holding:luv", write=True),)
    assert both.resources(config) == (Resource("holding:luv", write=True),
                                      Resource("holding:chew", write=True))


@pytest.mark.parametrize(("body", "expected"), [
    ('[jobs.p]\nkind = "pull"\nhost = "lvu"\n',
     ["jobs.p.host: no host named 'lvu' (did you mean 'luv'?)"]),
    ('[jobs.p]\nkind = "pull"\nhosts = ["luv", "cheww", "luv"]\n',
     ["jobs.p.hosts.[1]: no host named 'cheww' (did you mean 'chew'?)",
      "jobs.p.hosts.[2]: host 'luv' is listed twice"]),
    ('[jobs.p]\nkind = "pull"\n',
     ["jobs.p.host: required key is missing: name the host to pull (host = \"NAME\") or "
      "several (hosts = [\"a\", \"b\"])"]),
    ('[jobs.p]\nkind = "pull"\nhost = "luv"\nhosts = ["chew"]\n',
     ["jobs.p.hosts: set either `host` or `hosts`, not both"]),
    ('[jobs.p]\nkind = "pull"\nhosts = ["luv"]\nmax_parallel = 0\n',
     ["jobs.p.max_parallel: must be 1 or more"]),
    ('[jobs.p]\nkind = "pull"\nhost = "nobody"\n',
     ["jobs.p.host: no host named 'nobody' (define [hosts.nobody])"]),
])
def test_bad_pull_jobs(tmp_path: Path, body: str, expected: list[str]) -> None:
    assert _problems(tmp_path, body) == expected


def test_bad_host_tables_reported_once_even_for_two_jobs(tmp_path: Path) -> None:
    problems = _problems(tmp_path, """
        [hosts.bad]
        address = "-oProxyCommand=x"
        port = 70000
        paths = ["etc", "/var/../etc", "/opt"]
        rrsync_root = "/srv"

        [hosts.empty]
        address = "e"

        [jobs.a]
        kind = "pull"
        hosts = ["bad", "empty"]

        [jobs.b]
        kind = "pull"
        host = "bad"
        """)
    assert problems == [
        "hosts.bad.address: '-oProxyCommand=x' is not a host name or IP address",
        "hosts.bad.port: 70000 is not a TCP port (1-65535)",
        "hosts.bad.paths.[0]: 'etc' is not an absolute path on the host",
        "hosts.bad.paths.[1]: '/var/../etc' contains '..'",
        "hosts.bad.paths.[2]: '/opt' is outside rrsync_root '/srv': the host's rrsync "
        "would refuse it",
        "hosts.empty.paths: no paths to pull: list them, e.g. paths = [\"/etc\", \"/home\"]",
    ]


def test_a_reader_of_the_holding_folder_conflicts_with_the_pull(tmp_path: Path) -> None:
    config = _load(tmp_path, """
        [jobs.pull-luv]
        kind = "pull"
        host = "luv"

        [jobs.archive-luv]
        kind = "command"
        argv = ["true"]
        reads = ["holding:luv"]
        """)
    pull = set(config.jobs["pull-luv"].resources(config))
    reader = set(config.jobs["archive-luv"].resources(config))
    assert {r.name for r in pull} & {r.name for r in reader} == {"holding:luv"}
    assert any(r.write for r in pull)  # shared name, one writer: they conflict


def test_plan_unrestricted_host(tmp_path: Path) -> None:
    config = _load(tmp_path, '[jobs.p]\nkind = "pull"\nhost = "luv"\n')
    plan = plan_host(config, "luv", Features(acls=True, xattrs=False))
    assert plan.folder == plan.dest == Path("/backup/holding/luv")
    argv = plan.pull.argv
    assert argv[-3:] == ("root@luv.example.org:/etc", "root@luv.example.org:/home",
                         "/backup/holding/luv/")
    assert "--acls" in argv and "--xattrs" not in argv and "--exclude=*/.cache" in argv
    assert "-i" in argv[argv.index("-e") + 1]  # the key is in the ssh command
    assert plan.pull.warn_codes == (24,)
    assert plan.pull.explain is not None and "vanished" in plan.pull.explain(24)
    assert plan.pull.name == "pull luv"
    assert plan.prune.name == "prune luv" and "--delete" in plan.prune.argv
    assert plan.prune.argv[-3:] == argv[-3:]
    assert plan.diagnose.argv[-3:] == ("--", "luv.example.org", "true")
    assert 255 in plan.diagnose.ok_codes  # the diagnosis reads ssh's reason, never fails


def test_plan_rrsync_host_keeps_the_holding_layout(tmp_path: Path) -> None:
    config = _load(tmp_path, '[jobs.p]\nkind = "pull"\nhost = "chew"\n')
    plan = plan_host(config, "chew", Features(acls=False, xattrs=False))
    assert plan.folder == Path("/backup/holding/chew")
    assert plan.dest == Path("/backup/holding/chew/srv/data")
    assert plan.pull.argv[-2:] == ("backup@10.0.0.7:photos", "/backup/holding/chew/srv/data/")
    assert "--bwlimit=10m" in plan.pull.argv
    rsh = plan.pull.argv[plan.pull.argv.index("-e") + 1]
    assert rsh.startswith("ssh -p 2222 -i /etc/phobos/keys/pull_ed25519 ")
    assert "HostKeyAlias=chew" in rsh


def test_identity_overrides_the_pull_key(tmp_path: Path) -> None:
    config = _load(tmp_path, """
        [hosts.own]
        address = "own"
        identity = "/root/.ssh/id_own"
        paths = ["/etc"]

        [jobs.p]
        kind = "pull"
        host = "own"
        """)
    plan = plan_host(config, "own", Features(acls=True, xattrs=True))
    assert "-i /root/.ssh/id_own " in plan.pull.argv[plan.pull.argv.index("-e") + 1]


def test_stats_and_failure_of_several_hosts() -> None:
    ok = HostResult(name="a", outcome=Outcome.SUCCESS, duration=1.23456,
                    stats={"files": 3, "bytes_total": 100, "bytes_transferred": 10})
    warn = HostResult(name="b", outcome=Outcome.WARNING, duration=2.0,
                      stats={"files": 2, "bytes_total": 50})
    bad = HostResult(name="c", outcome=Outcome.FAILED, duration=0.1,
                     error=PhobosError("host c is unreachable", "check c"))
    stats = _stats([ok, warn, bad])
    assert stats["files"] == 5 and stats["bytes_total"] == 150
    assert stats["bytes_transferred"] == 10
    assert stats["failed_hosts"] == ["c"]
    assert stats["hosts"]["a"] == {"outcome": "success", "duration": 1.235, "files": 3,
                                   "bytes_total": 100, "bytes_transferred": 10}
    assert stats["hosts"]["c"]["error"] == "host c is unreachable"
    error = _failure([bad], 3)
    assert error.message == ("1 of 3 hosts failed (c); the others were pulled. "
                             "c: host c is unreachable (hint: check c)")
    assert error.hint == "check c"
    single = _failure([bad], 1)
    assert single.message == "host c is unreachable (hint: check c)"
    assert single.hint == "check c"


def test_host_add_snippet_is_valid_config(tmp_path: Path) -> None:
    snippet = config_snippet(AddRequest(name="nuhc", address="nuhc.lan", port=2222,
                                        user="backup", paths=("/srv/a",), root="/srv"))
    parsed = tomllib.loads(snippet)
    assert parsed["hosts"]["nuhc"] == {"address": "nuhc.lan", "port": 2222,
                                       "user": "backup", "paths": ["/srv/a"],
                                       "rrsync_root": "/srv"}
    assert parsed["jobs"]["pull-nuhc"] == {"kind": "pull", "host": "nuhc"}
    config = _load(tmp_path, snippet)
    assert isinstance(config.jobs["pull-nuhc"], PullJob)


def test_host_add_refuses_bad_requests(tmp_path: Path) -> None:
    from phobos.hosts import add

    config = _load(tmp_path, "")
    with pytest.raises(UsageError, match="outside rrsync_root"):
        add(config, AddRequest(name="x", address="x", paths=("/etc",), root="/srv"),
            lambda new, old: True)
    with pytest.raises(UsageError, match="without spaces"):
        add(config, AddRequest(name="x", address="x", root="/a b"), lambda new, old: True)
    with pytest.raises(UsageError, match="not a valid name"):
        add(config, AddRequest(name="x y", address="x"), lambda new, old: True)
