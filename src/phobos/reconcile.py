"""Cleaning up after runs whose phobos process died (SIGKILL, the OOM killer, power loss).

Every phobos start that touches state calls :func:`reconcile`: ``phobos run``, ``status``,
``history``, ``log``, ``schedule``, the hourly ``phobos overdue --notify`` (its timer or
the daemon) and systemd's failure hook. When nothing is wrong it costs two indexed
queries and reading the LED's small state file.

For each run whose alert is due and whose process is dead (:meth:`~phobos.core.history.
History.recover` marks runs of dead processes interrupted and their alert due; a run that
failed and was killed before its runner had told anyone is due as well), exactly one
phobos process, once, claims the alert
(:meth:`~phobos.core.history.History.claim_alert`) and then

1. releases the drives the run's job uses that are still mounted or unlocked in the
   backup namespace and that no live run holds (unmount, close the LUKS mapping);
2. breaks Borg's locks in the job's repositories when every holder is a dead process on
   this host (phobos gives every Borg its ``BORG_HOST_ID``, so they are recognised);
3. tells the notifiers: the LED latches red and stops showing the run as working; a
   failure message goes out, also from inside a systemd unit whose own failures are left
   to the OnFailure= hook (the dead run may have had no unit that failed, as after a
   power cut; the hook in turn sends nothing more for a run claimed here).

Independently, the LED is refreshed when it still shows a run whose process is gone.
Nothing here raises for a cleanup that fails: it is said, and the message tells.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from phobos.config.model import Config
from phobos.core.history import DISAPPEARED, History, Run, process_start_ticks

Say = Callable[[str], None]
LOG_TAIL_LINES = 40


def reconcile(config: Config, history: History, say: Say) -> list[int]:
    """Mark dead runs, clean up after them and tell about each once; returns the ids of
    the runs this call took care of."""
    history.recover()
    handled = []
    for run in history.due_alerts():
        if not history.claim_alert(run.id):
            continue  # another phobos took it a moment ago
        done = cleanup(config, run)
        tell(config, history, run, done, say)
        handled.append(run.id)
    if not handled and _led_shows_dead_runs(config.paths.state / "led.json"):
        _refresh_led(config, say)
    history.flush()
    return handled


def cleanup(config: Config, run: Run) -> list[str]:
    """Release what the dead ``run`` may have left: drives, Borg locks. Returns what was
    done (or could not be), one phrase each."""
    from phobos.core import locks

    job = config.jobs.get(run.job)
    if job is None:  # removed from the config since
        return []
    resources = job.resources(config)
    drives = sorted({r.target for r in resources if r.kind == locks.DRIVE
                     and r.target in config.drives})
    repos = sorted({r.target for r in resources if r.kind == locks.REPO
                    and r.target in config.repos})
    done = release_drives(config, drives) if drives else []
    for name in repos:
        done += break_stale_borg_locks(config, name)
    return done


def release_drives(config: Config, names: list[str]) -> list[str]:
    """Unmount and lock each named drive left mounted or unlocked in the backup namespace,
    unless a live run holds it."""
    from phobos import namespace
    from phobos.errors import PhobosError

    ns = namespace.of(config)
    if not namespace.exists(ns):
        return []  # no namespace: nothing can be mounted in it
    try:
        if namespace.is_inside(ns):
            return _release_inside(config, names)
        with namespace.visiting(ns):
            return _release_inside(config, names)
    except PhobosError as exc:
        return [f"could not look inside the backup namespace ({exc.message}): run "
                f"`phobos drive release {names[0]}`"]


def _release_inside(config: Config, names: list[str]) -> list[str]:
    from phobos.core.locks import LockSet
    from phobos.core.model import BusyPolicy
    from phobos.core.proc import direct_runner
    from phobos.drives.attach import release
    from phobos.drives.identity import get
    from phobos.errors import Busy, PhobosError

    done = []
    for name in names:
        drive = get(config, name)
        held = LockSet(config.paths.run / "locks", "phobos (cleanup after a dead run)", 0)
        try:
            held.acquire([drive.resource], BusyPolicy.FAIL, 0.0)
        except Busy:
            continue  # a live run uses the drive now: it is that run's
        try:
            done += [f"drive {name}: {what}" for what in release(drive, direct_runner(),
                                                                  lambda _line: None)]
        except PhobosError as exc:
            done.append(f"drive {name} could not be released ({exc.message}): run "
                        f"`phobos drive release {name}`")
        finally:
            held.release()
    return done


def break_stale_borg_locks(config: Config, name: str) -> list[str]:
    """``borg break-lock`` for repository ``name`` when every holder of its repository or
    cache lock is a dead process on this host; nothing otherwise (nor for a repository on
    a server)."""
    from phobos.core.proc import direct_runner
    from phobos.errors import PhobosError
    from phobos.repos.borg_locks import break_stale_locks
    from phobos.repos.repo import Repo
    from phobos.tools import borg_repository

    repo_config = config.repos[name]
    if repo_config.path is None:
        return []  # on a server: its locks are the server's (Borg there breaks its own)
    places = [repo_config.path, borg_repository.cache_dir(repo_config.path, repo_config.base_dir)]
    if not any(borg_repository.lock_holders(place) for place in places if place):
        return []  # the common case: no Borg started to find out
    try:
        return break_stale_locks(Repo.open(config, name), direct_runner(announce=False))
    except PhobosError as exc:  # Borg missing, the passphrase file unreadable...
        return [f"Borg's lock in {repo_config.path} was not looked at: {exc.message}"]


def tell(config: Config, history: History, run: Run, done: list[str], say: Say) -> None:
    """The dead run's alert: LED red, failure message; what was done goes into its log."""
    from phobos.core.model import Outcome
    from phobos.notify.base import EventKind, RunEvent, dispatch
    from phobos.notify.setup import build_notifiers

    said = run.message or ("" if run.outcome is not Outcome.INTERRUPTED else DISAPPEARED)
    if run.message != DISAPPEARED:  # it ended, but nobody was told then
        said += ("; " if said else "") + ("not told when it ended (its message could not "
                                          "be sent, or its process died first)")
    message = said + (f"; cleaned up after it: {'; '.join(done)}" if done else "")
    lines = [line.line for line in history.log_lines(run.id)][-LOG_TAIL_LINES:]
    # A run due for an alert though it did not fail had trouble with its history.
    trouble = None if run.outcome in (Outcome.FAILED, Outcome.INTERRUPTED) else (
        "its history had a problem it could not tell about: see `phobos doctor`")
    event = RunEvent(kind=EventKind.FINISHED, job=run.job, job_kind=run.kind, run_id=run.id,
                     trigger=run.trigger, outcome=run.outcome, message=message,
                     duration=run.duration, log_tail=tuple(lines), trouble=trouble)
    problems: list[str] = []
    dispatch(build_notifiers(config, defer=False), event, warn=problems.append)
    for line in (f"after its process died: {message}", *problems):
        history.log(run.id, "phobos", line)
    told = f"; notifier trouble: {'; '.join(problems)}" if problems else ""
    say(f"run {run.id} of {run.job}: {message}{told}")


def _led_shows_dead_runs(path: Path) -> bool:
    """Whether the LED's state still counts a run whose process is gone (read without
    the LED package: this runs on every start)."""
    try:
        active = json.loads(path.read_bytes()).get("active", [])
        return any(process_start_ticks(int(run["pid"])) != run["pid_start"]
                   for run in active)
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return False  # no state, or one the tracker itself will judge


def _refresh_led(config: Config, say: Say) -> None:
    from phobos.errors import PhobosError
    from phobos.notify.setup import led_notifier

    try:
        led_notifier(config).tracker.refresh()
    except PhobosError as exc:
        say(f"warning: the LED could not be refreshed: {exc}")
