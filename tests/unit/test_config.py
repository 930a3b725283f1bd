"""Bad configs: each gives its exact message and the config-error exit code, never a
traceback. Also: defaults, secrets masked in `config show`, path/env precedence."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from phobos.__main__ import main
from phobos.config.load import load
from phobos.config.schema import line_of, locate_keys

HEADER = '[paths]\nstate = "/tmp/x/state"\nrun = "/tmp/x/run"\n'

BAD_CONFIGS = [
    (  # unknown key with a suggestion, located by line
        """
        [jobs.nightly]
        kind = "command"
        argv = ["true"]
        on_bussy = "skip"
        """,
        ["{f}:7: jobs.nightly.on_bussy: unknown key (did you mean 'on_busy'?)"],
    ),
    (  # the issue's own example: a misspelt retention key inside an inline table
        """
        [notify]
        led = { driver = "file", indx = 2 }
        """,
        ["{f}:5: notify.led.indx: unknown key (did you mean 'index'?)"],
    ),
    (  # wrong types, all reported together
        """
        [jobs.a]
        kind = "command"
        argv = "true"
        timeout = "soon"

        [jobs.b]
        kind = "command"
        argv = ["true"]
        busy_timeout = true
        """,
        ["{f}:6: jobs.a.argv: expected a list, got a string",
         "{f}:7: jobs.a.timeout: 'soon' is not a duration; use e.g. \"90s\", \"30m\", "
         "\"2h\", \"1d\"",
         "{f}:12: jobs.b.busy_timeout: expected a duration such as \"30m\", got a boolean"],
    ),
    (  # bad enum value with suggestion
        """
        [jobs.a]
        kind = "command"
        argv = ["true"]
        on_busy = "wiat"
        """,
        ["{f}:7: jobs.a.on_busy: 'wiat' is not one of 'wait', 'skip', 'fail' "
         "(did you mean 'wait'?)"],
    ),
    (  # unknown kind, missing kind
        """
        [jobs.a]
        kind = "comand"
        [jobs.b]
        argv = ["x"]
        """,
        ["{f}:5: jobs.a.kind: 'comand' is not a job kind (did you mean 'command'?); kinds: "
         "pull, archive, check, drill, drive-sync, cloud-sync, borgmatic, command",
         "{f}:6: jobs.b.kind: required key is missing (one of: pull, archive, check, drill, "
         "drive-sync, cloud-sync, borgmatic, command)"],
    ),
    (  # references to undefined tables
        """
        [jobs.a]
        kind = "command"
        argv = ["true"]
        reads = ["repo:main", "holding:luv", "no spaces"]
        """,
        ["{f}:7: jobs.a.reads.[0]: 'repo:main' names no entry of [repos]",
         "{f}:7: jobs.a.reads.[1]: 'holding:luv' names no entry of [hosts]",
         "{f}:7: jobs.a.reads.[2]: 'no spaces' is not a resource: use storage, holding:HOST, "
         "repo:REPO, drive:DRIVE, or your own KIND:NAME"],
    ),
    (  # relative path, bad names, empty argv, negative duration
        """
        [storage]
        root = "backup"
        [jobs."bad name"]
        kind = "command"
        argv = []
        busy_timeout = -5
        """,
        ["{f}:5: storage.root: 'backup' is not an absolute path",
         "{f}:6: jobs.bad name: 'bad name' is not a valid name: use letters, digits, '.', '_' "
         "and '-', starting with a letter or digit",
         "{f}:8: jobs.bad name.argv: must name a program to run, e.g. "
         "[\"/usr/local/bin/sync-nuhc\"]",
         "{f}:9: jobs.bad name.busy_timeout: a duration cannot be negative"],
    ),
    (  # `after`: a job of no name, itself, a name twice, a circle; a broken job still counts
        """
        [jobs.arc-1]
        kind = "command"
        argv = ["true"]
        after = ["arc-3", "arc-22", "arc-1", "arc-3"]

        [jobs.arc-2]
        kind = "command"
        argv = ["true"]
        after = ["arc-1"]

        [jobs.arc-3]
        kind = "command"
        argv = ["true"]
        after = ["arc-2", "broken"]

        [jobs.broken]
        kind = "command"
        argv = []
        """,
        ["{f}:7: jobs.arc-1.after.[1]: no job named 'arc-22' (did you mean 'arc-2'?)",
         "{f}:7: jobs.arc-1.after.[2]: a job cannot run after itself",
         "{f}:7: jobs.arc-1.after.[3]: 'arc-3' is listed twice",
         "{f}:7: jobs.arc-1.after: these jobs wait for each other in a circle, so none "
         "would start: arc-1 → arc-3 → arc-2 → arc-1; remove one of the `after` entries",
         "{f}:21: jobs.broken.argv: must name a program to run, e.g. "
         "[\"/usr/local/bin/sync-nuhc\"]"],
    ),
    (  # a required key missing in a nested table
        """
        [drives.ext-a]
        label = "x"
        """,
        ["{f}:4: drives.ext-a.luks_uuid: required key is missing"],
    ),
    (  # a repository needs a path or a url, exactly one; a url Borg can reach over SSH
        """
        [repos.main]
        compression = "lz4"
        [repos.both]
        path = "/backup/borg"
        url = "ssh://borg@nas/srv/borg"
        """,
        ["{f}:4: repos.main: give the repository either a `path` (on this machine) or a "
         "`url` (ssh://user@host/path on another one), not both or neither",
         "{f}:6: repos.both: give the repository either a `path` (on this machine) or a "
         "`url` (ssh://user@host/path on another one), not both or neither"],
    ),
    (
        """
        [repos.bad]
        url = "ssh://-oProxyCommand=x/srv/borg"
        [repos.port]
        url = "ssh://nas:70000/srv/borg"
        """,
        ["{f}:5: repos.bad.url: 'ssh://-oProxyCommand=x/srv/borg': a host or user name "
         "cannot start with '-'; e.g. \"ssh://borg@nas.example.org:22/srv/borg/main\"",
         "{f}:7: repos.port.url: 70000 is not a TCP port (1-65535); e.g. "
         "\"ssh://borg@nas.example.org:22/srv/borg/main\""],
    ),
]


@pytest.mark.parametrize(("body", "expected"), BAD_CONFIGS)
def test_bad_config_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          body: str, expected: list[str]) -> None:
    config = tmp_path / "phobos.toml"
    config.write_text(HEADER + textwrap.dedent(body).lstrip("\n"))
    code = main(["-c", str(config), "config", "check"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    problems = [line.strip() for line in err.splitlines() if line.startswith("  ")]
    assert problems == [e.format(f=config) for e in expected]
    count = len(expected)
    assert err.startswith(f"phobos: {config}: {count} problem{'s' if count > 1 else ''} in")


def test_syntax_error_names_file_and_line(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "phobos.toml"
    config.write_text('[jobs.a]\nkind = "command"\nargv = [x]\n')
    assert main(["-c", str(config), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert f"{config}: not valid TOML" in err and "at line 3" in err


def test_missing_file_is_a_config_error(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(tmp_path / "nope.toml"), "status"]) == 2
    err = capsys.readouterr().err
    assert "config file not found" in err and "hint:" in err


def test_env_variable_names_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "from-env.toml"
    config.write_text(HEADER)
    monkeypatch.setenv("PHOBOS_CONFIG", str(config))
    assert main(["config", "check"]) == 0
    assert str(config) in capsys.readouterr().out


def test_defaults_and_secret_masking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "phobos.toml"
    config.write_text(HEADER + textwrap.dedent("""
        [jobs.api]
        kind = "command"
        argv = ["true"]
        secret_env = { API_TOKEN = "hunter2-very-secret" }
        """))
    loaded = load(config)
    job = loaded.jobs["api"]
    assert job.on_busy == "wait" and job.busy_timeout == 6 * 3600
    assert loaded.storage.holding == Path("/backup/holding")
    assert main(["-c", str(config), "config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert json.loads(out)["jobs"]["api"]["secret_env"] == {"API_TOKEN": "********"}
    assert main(["-c", str(config), "config", "show"]) == 0
    assert "hunter2" not in capsys.readouterr().out


def test_unknown_job_name_suggests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "phobos.toml"
    config.write_text(HEADER + '[jobs.nightly]\nkind = "command"\nargv = ["true"]\n')
    assert main(["-c", str(config), "run", "nightyl"]) == 2
    err = capsys.readouterr().err
    assert "no job named 'nightyl' (did you mean 'nightly'?)" in err


def test_bad_cli_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["history", "--limit", "zero"])
    assert exc.value.code == 2
    assert "'zero' is not a whole number" in capsys.readouterr().err


def test_bad_schedule_gets_systemds_verdict(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "phobos.toml"
    config.write_text(HEADER + '[jobs.a]\nkind = "command"\nargv = ["true"]\n'
                      'schedule = "Sun 25:00"\n')
    assert main(["-c", str(config), "config", "check"]) == 2
    err = capsys.readouterr().err
    assert (f"{config}:7: jobs.a.schedule: not a valid systemd calendar expression: "
            "invalid calendar specification 'Sun 25:00': hour 25 is outside 0..23") in err


def test_calendar_verb_matches_systemd_layout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calendar", "Sun *-*-* 07:00", "--iterations", "2",
                 "--base-time", "2026-01-05 02:00:00 UTC"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["  Original form: Sun *-*-* 07:00",
                         "Normalized form: Sun *-*-* 07:00:00",
                         "    Next elapse: Sun 2026-01-11 07:00:00 UTC",
                         lines[3]]
    assert lines[4] == "       Iter. #2: Sun 2026-01-18 07:00:00 UTC"


def test_locate_keys_finds_tables_keys_and_inline_keys() -> None:
    source = ('[jobs.nightly]\nkind = "archive"\nkeep = { daily = 7, dialy = 3 }\n'
              '[jobs."odd name"]\nx.y = 1\n')
    lines = locate_keys(source)
    assert line_of(("jobs", "nightly", "keep", "dialy"), lines) == 3
    assert line_of(("jobs", "nightly", "kind"), lines) == 2
    assert line_of(("jobs", "odd name", "x", "y"), lines) == 5
    assert line_of(("jobs", "nightly", "missing"), lines) == 1
    assert line_of(("nowhere",), lines) is None
