"""``GET /metrics``: the Prometheus text exposition format (version 0.0.4).

Per job: last run, last success, last duration, last outcome (one series per possible
outcome, 1 for the current one), overdue, next run, running; for a run in progress its
elapsed time, bytes and files done (and the totals and share where known) and expected
end. Per drive: last sync, age,
overdue, due next. Per repository: check coverage and the last full check pass. The
LED colour, one series per state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from phobos.config.model import Config
from phobos.core.history import History
from phobos.core.model import LedState, Outcome

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Family:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self.samples: list[tuple[dict[str, str], float]] = []

    def add(self, labels: dict[str, str], value: float | None) -> None:
        if value is not None:
            self.samples.append((labels, value))

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, value in self.samples:
            yield f"{self.name}{_labels(labels)} {_number(value)}"


def render(config: Config, history: History, now: datetime) -> str:
    from phobos.web import views

    overview = views.overview(config, history, now)
    families = _job_families(history, overview.entries)
    families += _running_families(overview.entries)
    families += _drive_families(overview.drives)
    families += _repo_families(overview.repos)
    led = _Family("phobos_led_state", "1 for the colour the LED shows now")
    for state in LedState:
        led.add({"state": str(state)}, 1 if overview.led.state == state else 0)
    families.append(led)
    return "".join(line + "\n" for family in families for line in family.render())


def _job_families(history: History, entries: list[dict[str, Any]]) -> list[_Family]:
    success = _Family("phobos_job_last_success_timestamp_seconds",
                      "End of the job's last successful run (success or warning)")
    started = _Family("phobos_job_last_run_timestamp_seconds", "Start of the job's last run")
    duration = _Family("phobos_job_last_duration_seconds", "Duration of the job's last "
                       "finished run, waiting for locks included")
    outcome = _Family("phobos_job_last_outcome", "1 for the outcome of the job's last run")
    overdue = _Family("phobos_job_overdue", "1 if the job missed its scheduled slot")
    next_run = _Family("phobos_job_next_run_timestamp_seconds", "Next scheduled start")
    running = _Family("phobos_job_running", "1 while a run of the job is in progress")
    successes = history.last_success_per_job()
    for entry in entries:
        job = {"job": entry["job"], "kind": entry["kind"]}
        last = entry["last"]
        ok = successes.get(entry["job"])
        success.add(job, None if ok is None else (ok.ended or ok.started))
        if last is not None:
            started.add(job, last["started"])
            duration.add(job, last["duration"])
            for value in Outcome:
                outcome.add({**job, "outcome": str(value)},
                            1 if last["outcome"] == str(value) else 0)
        overdue.add(job, 1 if entry["overdue"] else 0)
        next_run.add(job, entry["next_run"])
        running.add(job, 1 if entry.get("running") is not None else 0)
    return [success, started, duration, outcome, overdue, next_run, running]


_RUNNING_FAMILIES = (
    ("elapsed", "phobos_job_running_elapsed_seconds", "Seconds since the run in progress "
     "started (waiting for locks included)"),
    ("bytes_done", "phobos_job_running_bytes_done", "Bytes the run in progress has read or "
     "transferred so far, as its program reports"),
    ("bytes_total", "phobos_job_running_bytes_total", "Bytes the run in progress will "
     "handle in all, where its program knows"),
    ("files_done", "phobos_job_running_files_done", "Files the run in progress has handled "
     "so far, as its program reports"),
    ("share", "phobos_job_running_progress_ratio", "Share of the work the run in progress "
     "has done, where its program says"),
    ("eta", "phobos_job_running_expected_end_timestamp_seconds", "When the run in progress "
     "should end (its program's estimate, or the job's typical duration)"),
)


def _running_families(entries: list[dict[str, Any]]) -> list[_Family]:
    from phobos.core.progress import Progress

    families = {key: _Family(name, text) for key, name, text in _RUNNING_FAMILIES}
    for entry in entries:
        running = entry.get("running")
        if running is None:
            continue
        job = {"job": entry["job"], "kind": entry["kind"]}
        told = Progress.from_json(running["progress"] or {})
        values = {"elapsed": running["elapsed"], "bytes_done": told.bytes_done,
                  "bytes_total": told.bytes_total, "files_done": told.files_done,
                  "share": told.share, "eta": running["eta"]}
        for key, family in families.items():
            family.add(job, values[key])
    return list(families.values())


def _drive_families(drives: list[Any]) -> list[_Family]:
    synced = _Family("phobos_drive_last_sync_timestamp_seconds", "Last verified copy on "
                     "the drive")
    age = _Family("phobos_drive_age_seconds", "Age of the copy on the drive (absent if "
                  "never synced)")
    max_age = _Family("phobos_drive_max_age_seconds", "The drive's configured max_age")
    overdue = _Family("phobos_drive_overdue", "1 if the drive's copy is older than max_age "
                      "or it was never synced")
    due = _Family("phobos_drive_due_next", "1 for the drive of its rotation set to plug in "
                  "next")
    for drive in drives:
        labels = {"drive": drive.name}
        synced.add(labels, drive.last_sync)
        age.add(labels, drive.age)
        max_age.add(labels, drive.max_age)
        overdue.add(labels, 1 if drive.overdue else 0)
        due.add(labels, 1 if drive.due_next else 0)
    return [synced, age, max_age, overdue, due]


def _repo_families(repos: list[dict[str, Any]]) -> list[_Family]:
    coverage = _Family("phobos_repo_check_coverage_ratio", "Share of the repository's "
                       "segments the current check pass has covered")
    full = _Family("phobos_repo_last_full_check_timestamp_seconds", "When a check last "
                   "covered the whole repository")
    for repo in repos:
        labels = {"repo": repo["name"]}
        check = repo.get("last_check") or {}
        coverage.add(labels, check.get("coverage", repo.get("pass_coverage")))
        full.add(labels, check.get("last_full_pass"))
    return [coverage, full]
