"""Progress and live state with the real tools: an archive whose source is a FIFO fed
slowly (`borg create --read-special`), so the run lasts as long as the test wants, seen
from other processes (`phobos status`, `--json`, `--watch`, the dashboard, /metrics, a
person running `phobos repo list|info`); bars on a terminal (a pty); a check slice's log;
rsync's progress mixed with a drive copy's file listing; parallel pulls, one bar each."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from borgbox import BorgBox, initialized, wait_for
from remotehost import Lab
from test_pull import setup, write_random
from test_web import get, start_server

from conftest import phobos_env
from phobos.core import proc
from phobos.tools import rsync


class Feeder:
    """Writes random data into a FIFO, a chunk every ``pause`` seconds, until
    :meth:`finish`; Borg reads it as one file (``--read-special``)."""

    def __init__(self, fifo: Path, chunk: int = 256 << 10, pause: float = 0.1) -> None:
        self.fifo, self.chunk, self.pause = fifo, chunk, pause
        self.done = threading.Event()
        self.written = 0
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        try:
            with open(self.fifo, "wb") as pipe:  # blocks until Borg opens it
                while not self.done.is_set():
                    pipe.write(os.urandom(self.chunk))
                    pipe.flush()
                    self.written += self.chunk
                    time.sleep(self.pause)
        except BrokenPipeError:  # nobody read it (a test failed before Borg started)
            pass

    def finish(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)
        if self.thread.is_alive():  # still waiting for a reader: be one, briefly
            reader = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
            self.thread.join(timeout=10)
            os.close(reader)
        assert not self.thread.is_alive()


def slow_archive(sandbox: Any, repo_extra: str = "") -> BorgBox:
    """The ``nightly`` archive job of an initialized repository, reading ``feed/stream``
    (a FIFO) besides its tree."""
    box = initialized(sandbox)
    feed = box.root / "feed"
    feed.mkdir()
    os.mkfifo(feed / "stream")
    box.write(f"""\
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/src", "{feed}"]
        create_options = ["--read-special"]
        keep = {{ daily = 7 }}
        """, repo_extra)
    return box


def running_of(box: BorgBox, job: str = "nightly") -> dict[str, Any] | None:
    jobs = json.loads(box.ok("status", "--json").stdout)["jobs"]
    entry: dict[str, Any] | None = next(j for j in jobs if j["job"] == job)["running"]
    return entry


def wait_for_progress(box: BorgBox, job: str = "nightly") -> dict[str, Any]:
    found: dict[str, Any] = {}

    def reported() -> bool:
        entry = running_of(box, job)
        if entry is not None and (entry["progress"] or {}).get("bytes_done"):
            found.update(entry)
            return True
        return False

    wait_for(reported, timeout=90, what=f"{job} to report progress")
    return found


@pytest.fixture
def feeding(sandbox: Any) -> Iterator[tuple[BorgBox, Feeder]]:
    box = slow_archive(sandbox)
    feeder = Feeder(box.root / "feed" / "stream")
    try:
        yield box, feeder
    finally:
        feeder.finish()


def test_a_running_archive_is_seen_everywhere(each_borg: tuple[int, ...],
                                              feeding: tuple[BorgBox, Feeder]) -> None:
    box, feeder = feeding
    job = box.sandbox.start("run", "nightly")
    server = start_server(box.sandbox)
    waiting: subprocess.Popen[str] | None = None
    try:
        entry = wait_for_progress(box)
        assert entry["step"] == "create" and entry["phase"] == "working"
        assert entry["elapsed"] > 0 and entry["locked"] is not None
        assert [s["step"] for s in entry["steps"]] == ["create"]
        assert set(entry["progress"]) >= {"bytes_done", "bytes_total", "files_done"}
        run_id = entry["run"]
        text = box.ok("status").stdout
        assert re.search(rf"^nightly\s+{run_id}\s+\S+\s+create\s+\S", text, re.M), text

        # People: waiting politely, or told at once with --no-wait (JSON on stdout).
        refused = box.phobos("repo", "list", "main", "--no-wait", "--json")
        assert refused.returncode == 3
        error = json.loads(refused.stdout)["error"]
        assert error["exit_code"] == 3
        assert error["message"].startswith(f"repo main is in use by job nightly (run {run_id}, "
                                           "step create")
        assert "phobos: repo main is in use by job nightly" in refused.stderr
        waiting = box.sandbox.start("repo", "info", "main", "--json")

        # The dashboard and /metrics.
        page = get(server.url).body
        assert 'id="running"' in page and 'data-job="nightly"' in page
        assert re.search(r'<progress max="1"', page)
        assert '<meta http-equiv="refresh" content="5">' in page
        job_page = get(f"{server.url}/jobs/nightly").body
        assert 'id="running"' in job_page and f'data-run="{run_id}"' in job_page
        metrics = get(server.url + "/metrics").body
        done = re.search(r'^phobos_job_running_bytes_done\{job="nightly",kind="archive"\} '
                         r"(\d+)$", metrics, re.M)
        assert done is not None and int(done.group(1)) > 0
        assert re.search(r'^phobos_job_running_elapsed_seconds\{job="nightly"', metrics, re.M)

        feeder.finish()
        _, err = job.communicate(timeout=120)
        assert job.returncode == 0, err
        info_out, info_err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, info_err
        assert f"repo main is in use by job nightly (run {run_id}" in info_err
        assert "waiting for it" in info_err
        assert json.loads(info_out)["repo"]["name"] == "main"
    finally:
        server.stop()
        for process in (job, waiting):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
    assert running_of(box) is None
    assert list((box.sandbox.run_dir / "progress").iterdir()) == []
    log = box.log_text(run_id)
    assert "archive_progress" not in log and '{"' not in log
    assert re.search(r"archive nightly-\S+: 41 files", log)
    stats = box.last_run("nightly")["stats"]
    fed = 40 * 20_000 + feeder.written
    if each_borg >= (1, 4):
        assert stats["original_size"] == fed
    else:  # Borg 1.2 counts the archive's item metadata too (a few hundred bytes here)
        assert fed < stats["original_size"] < fed + 4096


@pytest.mark.usefixtures("each_borg")  # with Borg 1.4 and 1.2
def test_a_person_waits_at_most_the_repositorys_lock_wait(sandbox: Any) -> None:
    box = slow_archive(sandbox, repo_extra='lock_wait = "2s"')
    feeder = Feeder(box.root / "feed" / "stream")
    job = box.sandbox.start("run", "nightly")
    try:
        wait_for_progress(box)
        started = time.monotonic()
        waited = box.phobos("repo", "info", "main")
        assert time.monotonic() - started >= 2
        assert waited.returncode == 3
        assert "waiting for it" in waited.stderr
        assert "phobos: gave up after 2.0s ([repos.main] lock_wait): repo main is in use by " \
            "job nightly (run " in waited.stderr
    finally:
        feeder.finish()
        job.communicate(timeout=120)
    assert job.returncode == 0


@pytest.mark.usefixtures("each_borg")  # with Borg 1.4 and 1.2
def test_bars_on_a_terminal_and_no_progress_in_the_log(feeding: tuple[BorgBox, Feeder]
                                                        ) -> None:
    box, feeder = feeding
    primary, secondary = pty.openpty()
    job = subprocess.Popen(box.sandbox.argv("run", "nightly"), stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=secondary,
                           env={**phobos_env(), "COLUMNS": "120", "TERM": "xterm"})
    os.close(secondary)
    screen = b""
    try:
        deadline = time.monotonic() + 90
        while "━".encode() not in screen or b"create" not in screen:
            assert time.monotonic() < deadline, screen[-2000:]
            if select.select([primary], [], [], 0.2)[0]:
                screen += os.read(primary, 65536)
        feeder.finish()
        out, _ = job.communicate(timeout=120)
        while select.select([primary], [], [], 0.2)[0]:
            try:
                screen += os.read(primary, 65536)
            except OSError:  # the terminal's other end is closed
                break
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
        os.close(primary)
    assert job.returncode == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    assert "[nightly] step create:" in text and "[nightly] success after" in text
    assert re.search(r"create\s+━", text)  # the step's bar
    assert "nightly: success" in out.decode()
    run_id = box.last_run("nightly")["id"]
    assert "archive_progress" not in box.log_text(run_id)


@pytest.mark.usefixtures("each_borg")  # with Borg 1.4 and 1.2
def test_no_progress_runs_borg_without_it(sandbox: Any) -> None:
    box = initialized(sandbox)
    box.ok("run", "--no-progress", "nightly")
    run = box.last_run("nightly")
    steps = json.loads(box.ok("log", str(run["id"]), "--json").stdout)["steps"]
    assert all("--progress" not in s["argv"] and "--log-json" not in s["argv"] for s in steps)
    box.ok("run", "nightly")
    steps = json.loads(box.ok("log", str(box.last_run("nightly")["id"]), "--json")
                       .stdout)["steps"]
    assert {s["name"]: "--log-json" in s["argv"] for s in steps} == {
        "create": True, "prune": False, "compact": True}
    assert box.last_run("nightly")["stats"]["nfiles"] == run["stats"]["nfiles"] == 40


@pytest.mark.usefixtures("each_borg")  # with Borg 1.4 and 1.2
def test_a_check_slice_logs_borgs_words_not_its_json(sandbox: Any) -> None:
    box = initialized(sandbox)
    box.ok("run", "nightly")
    box.write(f"""\
        [jobs.nightly]
        kind = "archive"
        repo = "main"
        sources = ["{box.root}/src"]

        [jobs.slice]
        kind = "check"
        repo = "main"
        max_duration = "5s"
        """)
    box.ok("run", "slice")
    run = box.last_run("slice")
    log = box.log_text(run["id"])
    assert "Starting repository check" in log
    assert "progress_percent" not in log and '{"' not in log
    assert run["stats"]["segments"] > 0 and run["stats"]["coverage"] > 0


def test_status_watch_reprints_until_interrupted(sandbox: Any) -> None:
    box = initialized(sandbox)
    for args, check in ((("status", "--watch", "0.3"), _plain_frames),
                        (("status", "--watch", "0.3", "--json"), _json_frames)):
        watch = box.sandbox.start(*args)
        time.sleep(2.5)
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=30)
        assert watch.returncode == 0, err
        check(out)


def test_status_watch_on_a_terminal_redraws_in_place(sandbox: Any) -> None:
    box = initialized(sandbox)
    primary, secondary = pty.openpty()
    watch = subprocess.Popen(box.sandbox.argv("status", "--watch", "0.3"),
                             stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary,
                             env={**phobos_env(), "COLUMNS": "120", "TERM": "xterm"})
    os.close(secondary)
    screen = b""
    try:
        deadline = time.monotonic() + 30
        while screen.count(b"Ctrl-C to stop") < 3:
            assert time.monotonic() < deadline, screen[-2000:]
            if select.select([primary], [], [], 0.2)[0]:
                screen += os.read(primary, 65536)
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=30) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
        os.close(primary)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace"))
    assert "nightly" in text and "JOB" in text
    assert "\x1b[" in screen.decode(errors="replace")  # moved the cursor: redrawn in place


def _plain_frames(out: str) -> None:
    frames = [f for f in out.split("--- ") if f.strip()]
    assert len(frames) >= 2, out
    assert all("nightly" in f and "JOB" in f for f in frames)


def _json_frames(out: str) -> None:
    frames = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(frames) >= 2
    assert all(f["jobs"][0]["job"] == "nightly" and f["jobs"][0]["running"] is None
               for f in frames)


def test_rsync_progress_and_a_file_listing_share_stdout(tmp_path: Path) -> None:
    """The drive copy's case: --info=progress2 and -ii listing both on stdout."""
    source, plain, shown = tmp_path / "src", tmp_path / "plain", tmp_path / "shown"
    for index in range(300):
        write_random(source / f"d{index % 7}" / f"f{index:03d}", 1000 + index * 37)
    write_random(source / "big", 64 << 20)
    without = proc.run(rsync.mirror_argv(source, plain), capture=True)
    told: list[Any] = []
    result = proc.run(rsync.mirror_argv(source, shown, progress=True), capture=True,
                      reader=rsync.progress_reader(), on_progress=told.append)
    assert rsync.parse_listing(result.stdout) == rsync.parse_listing(without.stdout)
    assert len(rsync.parse_listing(result.stdout)) == 309  # 300 files, 7 dirs, big, "."
    assert rsync.copied_bytes(result.stdout) == rsync.copied_bytes(without.stdout)
    assert told and told[-1].bytes_done == sum(
        p.stat().st_size for p in source.rglob("*") if p.is_file())
    assert told[-1].fraction == 1.0 and told[-1].files_total == 309
    assert "%" not in result.stdout and "xfr#" not in result.stdout


@pytest.mark.root
def test_parallel_pulls_show_one_entry_per_host(tmp_path: Path) -> None:
    with Lab(tmp_path, 2) as lab:
        for host in lab.hosts:
            write_random(host.srv / "data" / "blob.bin", 8 << 20)
        setup(lab, *lab.hosts, tree=False, host_extra='bwlimit = "1m"\n',
              extra='[jobs.pull-all]\nkind = "pull"\nhosts = ["h1", "h2"]\n')
        pull = lab.start_phobos("run", "pull-all", "-q", "--json")
        seen: dict[str, Any] = {}

        def both_moving() -> bool:
            out = lab.phobos("status", "--json")
            entry = next(j for j in json.loads(out.stdout)["jobs"]
                         if j["job"] == "pull-all")["running"]
            steps = {s["label"]: s for s in (entry or {}).get("steps", [])}
            if set(steps) == {"h1", "h2"} and all(
                    (s["progress"] or {}).get("bytes_done") for s in steps.values()):
                seen.update(entry)
                return True
            return False

        wait_for(both_moving, timeout=60, what="two hosts reporting progress")
        out, err = pull.communicate(timeout=120)
        assert pull.returncode == 0, err
        history = json.loads(lab.phobos("history", "pull-all", "--json").stdout)["runs"]
        # --stats are still read: the totals of both hosts
        assert history[0]["stats"]["bytes_total"] == 2 * (8 << 20)
    assert seen["step"] in ("pull h1, pull h2", "pull h2, pull h1")
    combined = seen["progress"]
    assert combined["bytes_done"] == sum(s["progress"]["bytes_done"] for s in seen["steps"])
    assert 0 < combined["fraction"] <= 1 and combined["rate"] > 0
    result = json.loads(out)
    assert result["outcome"] == "success"
