"""The borgmatic kind: a real borgmatic (from the test extra) runs an existing config
against a phobos-initialized repository, under phobos's repo lock."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from borgbox import initialized

# Borg integration: every test runs with the venv's Borg 1.4 and Debian's 1.2.
pytestmark = pytest.mark.usefixtures("each_borg")


def test_borgmatic_config_run(sandbox: Any) -> None:
    box = initialized(sandbox)
    config = box.root / "borgmatic.d" / "main.yaml"
    config.parent.mkdir()
    config.write_text(textwrap.dedent(f"""\
        source_directories:
          - {box.root}/src
        repositories:
          - path: {box.repo}
            label: main
        encryption_passcommand: cat {box.root}/borg.pass
        borg_base_directory: {box.root}/borgbase
        archive_name_format: "bm-{{now:%Y-%m-%dT%H:%M:%S}}"
        keep_daily: 7
        """))
    box.write(f"""\
        [jobs.bm]
        kind = "borgmatic"
        configs = ["{config.parent}"]
        options = ["--verbosity", "1"]
        """)
    box.ok("run", "bm")
    run = box.last_run("bm")
    assert run["outcome"] == "success"
    assert run["stats"]["repositories"] == [str(box.repo)]
    log = box.log_text(run["id"])
    assert "holding repo:main (write)" in log
    argv = json.loads(box.ok("log", str(run["id"]), "--json").stdout)["steps"][0]["argv"]
    assert argv[-2:] == ["prune", "create"]
    archives = box.archives()
    assert len(archives) == 1 and archives[0].startswith("bm-")
