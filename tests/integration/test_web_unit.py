"""phobos-web.service: rendered with the other units when the config has a [web] table,
accepted by systemd-analyze, well confined; and the dashboard really works the way the
unit runs it — an unprivileged user holding only CAP_DAC_READ_SEARCH, with the state
(root's, mode 0600, as the job units write it) on a read-only mount — while jobs are
idle and while one runs."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_web import Server, fill, free_port, get, interrupt, wait_for_output, write_config

from conftest import REPO, Sandbox, phobos_env
from phobos.config.load import parse
from phobos.systemd.names import WEB_UNIT
from phobos.systemd.units import Target, render

TARGET = Target(executable=Path("/usr/bin/phobos"), config=Path("/etc/phobos/phobos.toml"))
BASE = """
[repos.main]
path = "/backup/borg"
passcommand = "cat /etc/phobos/borg.pass"
passphrase_file = "/etc/phobos/other.pass"

[drives.ext-a]
luks_uuid = "2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11"
keyfile = "/root/ext-a.key"

[jobs.nightly]
kind = "command"
argv = ["true"]
schedule = "*-*-* 03:00"

[notify]
email = { to = ["root"], password_file = "/etc/phobos/smtp.pass" }
"""


def _config(text: str) -> object:
    return parse(tomllib.loads(text), TARGET.config, text)


def _lines(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def test_only_a_config_with_a_web_table_gets_the_unit() -> None:
    assert WEB_UNIT not in render(_config(BASE), TARGET)  # type: ignore[arg-type]
    files = render(_config(BASE + "[web]\n"), TARGET)  # type: ignore[arg-type]
    unit = files[WEB_UNIT]
    assert _lines(unit, "ExecStart") == ["/usr/bin/phobos -c /etc/phobos/phobos.toml web"]
    assert _lines(unit, "DynamicUser") == ["yes"]
    assert _lines(unit, "AmbientCapabilities") == ["CAP_DAC_READ_SEARCH"]
    assert _lines(unit, "CapabilityBoundingSet") == ["CAP_DAC_READ_SEARCH"]
    assert _lines(unit, "ProtectSystem") == ["strict"]
    assert not _lines(unit, "StateDirectory") and not _lines(unit, "ReadWritePaths")
    assert _lines(unit, "IPAddressAllow") == ["localhost"]
    hidden = _lines(unit, "InaccessiblePaths")[0].split()
    assert hidden == ["-/etc/phobos/borg.pass", "-/etc/phobos/keys", "-/etc/phobos/other.pass",
                      "-/etc/phobos/smtp.pass", "-/root/ext-a.key"]
    assert _lines(unit, "WantedBy") == ["multi-user.target"]


def test_an_open_address_and_a_low_port() -> None:
    text = BASE + '[web]\nlisten = "0.0.0.0:443"\ntoken_file = "/etc/phobos/web.token"\n'
    unit = render(_config(text), TARGET)[WEB_UNIT]  # type: ignore[arg-type]
    assert not _lines(unit, "IPAddressDeny")
    assert _lines(unit, "AmbientCapabilities") == ["CAP_DAC_READ_SEARCH CAP_NET_BIND_SERVICE"]
    # The token file stays readable even where key material is hidden around it.
    text = BASE.replace("[jobs.nightly]", '[paths]\nkeys = "/etc/phobos"\n\n[jobs.nightly]')
    unit = render(_config(text + '[web]\ntoken_file = "/etc/phobos/web.token"\n'),  # type: ignore[arg-type]
                  TARGET)[WEB_UNIT]
    assert "-/etc/phobos " not in _lines(unit, "InaccessiblePaths")[0] + " "


def test_systemd_accepts_it_and_scores_it_well(tmp_path: Path) -> None:
    unit = tmp_path / WEB_UNIT
    target = Target(executable=REPO / ".venv" / "bin" / "phobos", config=tmp_path / "c.toml")
    unit.write_text(render(_config(BASE + "[web]\n"), target)[WEB_UNIT])  # type: ignore[arg-type]
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    done = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                           str(unit)], capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    print("phobos-web.service exposure", match.group(1))
    assert float(match.group(1)) <= 2.0


def _as_the_unit(sandbox: Sandbox, port: int) -> subprocess.Popen[str]:
    """`phobos web` as its unit runs it: uid/gid 65534, only CAP_DAC_READ_SEARCH, the
    state directory bound read-only in a private mount namespace."""
    for tool in ("unshare", "setpriv", "mount"):
        assert shutil.which(tool), f"{tool} is needed (util-linux)"
    state = str(sandbox.state)
    script = ('mount --bind -o ro "$0" "$0" && exec setpriv --reuid=65534 --regid=65534 '
              "--clear-groups --inh-caps=-all,+dac_read_search "
              '--ambient-caps=-all,+dac_read_search --bounding-set=-all,+dac_read_search "$@"')
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, state,
            *sandbox.argv("web", "--listen", f"127.0.0.1:{port}")]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=phobos_env())


def _wait_up(server: Server) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert server.process.poll() is None, server.process.communicate()
        try:
            if get(server.url + "/api/status").status:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "phobos web did not come up"
        time.sleep(0.1)


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A directory whose ancestors all let others search them, like /var/lib. (SQLite
    checks for the -wal file with access(2), which ignores capabilities of non-root
    users: a reader needs search permission on the path itself.)"""
    root = Path(tempfile.mkdtemp(prefix="phobos-web-unit-", dir="/var/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


@pytest.mark.root
def test_the_dynamic_user_reads_root_only_state_on_a_read_only_mount(open_root: Path) -> None:
    sandbox = Sandbox(root=open_root, config=open_root / "phobos.toml")
    write_config(sandbox)
    fill(sandbox)
    # What the job units leave: files 0600 (UMask=0077) in a 0755 StateDirectory=.
    for path in [*sandbox.state.iterdir(), sandbox.config]:
        path.chmod(0o600)
    assert not (sandbox.state / "history.sqlite-wal").exists()  # at rest: no writer
    port = free_port()
    server = Server(_as_the_unit(sandbox, port), f"http://127.0.0.1:{port}")
    try:
        _wait_up(server)
        page = get(server.url + "/").body
        assert 'data-job="nightly" data-state="failed"' in page
        assert 'data-state="red"' in page
        assert "phobos_led_state{state=\"red\"} 1" in get(server.url + "/metrics").body
        assert "disk &lt;full&gt;" in get(server.url + "/runs/1").body
        # A job starts: now a writer holds the -wal and -shm files (root's, 0600).
        text = sandbox.config.read_text().replace("sleep 0.3", "sleep 60")
        sandbox.config.write_text(text)
        job = sandbox.start("run", "pull-luv")
        try:
            deadline = time.monotonic() + 20
            while 'data-job="pull-luv" data-state="running"' not in get(server.url).body:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert (sandbox.state / "history.sqlite-wal").exists()
            assert '<meta http-equiv="refresh" content="5">' in get(server.url).body
        finally:
            wait_for_output(server.url, "pull-luv", "pulled")
            interrupt(job)
        page = get(server.url).body
        row = page[page.index('data-job="pull-luv"'):].split("</tr>")[0]
        assert 'data-state="interrupted"' in row, row
    finally:
        err = server.stop()
    assert "Traceback" not in err, err
