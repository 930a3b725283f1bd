"""`phobos web` over HTTP: a real server process on 127.0.0.1, a history written by real
`phobos run` processes of command jobs (one failing: the file LED turns red), every
page, /metrics, /api/status against `phobos status --json`, and nothing written.

The helpers here (a filled sandbox, a server) are shared with the other test_web*
modules, which import them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Sandbox
from phobos.config.load import load
from phobos.core.history import History
from phobos.core.model import Outcome
from phobos.drives.identity import get as drive_of
from phobos.drives.state import record_event, record_sync

SECRET = "hunter2-very-secret"

JOBS = f"""
[repos.main]
path = "{{root}}/borg"

[drives.ext-a]
luks_uuid = "2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11"
unlock = "none"

[drives.ext-b]
luks_uuid = "a2ea-96ed"
unlock = "none"

[jobs.nightly]
kind = "command"
description = "archive everything"
argv = ["sh", "-c", "echo archiving /home; echo 'disk <full> & broken' >&2; exit 3"]
schedule = "*-*-* 03:00"
writes = ["storage"]

[jobs.pull-luv]
kind = "command"
argv = ["sh", "-c", "echo pulled; echo token=$API_TOKEN; sleep 0.3"]
secret_env = {{ API_TOKEN = "{SECRET}" }}
schedule = "*-*-* 03:00"
writes = ["storage"]

[jobs.offsite]
kind = "drive-sync"
repo = "main"
drives = ["ext-a", "ext-b"]

[notify.led]
driver = "file"
path = "{{root}}/led"

[web]
"""


def write_config(sandbox: Sandbox, extra: str = "") -> Path:
    return sandbox.write(JOBS.replace("{root}", str(sandbox.root)) + extra)


def fill(sandbox: Sandbox) -> None:
    """Real runs: nightly fails (LED red), pull-luv succeeds twice; then the drive state
    of a sync to ext-a, as drive-sync records it."""
    assert sandbox.phobos("run", "nightly").returncode == 1
    for _ in range(2):
        done = sandbox.phobos("run", "pull-luv")
        assert done.returncode == 0, done.stderr
    assert (sandbox.root / "led").read_text() == "red\n"
    config = load(sandbox.config)
    record_event(config, "attached", "ext-a", "2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11")
    record_sync(config, drive_of(config, "ext-a"), job="offsite", run_id=99,
                stats={"files": 12, "bytes": 4096, "copied_bytes": 2048})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str

    def stop(self) -> str:
        """Stop the server (SIGTERM) and return what it wrote to stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, err = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        return err


def start_server(sandbox: Sandbox, *extra: str, port: int | None = None) -> Server:
    """`phobos web` as a real process; returns once it accepts connections."""
    port = port or free_port()
    process = sandbox.start("web", "--listen", f"127.0.0.1:{port}", *extra)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"phobos web exited {process.returncode}: "
                                 f"{process.communicate()[1]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return Server(process, f"http://127.0.0.1:{port}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError("phobos web did not start listening within 20 s")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


OPENER = urllib.request.build_opener(NoRedirect)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Reply:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with OPENER.open(request, timeout=30) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()},
                         response.read().decode())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()},
                     exc.read().decode())


def wait_for_output(url: str, job: str, text: str, seconds: float = 20) -> int:
    """Wait until ``job``'s current run has logged ``text`` (so its process has set up its
    signal handlers and runs its step); returns the run id."""
    deadline = time.monotonic() + seconds
    while True:
        entries = json.loads(get(url + "/api/status").body)["jobs"]
        last = next(e["last"] for e in entries if e["job"] == job)
        if last is not None and last["outcome"] == "running" and text in get(
                f"{url}/runs/{last['id']}").body:
            return int(last["id"])
        assert time.monotonic() < deadline, f"{job} did not log {text!r}"
        time.sleep(0.1)


def interrupt(job: subprocess.Popen[str]) -> None:
    """SIGTERM, as systemd stops a unit; the run is recorded as interrupted."""
    job.send_signal(signal.SIGTERM)
    job.communicate(timeout=30)


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    root = tmp_path_factory.mktemp("web")
    sandbox = Sandbox(root=root, config=root / "phobos.toml")
    write_config(sandbox)
    fill(sandbox)
    return sandbox


@pytest.fixture(scope="module")
def server(filled: Sandbox) -> Iterator[Server]:
    running = start_server(filled)
    yield running
    running.stop()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- pages ---------------------------------------------------------------------------------


def test_overview_lists_jobs_led_drives_and_repos(server: Server) -> None:
    reply = get(server.url + "/")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/html")
    page = reply.body
    for job in ("nightly", "pull-luv", "offsite"):
        assert f'data-job="{job}"' in page
    assert re.search(r'id="led" class="dot led led-red" data-state="red"', page)
    assert "nightly failed at" in page  # the LED's reason
    assert re.search(r'data-job="nightly" data-state="failed"', page)
    assert re.search(r'data-job="pull-luv" data-state="success"', page)
    assert re.search(r'data-job="offsite" data-state="never"', page)
    assert "disk &lt;full&gt; &amp; broken" in page  # the failure message, escaped
    assert 'data-drive="ext-a"' in page and 'data-drive="ext-b"' in page
    # ext-b was never synced: it is the one due next, and overdue.
    ext_b = page[page.index('data-drive="ext-b"'):].split("</tr>")[0]
    assert "due next" in ext_b and "never synced" in ext_b
    assert 'data-repo="main"' in page and "not initialized" in page
    assert '<meta http-equiv="refresh" content="60">' in page  # idle: once a minute
    assert '<meta name="viewport"' in page


def test_timeline_has_the_schedule_and_the_past_week(server: Server) -> None:
    page = get(server.url + "/timeline").body
    schedule = page[page.index('id="schedule"'):page.index('id="week"')]
    assert "<svg" in schedule and 'class="run"' in schedule
    assert "nightly" in schedule and "pull-luv" in schedule
    # Both at 03:00 and both write storage: nightly comes first in the config, so
    # pull-luv waits (hatched) for nightly's nominal minute (it never succeeded).
    assert 'class="waiting"' in schedule
    assert re.search(r"<li>\S+ +pull-luv at 03:00 waits 1m for nightly \(storage\)</li>", page)
    assert "offsite</a>: duration unknown (no runs yet); set" in page
    week = page[page.index('id="week"'):]
    assert week.count('<a href="/runs/') == 3  # every real run of the week
    assert 'class="run failed"' in week and 'class="run success"' in week


def test_job_page_has_runs_and_a_duration_chart(server: Server) -> None:
    page = get(server.url + "/jobs/pull-luv").body
    assert "<h1>" in page and "pull-luv" in page
    assert page.count('class="run" data-outcome="success"') == 2
    chart = page[page.index('id="durations"'):page.index('id="runs"')]
    assert chart.count('<a href="/runs/') == 2
    assert "storage (write)" in page
    assert "2 runs" in page  # typical duration from history
    failed = get(server.url + "/jobs/nightly").body
    assert 'class="run" data-outcome="failed"' in failed
    assert "archive everything" in failed


def test_run_page_shows_the_redacted_log_as_stored(server: Server, filled: Sandbox) -> None:
    runs = json.loads(filled.phobos("history", "--json").stdout)["runs"]
    ids = {r["job"]: r["id"] for r in runs}
    page = get(f"{server.url}/runs/{ids['pull-luv']}").body
    assert "pulled" in page and "token=" in page
    assert SECRET not in page
    stored = json.loads(filled.phobos("log", str(ids["pull-luv"]), "--json").stdout)
    for line in stored["log"]:
        assert line["line"].replace("&", "&amp;").replace("<", "&lt;") \
            .replace(">", "&gt;").replace("'", "&#39;").replace('"', "&#34;") in page
    failed = get(f"{server.url}/runs/{ids['nightly']}").body
    assert '<span class="stderr">disk &lt;full&gt; &amp; broken</span>' in failed
    assert 'id="outcome">failed (exit 1)' in failed
    assert "sh -c" in failed  # the step's argv


def test_drives_page(server: Server) -> None:
    page = get(server.url + "/drives").body
    ext_a = page[page.index('data-drive="ext-a"'):page.index('data-drive="ext-b"')]
    assert "2.0 KiB" in ext_a and '<a href="/runs/99">' in ext_a
    assert "offsite" in ext_a
    ext_b = page[page.index('data-drive="ext-b"'):]
    assert "due next" in ext_b and "never" in ext_b
    assert "synced" in page and "attached" in page  # the event log


def test_unknown_job_and_run_are_404(server: Server) -> None:
    reply = get(server.url + "/jobs/nigthly")
    assert reply.status == 404 and "no job named" in reply.body and "nightly" in reply.body
    assert get(server.url + "/runs/4242").status == 404
    # Beyond SQLite's 64-bit ids: no run, not an internal error.
    for huge in ("9223372036854775808", "9" * 40):
        reply = get(server.url + f"/runs/{huge}")
        assert reply.status == 404 and "no run with id" in reply.body
    assert get(server.url + "/nowhere").status == 404


def test_api_status_matches_phobos_status_json(server: Server, filled: Sandbox) -> None:
    reply = get(server.url + "/api/status")
    assert reply.headers["content-type"].startswith("application/json")
    cli = filled.phobos("status", "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(reply.body) == json.loads(cli.stdout)
    assert reply.body == cli.stdout  # byte for byte, as long as no schedule elapsed between


def test_metrics_are_prometheus_text(server: Server) -> None:
    reply = get(server.url + "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = reply.body
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"\\\n]*",?)*\})? -?[0-9.e+]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    assert 'phobos_job_last_outcome{job="nightly",kind="command",outcome="failed"} 1' in text
    assert 'phobos_job_last_outcome{job="pull-luv",kind="command",outcome="success"} 1' in text
    assert re.search(r'phobos_job_last_success_timestamp_seconds\{job="pull-luv",kind="command"\}'
                     r" \d+\.\d+", text)
    assert 'phobos_job_last_success_timestamp_seconds{job="nightly"' not in text
    assert re.search(r'phobos_job_last_duration_seconds\{job="pull-luv",kind="command"\} 0\.\d+',
                     text)
    assert re.search(r'phobos_drive_age_seconds\{drive="ext-a"\} \d', text)
    assert 'phobos_drive_age_seconds{drive="ext-b"}' not in text  # never synced
    assert 'phobos_drive_overdue{drive="ext-b"} 1' in text
    assert 'phobos_drive_due_next{drive="ext-b"} 1' in text
    assert 'phobos_led_state{state="red"} 1' in text
    assert 'phobos_job_overdue{job="nightly",kind="command"} 0' in text


def test_only_get_and_head(server: Server) -> None:
    assert get(server.url + "/", method="POST").status == 405
    assert get(server.url + "/api/status", method="DELETE").status == 405
    head = get(server.url + "/", method="HEAD")
    assert head.status == 200 and head.body == ""


def test_security_headers_and_no_script(server: Server) -> None:
    reply = get(server.url + "/timeline")
    csp = reply.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["referrer-policy"] == "no-referrer"
    assert "<script" not in reply.body


def test_loopback_without_token_refuses_foreign_host_names(server: Server) -> None:
    assert get(server.url + "/", {"Host": "localhost:8470"}).status == 200
    assert get(server.url + "/", {"Host": "[::1]:8470"}).status == 200
    reply = get(server.url + "/", {"Host": "rebind.example.com"})
    assert reply.status == 403 and "token" in reply.body


def test_reading_changes_nothing(filled: Sandbox) -> None:
    state = filled.state
    before = {p.name: _digest(p) for p in state.iterdir() if p.is_file()}
    led = (filled.root / "led").read_text()
    server = start_server(filled)
    try:
        for path in ("/", "/timeline", "/drives", "/jobs/nightly", "/runs/1", "/metrics",
                     "/api/status"):
            assert get(server.url + path).status == 200
    finally:
        server.stop()
    after = {p.name: _digest(p) for p in state.iterdir() if p.is_file()}
    # SQLite's reader may create the -wal/-shm files next to the database; nothing else.
    assert {k: v for k, v in after.items() if not k.endswith(("-wal", "-shm"))} == \
        {k: v for k, v in before.items() if not k.endswith(("-wal", "-shm"))}
    wal = state / "history.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0 or before.get(wal.name) == after[wal.name]
    assert (filled.root / "led").read_text() == led


def test_running_job_shows_and_pages_refresh_fast(tmp_path: Path) -> None:
    sandbox = Sandbox(root=tmp_path, config=tmp_path / "phobos.toml")
    write_config(sandbox, extra="")
    text = sandbox.config.read_text().replace(
        'argv = ["sh", "-c", "echo pulled; echo token=$API_TOKEN; sleep 0.3"]',
        'argv = ["sh", "-c", "echo pulled; sleep 60"]')
    sandbox.config.write_text(text)
    job = sandbox.start("run", "pull-luv")
    server = start_server(sandbox)
    try:
        deadline = time.monotonic() + 20
        while 'data-job="pull-luv" data-state="running"' not in (page := get(server.url).body):
            assert time.monotonic() < deadline, page
            time.sleep(0.1)
        assert '<meta http-equiv="refresh" content="5">' in page
        assert "Running now:" in page and 'class="badge run"' in page
        run_id = wait_for_output(server.url, "pull-luv", "pulled")
        run_page = get(f"{server.url}/runs/{run_id}").body
        assert '<meta http-equiv="refresh" content="5">' in run_page
        assert "still running" in run_page
        assert 'phobos_job_running{job="pull-luv",kind="command"} 1' in get(
            server.url + "/metrics").body
        interrupt(job)
        page = get(server.url).body
        assert 'data-job="pull-luv" data-state="interrupted"' in page
        assert '<meta http-equiv="refresh" content="60">' in page
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
        server.stop()


def test_a_run_whose_process_vanished_reads_as_stale(tmp_path: Path) -> None:
    sandbox = Sandbox(root=tmp_path, config=tmp_path / "phobos.toml")
    write_config(sandbox)
    history = History.open(sandbox.state)
    run_id = history.start_run(job="nightly", kind="command", trigger="timer")
    history.db.execute("UPDATE runs SET pid = 999999999, pid_start = 1 WHERE id = ?",
                       (run_id,))
    history.close()
    server = start_server(sandbox)
    try:
        page = get(server.url).body
        assert 'data-job="nightly" data-state="stale"' in page
        assert '<meta http-equiv="refresh" content="60">' in page
    finally:
        server.stop()
    # The dashboard never recovers runs: that is for a phobos that writes.
    assert History.open(sandbox.state).run(run_id).outcome is Outcome.RUNNING


def test_stats_charts_and_check_coverage(tmp_path: Path) -> None:
    sandbox = Sandbox(root=tmp_path, config=tmp_path / "phobos.toml")
    write_config(sandbox, extra="""
[jobs.archive]
kind = "archive"
repo = "main"
sources = ["/etc"]
schedule = "*-*-* 02:00"

[jobs.check]
kind = "check"
repo = "main"
schedule = "Sun *-*-* 07:00"
""")
    history = History.open(sandbox.state)
    now = time.time()
    for index, size in enumerate((1000, 3000, 2_500_000)):
        run_id = history.start_run(job="archive", kind="archive", trigger="timer")
        history.finish_run(run_id, outcome=Outcome.SUCCESS, exit_code=0, message=None,
                           stats={"archive": f"a{index}", "deduplicated_size": size,
                                  "original_size": 10 * size, "repo": "main"})
    run_id = history.start_run(job="check", kind="check", trigger="timer")
    history.finish_run(run_id, outcome=Outcome.SUCCESS, exit_code=0, message=None,
                       stats={"repo": "main", "segments": 50, "checked_segments": 21,
                              "coverage": 0.42, "pass_complete": False,
                              "last_full_pass": now - 86400})
    history.close()
    server = start_server(sandbox)
    try:
        job = get(server.url + "/jobs/archive").body
        assert "Deduplicated size (new data in the repository)" in job
        assert "last 2.4 MiB" in job
        overview = get(server.url).body
        repo = overview[overview.index('data-repo="main"'):].split("</tr>")[0]
        assert "42.0% of 50 segments" in repo and "2.4 MiB" in repo
        metrics = get(server.url + "/metrics").body
        assert 'phobos_repo_check_coverage_ratio{repo="main"} 0.42' in metrics
    finally:
        server.stop()


def test_missing_history_is_an_empty_dashboard(tmp_path: Path) -> None:
    sandbox = Sandbox(root=tmp_path, config=tmp_path / "phobos.toml")
    write_config(sandbox)
    server = start_server(sandbox)
    try:
        page = get(server.url).body
        assert 'data-job="nightly" data-state="never"' in page
        assert json.loads(get(server.url + "/api/status").body)["jobs"][0]["last"] is None
    finally:
        server.stop()
    assert not (sandbox.state / "history.sqlite").exists()  # reading created nothing


def test_a_repository_on_hidden_storage_is_not_called_uninitialized(tmp_path: Path) -> None:
    """The dashboard runs outside the backup namespace: a repository on the storage
    mounted only inside it is out of sight, which the page says instead of claiming
    it was never initialized."""
    sandbox = Sandbox(root=tmp_path, config=tmp_path / "phobos.toml")
    write_config(sandbox, f"""
[storage]
root = "{tmp_path}"
holding = "{tmp_path}/holding"
device = "/dev/disk/by-label/phobos-storage"
""")
    server = start_server(sandbox)
    try:
        page = get(server.url).body
        assert 'data-repo="main"' in page and "in the backup namespace" in page
        assert "not initialized" not in page
    finally:
        server.stop()


def test_a_second_server_on_a_busy_port_says_so(server: Server, filled: Sandbox) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    done = filled.phobos("web", "--listen", f"127.0.0.1:{port}", timeout=30)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_web_is_not_imported_by_other_commands(filled: Sandbox) -> None:
    code = ("import sys; from phobos.__main__ import main; main(['-c', sys.argv[1], "
            "'status']); print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('starlette', 'jinja2', 'uvicorn')))")
    done = subprocess.run([sys.executable, "-c", code, str(filled.config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("[]")
