"""Progress: the readers of Borg's --log-json and rsync's --info=progress2 lines (lines as
Borg 1.4.5, Borg 1.2.4 and rsync 3.5 printed them here), the CR splitting in proc, the
run's live state file (throttled, removed at the end, ignored once its process is gone),
the once-a-minute log line, and what `phobos status` makes of a running run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from phobos.core import proc, progress
from phobos.core.history import Run
from phobos.core.model import Outcome, format_size
from phobos.core.progress import ActiveStep, LiveRun, Progress, Reading, RunTracker
from phobos.schedule.plan import Typical
from phobos.schedule.running import describe, eta_text, expected_end, running_entry
from phobos.tools import borg_progress, rsync

# --- rsync --info=progress2 -------------------------------------------------------------------

RSYNC_LINES = [  # rsync 3.5.0: a redraw, then files ending ("xfr#"), list complete
    "         32,768   0%    0.00kB/s    0:00:00  ",
    "     52,428,800  44%  609.38MB/s    0:00:07 (xfr#1, to-chk=251/253)",
    "     83,886,080  71%  579.48MB/s    0:00:00 (xfr#2, to-chk=250/253)",
]


def test_rsync_redraw_gives_bytes_share_rate_and_time_left() -> None:
    clock = iter([100.0, 100.0]).__next__
    reading = rsync.progress_reader(clock)("stdout", "  1048576  10%  1.50MB/s    0:01:30  ")
    assert reading.text is None
    assert reading.progress == Progress(bytes_done=1048576, fraction=0.10,
                                        rate=1.5 * 1024 * 1024, eta=90.0)


def test_rsync_file_end_lines_keep_the_last_time_left_counting_down() -> None:
    times = iter([10.0, 14.0, 15.0])
    read = rsync.progress_reader(lambda: next(times))
    first = read("stdout", "     1,000   1%   10.00kB/s    0:00:20  ").progress
    second = read("stdout", RSYNC_LINES[1]).progress
    assert first is not None and first.eta == 20.0
    assert second is not None
    assert second.bytes_done == 52_428_800 and second.fraction == 0.44
    assert second.files_done == 2 and second.files_total == 253
    assert second.eta == 16.0  # 20 s said at t=10, now t=14: the time taken is ignored
    third = read("stdout", "  900,000,000  90%   1.00GB/s    0:00:01 (xfr#9, ir-chk=1000/1500)")
    assert third.progress is not None and third.progress.files_total is None  # list grows


def test_rsync_other_lines_are_kept_as_they_are() -> None:
    read = rsync.progress_reader()
    for line in ("Number of files: 253 (reg: 252, dir: 1)", ">f+++++++++|52428800|a",
                 "Total file size: 83,886,085 bytes", "", "created directory dst2"):
        assert read("stdout", line) == Reading(line)


def test_progress_option_only_when_asked() -> None:
    spec = rsync.Pull(login="root@h", rsh="ssh", sources=("/etc",), dest=Path("/h/luv"))
    assert rsync.PROGRESS_OPTION not in rsync.pull_argv(spec)
    with_progress = rsync.pull_argv(dataclasses.replace(spec, progress=True))
    assert with_progress.index(rsync.PROGRESS_OPTION) < with_progress.index("-e")
    mirror = rsync.mirror_argv(Path("/r"), Path("/d"), progress=True)
    assert rsync.PROGRESS_OPTION in mirror and mirror[-2:] == ("/r/", "/d/")
    assert rsync.PROGRESS_OPTION not in rsync.mirror_argv(Path("/r"), Path("/d"))


# --- Borg --progress --log-json ---------------------------------------------------------------

CREATE = [  # borg 1.4.5 create (1.2.4 printed the same keys)
    '{"original_size": 0, "compressed_size": 0, "deduplicated_size": 0, "nfiles": 0, '
    '"path": "src", "time": 1000.0, "type": "archive_progress", "finished": false}',
    '{"message": "Initializing cache transaction: Reading files", "operation": 1, "msgid": '
    '"cache.begin_transaction", "type": "progress_message", "finished": false, "time": 1000.1}',
    '{"operation": 1, "msgid": "cache.begin_transaction", "type": "progress_message", '
    '"finished": true, "time": 1000.2}',
    '{"original_size": 22699280, "compressed_size": 22699753, "deduplicated_size": 22699753, '
    '"nfiles": 0, "path": "src/a", "time": 1000.5, "type": "archive_progress", '
    '"finished": false}',
    '{"original_size": 65997976, "compressed_size": 65999395, "deduplicated_size": 30000000, '
    '"nfiles": 1, "path": "src/b", "time": 1001.5, "type": "archive_progress", '
    '"finished": false}',
    '{"time": 1001.6, "type": "archive_progress", "finished": true}',
]


def test_borg_create_progress_has_bytes_files_new_bytes_and_rate() -> None:
    read = borg_progress.reader()
    readings = [read("stderr", line) for line in CREATE]
    assert all(r.text is None for r in readings)  # nothing of it reaches the log
    phase = readings[1].progress
    assert phase is not None and phase.detail == "Initializing cache transaction: Reading files"
    done = readings[4].progress
    assert done == Progress(bytes_done=65997976, files_done=1, deduplicated_bytes=30000000,
                            rate=(65997976 - 0) / 1.5)
    assert readings[5].progress is None
    assert readings[2].progress is not None and readings[2].progress.detail is None


CHECK_SLICE = [  # borg 1.4.5 check --info --progress --log-json --max-duration
    '{"type": "log_message", "time": 5.0, "message": "Starting repository check", '
    '"levelname": "INFO", "name": "borg.repository"}',
    '{"message": "Checking segments 7.8%", "current": 10, "total": 116, "info": null, '
    '"operation": 1, "msgid": "repository.check", "type": "progress_percent", '
    '"finished": false, "time": 10.0}',
    '{"message": "Checking segments 16.4%", "current": 20, "total": 116, "info": null, '
    '"operation": 1, "msgid": "repository.check", "type": "progress_percent", '
    '"finished": false, "time": 20.0}',
    '{"operation": 1, "msgid": "repository.check", "type": "progress_percent", '
    '"finished": true, "time": 21.0}',
]


def test_borg_check_slice_reports_segments_and_the_time_left_of_its_box() -> None:
    now = iter([0.0, 5.0, 25.0, 26.0])
    read = borg_progress.reader(time_box=60.0, clock=lambda: next(now))
    first = read("stderr", CHECK_SLICE[0])
    assert first == Reading("Starting repository check")
    read("stderr", CHECK_SLICE[1])
    told = read("stderr", CHECK_SLICE[2]).progress
    assert told is not None
    assert (told.segments_done, told.segments_total) == (20, 116)
    assert told.fraction == pytest.approx(20 / 116)
    # One segment a second: 96 left, but only 35 s of the 60 s box are left.
    assert told.eta == pytest.approx(35.0)
    assert read("stderr", CHECK_SLICE[3]) == Reading(None)


def test_borg_other_percent_progress_is_a_share_with_its_phase() -> None:
    line = ('{"message": "Compacting segments  42%", "current": 6, "total": 12, "info": '
            'null, "operation": 1, "msgid": "repository.compact_segments", "type": '
            '"progress_percent", "finished": false, "time": 1.0}')
    told = borg_progress.reader()("stderr", line).progress
    assert told == Progress(fraction=0.5, detail="Compacting segments")


def test_borg_messages_become_the_text_borg_writes_without_log_json() -> None:
    read = borg_progress.reader()
    freed = ('{"type": "log_message", "time": 1.0, "message": "compaction freed about 431.20 '
             'MB repository space.", "levelname": "INFO", "name": "borg.repository"}')
    listed = '{"type": "file_status", "status": "A", "path": "src/new"}'
    assert read("stderr", freed) == Reading("compaction freed about 431.20 MB repository space.")
    assert read("stderr", listed) == Reading("A src/new")
    # Not JSON (argparse errors come before --log-json takes effect), or other JSON.
    for line in ("usage: borg [-h] ...", "{not json", '["a"]', '{"type": "unknown"}'):
        assert read("stderr", line) == Reading(line)


def test_borg_progress_options_follow_the_command() -> None:
    argv = ("borg", "create", "--lock-wait", "1", "--json", "--", "repo::a", "/src")
    assert borg_progress.with_progress(argv) == (
        "borg", "create", "--progress", "--log-json", "--lock-wait", "1", "--json", "--",
        "repo::a", "/src")


# --- proc: carriage returns ------------------------------------------------------------------


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _numbers(_stream: str, line: str) -> Reading:
    if line.startswith("P "):
        return Reading(None, Progress(bytes_done=int(line[2:])))
    return Reading(line)


def test_progress_lines_end_at_a_carriage_return_and_never_reach_the_log() -> None:
    # Redraws with CR, a line ended by CR LF, a redraw split across writes, then stats.
    code = ("import sys, time\n"
            "w = sys.stdout.write\n"
            "w('\\rP 1\\rP 2'); sys.stdout.flush(); time.sleep(0.2)\n"
            "w('0\\rP 3\\r\\nNumber of files: 3\\n\\nend'); sys.stdout.flush()\n")
    lines: list[tuple[str, str]] = []
    told: list[int | None] = []
    result = proc.run(_python(code), sink=lambda s, line: lines.append((s, line)),
                      reader=_numbers, on_progress=lambda p: told.append(p.bytes_done))
    assert told == [1, 20, 3]
    assert lines == [("stdout", "Number of files: 3"), ("stdout", ""), ("stdout", "end")]
    assert result.tail == ("Number of files: 3", "", "end")


def test_without_a_reader_lines_end_only_at_newlines() -> None:
    lines: list[str] = []
    proc.run(_python("print('a\\rb')"), sink=lambda _s, line: lines.append(line))
    assert lines == ["a\rb"]


def test_captured_output_keeps_the_listing_without_progress() -> None:
    code = "import sys; sys.stdout.write('>f|1|a\\n\\rP 5\\rP 9\\n>f|2|b\\n')"
    result = proc.run(_python(code), capture=True, reader=_numbers)
    assert result.stdout == ">f|1|a\n>f|2|b"


def test_a_broken_reader_keeps_the_line_and_the_step_goes_on() -> None:
    def broken(_stream: str, line: str) -> Reading:
        raise ValueError("bug")

    lines: list[str] = []
    result = proc.run(_python("print('kept')"), reader=broken,
                      sink=lambda _s, line: lines.append(line))
    assert result.outcome is Outcome.SUCCESS and lines == ["kept"]


# --- the run's live state -----------------------------------------------------------------


class Shown:
    def __init__(self) -> None:
        self.events: list[tuple[int, ActiveStep | None]] = []

    def show(self, key: int, step: ActiveStep | None) -> None:
        self.events.append((key, step))


def _state(directory: Path, run_id: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / f"{run_id}.json").read_text())
    return data


def test_tracker_writes_the_state_file_throttled_and_removes_it(tmp_path: Path) -> None:
    shown = Shown()
    tracker = RunTracker(tmp_path, run_id=7, job="nightly", listener=shown)
    tracker.step_started(1, "create")
    state = _state(tmp_path, 7)
    assert state["pid"] == os.getpid() and state["job"] == "nightly"
    assert [s["step"] for s in state["steps"]] == ["create"]
    assert state["steps"][0]["progress"] is None
    tracker.update(1, Progress(bytes_done=10))
    first = _state(tmp_path, 7)["steps"][0]["progress"]
    tracker.update(1, Progress(bytes_done=20))  # within WRITE_SECONDS: not written yet
    assert _state(tmp_path, 7)["steps"][0]["progress"] == first
    time.sleep(progress.WRITE_SECONDS + 0.05)
    tracker.update(1, Progress(bytes_done=30))
    assert _state(tmp_path, 7)["steps"][0]["progress"]["bytes_done"] == 30
    live = progress.read_live(tmp_path)[7]
    assert live.step == "create" and live.progress == Progress(bytes_done=30)
    tracker.step_finished(1)
    assert _state(tmp_path, 7)["steps"] == []
    assert [(key, step is None) for key, step in shown.events] == [
        (1, False), (1, False), (1, False), (1, False), (1, True)]
    tracker.close()
    assert not (tmp_path / "7.json").exists()


def test_state_of_a_dead_process_is_ignored_and_swept(tmp_path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = {"version": 1, "run": 3, "job": "x", "pid": int(child.stdout), "pid_start": 1,
            "updated": 0.0, "steps": []}
    (tmp_path / "3.json").write_text(json.dumps(dead))
    (tmp_path / "4.json").write_text("{garbage")
    assert progress.read_live(tmp_path) == {}
    RunTracker(tmp_path, run_id=5, job="y")  # a new run sweeps what dead ones left
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_unwritable_run_directory_does_not_stop_the_run(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    tracker = RunTracker(blocker / "progress", run_id=1, job="j")
    tracker.step_started(1, "create")
    tracker.update(1, Progress(bytes_done=1))
    tracker.close()
    assert tracker.steps == []


def test_one_progress_line_a_minute_goes_to_the_log() -> None:
    logged: list[str] = []
    now = [1000.0]
    tracker = RunTracker(None, run_id=1, job="j", log=logged.append, clock=lambda: now[0])
    tracker.step_started(1, "pull luv", "luv")
    for second in range(1, 130):
        now[0] = 1000.0 + second
        tracker.update(1, Progress(bytes_done=second * 1024 * 1024, fraction=second / 200))
    assert logged == ["progress after 1m00s: pull luv: 60.0 MiB, 30%",
                      "progress after 2m00s: pull luv: 120.0 MiB, 60%"]


def test_parallel_steps_are_added_up() -> None:
    combined = progress.combined([
        Progress(bytes_done=10, bytes_total=100, rate=1.0, fraction=0.1, eta=90.0),
        Progress(bytes_done=30, rate=2.0, fraction=0.5, eta=10.0)])
    assert combined == Progress(bytes_done=40, fraction=0.3, rate=3.0, eta=90.0)


def test_describe_in_words() -> None:
    told = Progress(bytes_done=3 * 1024 ** 3, deduplicated_bytes=300 * 1024 ** 2,
                    files_done=1234, rate=45 * 1024 ** 2, detail="Saving files cache")
    assert told.describe() == ("3.0 GiB (300.0 MiB new), 1234 files, 45.0 MiB/s, "
                               "Saving files cache")
    assert Progress(segments_done=40, segments_total=116, fraction=40 / 116).describe() == \
        "segment 40 of 116, 34%"
    assert format_size(1536) == "1.5 KiB" and format_size(None) == "?"


# --- status: what runs now ------------------------------------------------------------------


def _run(locked: float | None) -> Run:
    return Run(id=42, job="nightly", kind="archive", trigger="timer", started=1000.0,
               locked=locked, ended=None, outcome=Outcome.RUNNING, exit_code=None,
               message=None, stats={})


def _live(eta: float | None) -> LiveRun:
    step = ActiveStep(step="create", label="", started=1001.0, updated=1100.0,
                      progress=Progress(bytes_done=5, eta=eta))
    return LiveRun(run=42, job="nightly", pid=1, updated=1100.0, steps=(step,))


def test_expected_end_prefers_the_programs_estimate_then_history() -> None:
    typical = Typical(median=600.0, p90=700.0, source="history", samples=5)
    assert expected_end(_run(1001.0), _live(30.0), typical, 1100.0) == (1130.0, "tool")
    assert expected_end(_run(1001.0), _live(None), typical, 1100.0) == (1601.0, "history")
    assert expected_end(_run(1001.0), _live(None), typical, 1700.0) == (None, None)  # overran
    assert expected_end(_run(None), None, typical, 1100.0) == (None, None)  # waiting
    unknown = Typical(median=None, p90=None, source="unknown")
    assert expected_end(_run(1001.0), None, unknown, 1100.0) == (None, None)


def test_running_entry_json_and_words() -> None:
    typical = Typical(median=600.0, p90=700.0, source="history", samples=5)
    entry = running_entry(_run(1001.0), _live(None), typical, 1100.0)
    assert entry == {
        "run": 42, "started": 1000.0, "locked": 1001.0, "phase": "working", "step": "create",
        "steps": [{"step": "create", "label": "", "started": 1001.0, "updated": 1100.0,
                   "progress": {"bytes_done": 5, "bytes_total": None, "files_done": None}}],
        "elapsed": 100.0, "progress": {"bytes_done": 5, "bytes_total": None,
                                       "files_done": None},
        "eta": 1601.0, "eta_source": "history", "typical": 600.0}
    text = describe("nightly", entry, 1100.0)
    assert text.startswith("job nightly (run 42, step create, 1m40s so far: 5 B), "
                           "expected to finish at ")
    assert text.endswith(" (in 8m21s)")
    waiting = running_entry(_run(None), None, typical, 1100.0)
    assert waiting["phase"] == "waiting for locks" and waiting["step"] is None
    assert eta_text(waiting, 1100.0) == "-"
    late = running_entry(_run(1001.0), None, typical, 1700.0)
    assert eta_text(late, 1700.0) == "longer than usual (10m00s)"


# --- planning with progress -------------------------------------------------------------------


def _config(jobs: dict[str, Any]) -> Any:
    from phobos.config.load import parse

    raw = {"storage": {"root": "/backup", "holding": "/backup/holding"},
           "repos": {"main": {"path": "/backup/borg", "passcommand": "cat /p"}},
           "hosts": {"luv": {"address": "luv.example.org", "paths": ["/etc"]}},
           "jobs": jobs}
    return parse(raw, Path("/etc/phobos/phobos.toml"))


def _repo(cfg: Any) -> Any:
    from phobos.repos.repo import Repo
    from phobos.tools import borg as b

    borg = b.Borg(path="/usr/bin/borg", version=(1, 2, 4))
    return Repo(name="main", config=cfg.repos["main"], borg=borg,
                access=b.access(borg, "/backup/borg", lock_wait=60))


def test_archive_and_check_steps_report_progress_when_asked() -> None:
    from phobos.jobs import archive, check

    cfg = _config({"n": {"kind": "archive", "repo": "main", "sources": ["/srv"],
                         "keep": {"daily": 7}},
                   "c": {"kind": "check", "repo": "main", "max_duration": "30m"}})
    repo = _repo(cfg)
    plain = archive.plan(cfg.jobs["n"], "n", repo)
    assert all(s.progress is None and "--log-json" not in s.argv for s in plain)
    create, prune, compact = archive.plan(cfg.jobs["n"], "n", repo, progress=True)
    assert create.argv[1:4] == ("create", "--progress", "--log-json")
    assert compact.argv[1:4] == ("compact", "--progress", "--log-json")
    assert prune.progress is None and "--progress" not in prune.argv
    assert create.progress is not None and compact.progress is not None
    assert create.capture  # --json statistics still on stdout
    step = check.plan(cfg.jobs["c"], repo, max_duration_arg=1700, glob=None, progress=True)
    assert step.argv[1:4] == ("check", "--progress", "--log-json")
    assert step.progress is not None
    reader = step.progress()
    assert reader is not step.progress()  # a fresh reader for each run of the step
    told = reader("stderr", CHECK_SLICE[1]).progress
    assert told is not None and told.eta is not None and 1699 <= told.eta <= 1700  # its box


def test_pull_and_drive_copy_report_progress_when_asked() -> None:
    from phobos.jobs.pull import plan_host

    cfg = _config({"p": {"kind": "pull", "host": "luv"}})
    features = rsync.Features(acls=True, xattrs=True)
    assert plan_host(cfg, "luv", features).pull.progress is None
    plan = plan_host(cfg, "luv", features, progress=True)
    assert rsync.PROGRESS_OPTION in plan.pull.argv and plan.pull.progress is not None
    assert plan.prune.progress is None and rsync.PROGRESS_OPTION not in plan.prune.argv
