"""Off-site strands as pure logic: ssh:// URLs, the Borg environment of a repository
over SSH, its authorized_keys line, net:LINK resources, the cloud-sync argv and its
output, rclone config secrets, max_age in overdue, and the unit sandbox's network."""

from __future__ import annotations

import shlex
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from phobos.config.load import parse
from phobos.core.history import Run
from phobos.core.locks import Resource
from phobos.core.model import Outcome
from phobos.errors import ConfigError
from phobos.jobs import archive, cloud_sync
from phobos.repos import remote
from phobos.repos.repo import Repo, access
from phobos.repos.resources import cli_lock, repo_resources
from phobos.schedule.plan import job_timing
from phobos.systemd.sandbox import job_sandbox
from phobos.tools import borg as b
from phobos.tools import rclone
from phobos.tools.ssh import parse_ssh_url

BORG14 = b.Borg(path="/usr/bin/borg", version=(1, 4, 5))
URL = "ssh://borg@nas.example.org:2222/srv/borg/main"


def config(jobs: dict[str, Any] | None = None, **repo: Any) -> Any:
    raw = {"paths": {"keys": "/etc/phobos/keys", "state": "/var/lib/phobos"},
           "storage": {"root": "/backup", "holding": "/backup/holding"},
           "repos": {"main": {"path": "/backup/borg", "passcommand": "cat /p"},
                     "off": {"url": URL, "passcommand": "cat /p", **repo}},
           "jobs": jobs or {}}
    return parse(raw, Path("/etc/phobos/phobos.toml"))


@pytest.mark.parametrize(("url", "parts", "server_path"), [
    (URL, ("borg", "nas.example.org", 2222, "/srv/borg/main"), "/srv/borg/main"),
    ("ssh://h/~/repo", (None, "h", 22, "/~/repo"), "repo"),
    ("ssh://u@[fd00::2]:23/./x", ("u", "fd00::2", 23, "/./x"), "x"),
])
def test_ssh_urls(url: str, parts: tuple[Any, ...], server_path: str) -> None:
    found = parse_ssh_url(url)
    assert (found.user, found.host, found.port, found.path) == parts
    assert found.server_path == server_path


@pytest.mark.parametrize("url", ["ssh://h", "ssh://h/..", "ssh://h/a/../b", "nas:/srv",
                                 "ssh://-oProxyCommand=x/y", "ssh://h/a,b", "ssh://h:0/x"])
def test_bad_ssh_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_ssh_url(url)


def test_a_remote_repository_gets_borg_rsh_with_its_own_key_and_pin() -> None:
    cfg = config(remote_path="borg1")
    acc = access(cfg, "off", BORG14)
    assert acc.location == URL
    rsh = shlex.split(acc.env["BORG_RSH"])
    assert rsh[0] == "ssh"
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes",
                   "UserKnownHostsFile=/etc/phobos/keys/known_hosts",
                   "GlobalKnownHostsFile=/dev/null", "HostKeyAlias=repo:off",
                   "UpdateHostKeys=no", "ServerAliveInterval=15"):
        assert option in rsh
    assert rsh[rsh.index("-i") + 1] == "/etc/phobos/keys/repo-off_ed25519"
    assert acc.env["BORG_REMOTE_PATH"] == "borg1"
    assert b.list_argv(BORG14, acc)[-1] == URL
    local = access(cfg, "main", BORG14)
    assert "BORG_RSH" not in local.env and local.location == "/backup/borg"


def test_the_authorized_keys_line_confines_the_key() -> None:
    cfg = config()
    line = remote.authorized_keys_line(cfg.repos["off"], "ssh-ed25519 AAAA c")
    assert line == ('command="borg serve --append-only --restrict-to-repository '
                    '/srv/borg/main",restrict ssh-ed25519 AAAA c')
    full = config(append_only=False, url="ssh://h/~/borg")
    assert remote.serve_command(full.repos["off"]) == \
        "borg serve --restrict-to-repository borg"


def test_net_resources_follow_the_link() -> None:
    cfg = config({"n": {"kind": "archive", "repo": "off", "sources": ["/srv/data"]},
                  "d": {"kind": "drill", "repo": "off"},
                  "c": {"kind": "cloud-sync", "repo": "main", "remote": "b2:bucket/x"},
                  "l": {"kind": "cloud-sync", "repo": "main", "remote": "/mnt/nfs/x",
                        "link": "nas.example.org"}})
    assert set(cfg.jobs["n"].resources(cfg)) == {
        Resource("repo:off"), Resource("net:nas.example.org")}
    assert set(cfg.jobs["d"].resources(cfg)) == {
        Resource("repo:off", write=False), Resource("net:nas.example.org", write=False)}
    assert set(cfg.jobs["c"].resources(cfg)) == {
        Resource("repo:main", write=False), Resource("storage", write=False),
        Resource("net:b2")}
    assert Resource("net:nas.example.org") in cfg.jobs["l"].resources(cfg)
    linked = config(link="uplink")
    assert Resource("net:uplink", write=False) in repo_resources(linked, "off", write=False)


def test_a_cli_look_at_a_repository_never_waits_for_the_link(tmp_path: Path) -> None:
    raw = {"paths": {"run": str(tmp_path)}, "repos": {"off": {"url": URL}}}
    cfg = parse(raw, Path("/x.toml"))
    with cli_lock(cfg, "off", write=False, what="list"):
        held = sorted(p.name for p in tmp_path.joinpath("locks").glob("*.lock"))
    assert held == ["repo--off.lock"]


def test_drive_and_cloud_sync_refuse_a_repository_on_a_server() -> None:
    for kind, extra in (("drive-sync", {"drives": ["a"]}), ("cloud-sync", {"remote": "b2:x"})):
        with pytest.raises(ConfigError) as info:
            config({"j": {"kind": kind, "repo": "off", **extra}})
        assert "repository off is on a server (`url`)" in str(info.value)


def test_archive_to_an_append_only_server_skips_compact() -> None:
    job = {"n": {"kind": "archive", "repo": "off", "sources": ["/srv/data"],
                 "keep": {"daily": 7}, "checkpoint_interval": "5m"}}
    for append_only, steps in ((True, ["create", "prune"]),
                               (False, ["create", "prune", "compact"])):
        cfg = config(job, append_only=append_only)
        repo = Repo(name="off", config=cfg.repos["off"], borg=BORG14,
                    access=access(cfg, "off", BORG14))
        plan = archive.plan(cfg.jobs["n"], "n", repo)
        assert [s.name for s in plan] == steps
        create = plan[0].argv
        assert create[create.index("--checkpoint-interval") + 1] == "300"


@pytest.mark.parametrize(("remote_spec", "problem"), [
    ("b2:bucket/phobos", None), ("/mnt/share/phobos", None), ("my box:dir", None),
    (":s3,access_key_id=AKIA:bucket", "connection string"),
    ("s3,env_auth=true:bucket", "connection string"),
    ("bucket/phobos", "neither REMOTE:path"),
])
def test_cloud_remotes(remote_spec: str, problem: str | None) -> None:
    found = rclone.remote_problem(remote_spec)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_cloud_sync_runs_sync_then_check_under_borgs_lock(tmp_path: Path) -> None:
    conf = tmp_path / "rclone.conf"
    conf.write_text("[b2]\ntype = b2\naccount = 0012345abcd\nkey = K001SecretApplicationKey\n"
                    "hard_delete = true\n[other]\ntype = s3\nsecret_access_key = other-secret\n")
    cfg = config({"c": {"kind": "cloud-sync", "repo": "main", "remote": "b2:bucket/x",
                        "rclone_config": str(conf), "bwlimit": "08:00,512k 23:00,off",
                        "transfers": 8, "rclone_options": ["--fast-list"]}})
    step = cloud_sync.plan(cfg, cfg.jobs["c"])
    argv = list(step.argv)
    assert argv[:5] == ["borg", "with-lock", "--lock-wait", "86400", "/backup/borg"]
    assert argv[5:8] == ["sh", "-c", rclone.SYNC_THEN_CHECK]
    assert argv[8:11] == ["rclone", "/backup/borg/", "b2:bucket/x"]
    assert argv[argv.index("--config") + 1] == str(conf)
    assert argv[argv.index("--bwlimit") + 1] == "08:00,512k 23:00,off"
    assert argv[argv.index("--transfers") + 1] == "8" and argv[-1] == "--fast-list"
    assert "/lock.roster" in argv and "/lock.exclusive/**" in argv
    assert step.secrets == ("K001SecretApplicationKey",)  # the job's remote only
    assert "{" not in rclone.SYNC_THEN_CHECK and '"$@"' in rclone.SYNC_THEN_CHECK


def test_rclone_output_and_exit_codes() -> None:
    lines = [
        "stderr: 2026/12/06 07:57:32 INFO  : config: Copied (new)",
        "stderr: 2026/12/06 07:57:33 INFO  :     2.082 MiB / 8.583 MiB, 24%, 0 B/s, ETA -",
        "stderr: 2026/12/06 07:57:36 INFO  : data/0/1: Copied (new)",
        "stderr: 2026/12/06 07:57:36 INFO  : data/0/7: Deleted",
        "stderr: 2026/12/06 07:57:36 INFO  :     8.583 MiB / 8.583 MiB, 100%, 2 MiB/s, ETA 0s",
        rclone.VERIFYING,
        "stderr: 2026/12/06 07:58:52 INFO  : Using md5 for hash comparisons",
        "stderr: 2026/12/06 07:58:52 NOTICE: Local file system at /x: 0 differences found",
        "stderr: 2026/12/06 07:58:52 NOTICE: Local file system at /x: 4 matching files",
        "stderr: 2026/12/06 07:58:52 INFO  :           0 B / 0 B, -, 0 B/s, ETA -",
    ]
    stats = rclone.parse_output(lines)
    assert stats == {"bytes_sent": round(8.583 * 2**20), "bytes_total": round(8.583 * 2**20),
                     "verified": True, "files_copied": 2, "files_deleted": 1,
                     "files_verified": 4, "verified_by": "md5"}
    sizes_only = rclone.parse_output([rclone.VERIFYING, "x: 3 matching files"])
    assert sizes_only["verified_by"] == "size" and sizes_only["bytes_sent"] == 0
    assert not rclone.parse_output(["INFO  : 1 B / 1 B, 100%"])["verified"]
    assert rclone.explain(101).startswith("verification failed")
    assert "Borg error" in rclone.explain(2) and "fatal" in rclone.explain(7)


def test_rclone_progress_becomes_live_progress_and_keeps_what_was_sent() -> None:
    read = rclone.progress_reader()
    assert read("stderr", "INFO  : data/0/1: Copied (new)").text == \
        "INFO  : data/0/1: Copied (new)"
    first = read("stderr", "INFO  :     4.082 MiB / 8.583 MiB, 48%, 2.113 MiB/s, ETA 1m2s")
    assert first.text is None and first.progress is not None
    assert first.progress.bytes_done == round(4.082 * 2**20)
    assert first.progress.bytes_total == round(8.583 * 2**20)
    assert first.progress.fraction == 0.48 and first.progress.eta == 62.0
    assert first.progress.rate == round(2.113 * 2**20)
    read("stderr", "INFO  :     8.583 MiB / 8.583 MiB, 100%, 2 MiB/s, ETA 0s")
    marker = read("stdout", rclone.VERIFYING).text
    assert marker == f"rclone sync: 8.583 MiB / 8.583 MiB, 100%\n{rclone.VERIFYING}"
    checking = read("stderr", "INFO  :           0 B / 0 B, -, 0 B/s, ETA -")
    assert checking.text is None and checking.progress is not None
    assert checking.progress.detail == "rclone check" and checking.progress.eta is None
    lines = ["x: Copied (new)", *marker.split("\n"), "x: 3 matching files"]
    assert rclone.parse_output(lines)["bytes_sent"] == round(8.583 * 2**20)


def _run(ended: float) -> Run:
    return Run(id=1, job="cloud", kind="cloud-sync", trigger="timer", started=ended - 60,
               locked=ended - 60, ended=ended, outcome=Outcome.SUCCESS, exit_code=0,
               message=None, stats={})


def test_an_old_cloud_copy_is_overdue_schedule_or_not(tmp_path: Path) -> None:
    cfg = config({"c": {"kind": "cloud-sync", "repo": "main", "remote": "b2:x",
                        "max_age": "2d"},
                  "s": {"kind": "cloud-sync", "repo": "main", "remote": "b2:x",
                        "schedule": "*-*-* 02:00", "max_age": "2d"},
                  "n": {"kind": "cloud-sync", "repo": "main", "remote": "b2:x"}})
    now = datetime(2026, 3, 10, 12, 0).astimezone()
    fresh = _run((now - timedelta(days=1)).timestamp())
    old = _run((now - timedelta(days=3)).timestamp())
    assert not job_timing(cfg.jobs["c"], now, fresh, fresh).overdue
    stale = job_timing(cfg.jobs["c"], now, old, old)
    assert stale.overdue and stale.due_since == datetime.fromtimestamp(
        old.ended or 0).astimezone() + timedelta(days=2)
    assert stale.next_run is None
    missed = job_timing(cfg.jobs["s"], now, old, old)  # missed slot before max_age passed
    assert missed.overdue and missed.due_since is not None and missed.due_since.hour == 2
    assert not job_timing(cfg.jobs["n"], now, fresh, fresh).overdue  # 8 days by default
    assert job_timing(cfg.jobs["n"], now + timedelta(days=8), fresh, fresh).overdue


def test_units_of_network_jobs_may_use_the_network() -> None:
    cfg = config({"n": {"kind": "archive", "repo": "off", "sources": ["/srv/data"]},
                  "l": {"kind": "archive", "repo": "main", "sources": ["/srv/data"]},
                  "c": {"kind": "cloud-sync", "repo": "main", "remote": "b2:x"}})
    assert {"AF_INET", "AF_INET6"} <= job_sandbox(cfg, "n").families
    assert not job_sandbox(cfg, "l").families
    cloud = job_sandbox(cfg, "c")
    assert {"AF_INET", "AF_INET6"} <= cloud.families
    assert Path("/etc/phobos/keys") in cloud.write_optional


def test_doctor_names_what_a_remote_repository_and_a_cloud_copy_need(tmp_path: Path) -> None:
    from phobos.config.secrets import secret_files, secret_values
    from phobos.doctor.hosts import server_findings
    from phobos.tools import ssh

    keys = tmp_path / "keys"
    raw = {"paths": {"keys": str(keys)},
           "repos": {"main": {"path": "/b"}, "off": {"url": URL}},
           "jobs": {"c": {"kind": "cloud-sync", "repo": "main", "remote": "b2:x"},
                    "d": {"kind": "cloud-sync", "repo": "main", "remote": "b2:y"},
                    "l": {"kind": "cloud-sync", "repo": "main", "remote": "/mnt/x",
                          "rclone_config": str(tmp_path / "local.conf")}}}
    cfg = parse(raw, Path("/x.toml"))
    missing = server_findings(cfg)
    assert [(f.severity, f.fix) for f in missing] == [("error", "phobos repo trust off")]
    assert "SSH key" in missing[0].message
    keys.mkdir()
    (keys / "repo-off_ed25519").write_text("k")
    assert "no host key pinned for nas.example.org:2222" in server_findings(cfg)[0].message
    ssh.pin(keys / "known_hosts", "repo:off", [ssh.HostKey("ssh-ed25519", "AAAA")])
    assert server_findings(cfg)[0].severity == "ok"
    labels = {s.label: s.required for s in secret_files(cfg)}
    assert labels["repo off ssh key"] is True
    assert labels["job c rclone config"] is True and "job d rclone config" not in labels
    assert labels["job l rclone config"] is False
    (keys / "rclone.conf").write_text("[b2]\ntype = b2\nkey = K001-application-key-42\n")
    assert "K001-application-key-42" in secret_values(cfg)


def test_jobs_sharing_a_link_wait_for_each_other_in_the_schedule(tmp_path: Path) -> None:
    from phobos.core.history import History
    from phobos.schedule.simulate import simulate

    raw = {"paths": {"state": str(tmp_path)},
           "repos": {"main": {"path": "/b"}, "off": {"url": URL, "link": "uplink"}},
           "jobs": {"offsite": {"kind": "archive", "repo": "off", "sources": ["/srv/data"],
                                "schedule": "*-*-* 03:00", "estimate": "2h"},
                    "cloud": {"kind": "cloud-sync", "repo": "main", "remote": "b2:x",
                              "link": "uplink", "schedule": "*-*-* 04:00",
                              "estimate": "1h"}}}
    cfg = parse(raw, Path("/x.toml"))
    history = History.open(tmp_path)
    start = datetime(2026, 3, 10, 0, 0).astimezone()
    sim = simulate(cfg, history, start, start + timedelta(days=1))
    history.close()
    assert sim.shared("offsite", "cloud") == ["net:uplink"]
    cloud = next(r for r in sim.runs if r.job == "cloud")
    offsite = next(r for r in sim.runs if r.job == "offsite")
    assert cloud.waits_for == ["offsite"] and cloud.start == offsite.end
    assert cloud.wait == 3600
