"""What runs now: each job's running run with its step, progress and expected end.

From the history (runs recorded as running whose process is alive) and the live state
files the runs write (:mod:`phobos.core.progress`); nothing is started or written. The
expected end is the program's own estimate when it gives one (rsync's time left, what
is left of a check slice), otherwise the start of the work plus the job's typical
duration (:func:`~phobos.schedule.plan.typical_duration`). ``phobos status``, the
dashboard, ``/metrics`` and a person waiting for a repository (``phobos repo list``)
all read it here.
"""

from __future__ import annotations

import time
from typing import Any

from phobos.config.model import Config
from phobos.core.history import History, Run
from phobos.core.locks import Holder
from phobos.core.model import format_duration
from phobos.core.progress import LiveRun, Progress, read_live, state_directory
from phobos.schedule.plan import Typical, typical_duration

WAITING = "waiting for locks"
WORKING = "working"


def running_entries(config: Config, history: History, now: float) -> dict[str, dict[str, Any]]:
    """Job name -> its ``running`` entry (see :func:`running_entry`), for jobs with a run
    in progress. When a job has several (one working, one waiting behind it), the one
    holding its locks is shown."""
    chosen: dict[str, Run] = {}
    for run, alive in history.running():
        if not alive or run.job not in config.jobs:
            continue
        held = chosen.get(run.job)
        if held is None or (held.locked is None and run.locked is not None):
            chosen[run.job] = run
    if not chosen:
        return {}
    live = read_live(state_directory(config.paths.run))
    return {name: running_entry(run, live.get(run.id),
                                typical_duration(history, name, config.jobs[name]), now)
            for name, run in sorted(chosen.items())}


def running_entry(run: Run, live: LiveRun | None, typical: Typical,
                  now: float) -> dict[str, Any]:
    """The JSON of one running run (``status --json``'s ``running``): ``run``,
    ``started``, ``locked`` (None while waiting for locks), ``phase``, ``step`` (None
    before the first step; names joined by ", " for parallel steps), ``steps`` (each
    with its ``label`` and ``progress``), ``elapsed`` (seconds since the run started),
    ``progress`` (None until a program reports any), ``eta`` (a timestamp or None),
    ``eta_source`` (``tool``, ``history``, ``estimate`` or None) and ``typical`` (the
    job's median duration, None if unknown)."""
    progress = live.progress if live is not None else None
    eta, source = expected_end(run, live, typical, now)
    return {"run": run.id, "started": run.started, "locked": run.locked,
            "phase": WAITING if run.locked is None else WORKING,
            "step": live.step if live is not None else None,
            "steps": [s.as_json() for s in live.steps] if live is not None else [],
            "elapsed": round(max(0.0, now - run.started), 3),
            "progress": None if progress is None else progress.as_json(),
            "eta": eta, "eta_source": source, "typical": typical.median}


def expected_end(run: Run, live: LiveRun | None, typical: Typical,
                 now: float) -> tuple[float | None, str | None]:
    """(when the run should end, by what): the program's own estimate, else the start
    of the work plus the typical duration; None while waiting for locks, without
    history, or once the typical duration has passed."""
    told = live.eta if live is not None else None
    if told is not None:
        return told, "tool"
    if run.locked is None or typical.median is None:
        return None, None
    end = run.locked + typical.median
    return (end, typical.source) if end > now else (None, None)


# --- words ------------------------------------------------------------------------------------


def eta_text(entry: dict[str, Any], now: float) -> str:
    """``03:14 (in 3m05s)``; ``longer than usual (5m00s)``; ``-`` when unknown."""
    if entry["eta"] is not None:
        at = time.strftime("%H:%M", time.localtime(entry["eta"]))
        return f"{at} (in {format_duration(max(0.0, entry['eta'] - now))})"
    if entry["phase"] == WORKING and entry["typical"] is not None:
        return f"longer than usual ({format_duration(entry['typical'])})"
    return "-"


def progress_text(entry: dict[str, Any]) -> str:
    """The progress in words (``-`` when none has been reported)."""
    if entry["phase"] == WAITING:
        return WAITING
    if entry["progress"] is None:
        return "-"
    return Progress.from_json(entry["progress"]).describe() or "-"


def describe(name: str, entry: dict[str, Any], now: float) -> str:
    """One sentence: ``job nightly (run 42, step create, 4m12s so far: 1.2 GiB, ...),
    expected to finish at 03:14 (in 3m05s)``."""
    facts = [f"run {entry['run']}"]
    if entry["step"]:
        facts.append(f"step {entry['step']}")
    facts.append(f"{format_duration(entry['elapsed'])} so far")
    told = progress_text(entry)
    text = f"job {name} ({', '.join(facts)}{': ' + told if told != '-' else ''})"
    eta = eta_text(entry, now)
    if entry["eta"] is not None:
        return f"{text}, expected to finish at {eta}"
    if eta != "-":
        return f"{text}, taking {eta}"
    return f"{text}, with no expected end yet"


def describe_holder(config: Config, history: History, holder: Holder, now: float) -> str:
    """Who holds a lock, for a person waiting for it: the job's run with its progress and
    expected end, or the other phobos command."""
    if holder.job.startswith("cli: ") or holder.job not in config.jobs:
        return f"another phobos command ({holder.job.removeprefix('cli: ')}, pid {holder.pid})"
    entry = running_entries(config, history, now).get(holder.job)
    if entry is None or entry["run"] != holder.run_id:
        return holder.describe()
    return describe(holder.job, entry, now)
