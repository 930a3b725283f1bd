"""Injected faults against real phobos runs, each followed by the invariants.

More than a hundred faults per run, across kinds: SIGKILL and SIGTERM at random moments
inside pull, archive, check and drive-sync; SIGTERM at random moments of a run waiting
for a lock; Ctrl-C at the run's own terminal; the remote host stopping mid-pull; the
drive's filesystem vanishing (lazily unmounted) and filling up mid-sync; the repository's
and the holding area's filesystem full; each kind of damage to the history database
(truncated, garbage header, immutable file, full and read-only state filesystem); a storm
of 50 conflicting triggers at once.

After each fault (and, for SIGKILL, one phobos start that touches state, as the hourly
overdue timer would be): ``borg check`` of the repository passes, no phobos lock is held
and no Borg lock left, no drive is mounted (outside or inside the backup namespace), no
phobos/Borg/rsync process is left, the run is recorded (a history row, or a line in
phobos's own log; with the history damaged, ``phobos status`` said so first), the
expected number of alerts went out (mails at the SMTP sink; the LED's file driver red
exactly when a mail went out), and the next normal run succeeds without anyone cleaning
up (for the drive, ``borg check`` of its copy then passes too).
A fault ends as the world would end it (the host's sshd comes back, the filler file is
deleted, the filesystem is writable again): phobos's own state is never touched by hand.

Moments come from a seeded RNG: the seed is printed in the summary table; set
``PHOBOS_FAULT_SEED`` to replay a run. ``PHOBOS_FAULT_WORKERS`` rigs (default 6), each a
complete installation of its own, take the faults from one queue side by side.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from faultrig import Rig, fill, rigs, sh, side_by_side, stop_cleanly
from invariants import Check, drive_copy_check, invariants

from suite_summary import add_section

pytestmark = pytest.mark.root

SEED = int(os.environ.get("PHOBOS_FAULT_SEED") or random.SystemRandom().randrange(1 << 31))
WORKERS = max(1, int(os.environ.get("PHOBOS_FAULT_WORKERS", "6")))
FAILED_OUTCOMES = ("failed", "interrupted")


@dataclass
class Result:
    kind: str
    number: int
    moment: float
    checks: dict[str, Check] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0
    cpu: float = 0.0
    landed: bool = True  # False: the run had ended when the moment came (nothing injected)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks.values())

    def failures(self) -> str:
        bad = [f"{name}: {check.detail or 'failed'}" for name, check in self.checks.items()
               if not check.ok]
        return f"{self.kind} #{self.number} (moment {self.moment:.3f}): " + " | ".join(bad)


RESULTS: list[Result] = []
TIMES: dict[str, float] = {}
Fault = Callable[[Rig, Result], None]
KINDS: dict[str, tuple[int, Fault]] = {}


def fault(kind: str, count: int) -> Callable[[Fault], Fault]:
    def register(function: Fault) -> Fault:
        KINDS[kind] = (count, function)
        return function

    return register


# --- the table -------------------------------------------------------------------------------


INVARIANTS = ("recorded", "status says", "no process left", "no phobos lock", "no Borg lock",
              "drive released", "borg check", "alerts", "next run", "drive copy")


def table() -> list[str]:
    """Faults x invariants (held/checked per kind), then the totals and what failed:
    printed at the end of the session (in CI's output too); nothing when no fault ran."""
    if not RESULTS:
        return []
    head = ["fault", "n", "landed", *INVARIANTS, "s/fault", "cpu"]
    width = max(len(r.kind) for r in RESULTS)
    lines = ["  ".join(f"{h:<{width}}" if i == 0 else h for i, h in enumerate(head))]
    for kind in dict.fromkeys(r.kind for r in RESULTS):
        mine = [r for r in RESULTS if r.kind == kind]
        cells = []
        for name in INVARIANTS:
            seen = [r.checks[name] for r in mine if name in r.checks]
            held = sum(1 for check in seen if check.ok)
            cells.append("-" if not seen else f"{held}/{len(seen)}")
        seconds = sum(r.seconds for r in mine) / len(mine)
        cpu = sum(r.cpu for r in mine) / len(mine)
        landed = sum(1 for r in mine if r.landed)
        lines.append("  ".join([f"{kind:<{width}}", f"{len(mine):>2}", f"{landed:^6}",
                                *(f"{c:^{len(n)}}" for c, n in zip(cells, INVARIANTS,
                                                                  strict=True)),
                                f"{seconds:5.1f}", f"{cpu:4.1f}"]))
    total = len(RESULTS)
    broken = [r for r in RESULTS if not r.ok]
    me, children = (resource.getrusage(who) for who in
                    (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    landed = sum(1 for r in RESULTS if r.landed)
    lines.append(f"{total} faults injected ({landed} landed while the run was still going), "
                 f"{total - len(broken)} with every invariant held; "
                 f"{WORKERS} rigs built in {TIMES.get('rigs built', 0):.0f} s, faults took "
                 f"{TIMES.get('faults', 0):.0f} s; CPU: pytest "
                 f"{me.ru_utime + me.ru_stime:.0f} s, the processes it started "
                 f"{children.ru_utime + children.ru_stime:.0f} s")
    lines += ["  FAILED " + result.failures() for result in broken]
    return lines


add_section(f"faults x invariants (seed {SEED}, PHOBOS_FAULT_SEED={SEED} replays it)", table)


# --- the common ending -----------------------------------------------------------------------


def settle(rig: Rig, result: Result, *, job: str, mails_before: int, alerts: int,
           drive: bool = False, end_fault: Callable[[], None] | None = None) -> None:
    """End the fault (as the world would), check the invariants, run the job normally,
    count the alerts."""
    led = rig.led()
    if end_fault is not None:
        end_fault()
    result.checks.update(invariants(rig))
    out = rig.phobos("run", job, "--json", "-q")
    report = json.loads(out.stdout) if out.stdout.strip() else {}
    result.checks["next run"] = Check(out.returncode == 0 and report.get("outcome") == "success",
                                      f"exit {out.returncode}: {out.stderr.strip()[-300:]}")
    sent = rig.mails() - mails_before
    red_ok = (led == "red") == (alerts > 0)
    result.checks["alerts"] = Check(sent == alerts and red_ok,
                                    f"{sent} mail(s), LED {led} (expected {alerts})")
    if drive:
        result.checks["drive copy"] = drive_copy_check(rig)


def recorded(rig: Rig, job: str, after: int) -> tuple[Check, str | None]:
    run = rig.last_run(job)
    if run is None or run["id"] <= after:
        return Check(False, "no history row"), None
    outcome = str(run["outcome"])
    return Check(outcome != "running", f"run {run['id']} {outcome}: {run['message']}"), outcome


def alerts_for(outcome: str | None) -> int:
    """A fault that landed after the run's outcome was recorded (success) alerts no one."""
    return 1 if outcome in FAILED_OUTCOMES else 0


# --- signals inside each kind of job -----------------------------------------------------------


PHASES = {  # job: (first step to wait for, seconds of the window after it if never run)
    "pull": ("pull h1", 0.9),
    "archive": ("create", 1.2),
    "check": ("check", 0.6),
    "offsite": ("mount", 1.2),
}


def prepare(rig: Rig, job: str) -> None:
    """Small new data, so the job has work to do when the fault hits."""
    if job == "pull":
        rig.change_host_data()
    elif job == "archive":
        local = rig.backup / "holding" / "local"
        local.mkdir(parents=True, exist_ok=True)
        (local / "changing.bin").write_bytes(os.urandom(1_000_000))


def signal_inside(rig: Rig, result: Result, job: str, sig: signal.Signals) -> None:
    step, default = PHASES[job]
    # Inside the run: within what the job's last run took from that step on (most of it).
    window = 0.8 * rig.phase_seconds(job, step, default)
    prepare(rig, job)
    mails = rig.mails()
    after = rig.newest_run_id()
    process = rig.start("run", job, "-q")
    found = rig.wait_for_step(job, step, after)
    time.sleep(result.moment * window)
    try:
        os.kill(process.pid, sig)
        landed = process.poll() is None or process.returncode == -sig
    except ProcessLookupError:  # it ended before the moment came
        landed = False
    result.landed = landed
    code = stop_cleanly(process)
    if sig == signal.SIGKILL:
        rig.phobos("status")  # a phobos start that touches state (the hourly timer's)
    check, outcome = recorded(rig, job, after)
    result.checks["recorded"] = check
    result.note = f"step seen {found}, landed {landed}, exit {code}, {outcome}"
    settle(rig, result, job=job, mails_before=mails, alerts=alerts_for(outcome),
           drive=job == "offsite")


for _job in PHASES:
    fault(f"kill9-{_job}", 5)(lambda rig, result, job=_job: signal_inside(
        rig, result, job, signal.SIGKILL))
    fault(f"term-{_job}", 5)(lambda rig, result, job=_job: signal_inside(
        rig, result, job, signal.SIGTERM))


# --- a waiting run stopped at any moment of its wait --------------------------------------------


STALE_RECORDS = 400  # harmless by design; they make naming the holder slow (a wide window)


@fault("term-wait", 10)
def term_while_waiting(rig: Rig, result: Result) -> None:
    """SIGTERM at a random moment of a wait for a lock must end the waiting run while the
    lock is still held (the holder runs until told), recorded interrupted, without
    running: never swallowed while phobos names the holder (stale holder records make
    that take long, as they could on a busy NAS)."""
    locks = rig.run_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    stale = [locks / f"custom--shared.{900000 + n}.holder" for n in range(STALE_RECORDS)]
    for n, path in enumerate(stale):
        path.write_text(json.dumps({"resource": "custom:shared", "job": "gone", "run_id": n,
                                    "pid": 900000 + n, "since": 0, "write": True}))
    marker, release = rig.root / "waiter.ran", rig.root / "release"
    marker.unlink(missing_ok=True)
    release.unlink(missing_ok=True)
    mails = rig.mails()
    before = rig.newest_run_id()
    holder = rig.start("run", "holder", "-q")
    rig.wait_for_step("holder", "command", before)
    after = rig.newest_run_id()
    waiter = rig.start("run", "waiter", "-q")
    while not rig.query("SELECT id FROM runs WHERE job = 'waiter' AND id > ?", after):
        assert waiter.poll() is None, "the waiter ended before it waited"
        time.sleep(0.05)
    time.sleep(0.2 + result.moment * 1.5)
    waiter.send_signal(signal.SIGTERM)
    code = stop_cleanly(waiter, timeout=60)
    holding = holder.poll() is None  # the lock was never free: the waiter did not wait on
    release.touch()  # the holder's work ends
    stop_cleanly(holder)
    for path in stale:
        path.unlink(missing_ok=True)
    check, outcome = recorded(rig, "waiter", after)
    result.checks["recorded"] = Check(check.ok and outcome == "interrupted" and code == 4
                                      and holding and not marker.exists(),
                                      f"{check.detail}; exit {code}; ran: {marker.exists()}")
    release.touch()  # the next run's holder (none) and any later one may go on
    settle(rig, result, job="waiter", mails_before=mails, alerts=1)


# --- Ctrl-C at the run's own terminal ------------------------------------------------------------


@fault("ctrl-c", 5)
def ctrl_c_at_the_terminal(rig: Rig, result: Result) -> None:
    """The person stops their own run: recorded interrupted, no mail, no red LED."""
    mails = rig.mails()
    after = rig.newest_run_id()
    process, terminal = rig.start_in_terminal("run", "slow")
    rig.wait_for_step("slow", "command", after)
    time.sleep(result.moment * 1.2)
    os.write(terminal, b"\x03")
    code = stop_cleanly(process, timeout=30)
    os.close(terminal)
    check, outcome = recorded(rig, "slow", after)
    result.checks["recorded"] = Check(check.ok and outcome == "interrupted" and code == 4,
                                      f"{check.detail}; exit {code}")
    settle(rig, result, job="slow", mails_before=mails, alerts=0)


# --- the world failing around a run ------------------------------------------------------------


@fault("host-down", 5)
def host_stops_mid_pull(rig: Rig, result: Result) -> None:
    rig.change_host_data()
    mails = rig.mails()
    after = rig.newest_run_id()
    process = rig.start("run", "pull", "-q")
    rig.wait_for_step("pull", "pull h1", after)
    time.sleep(result.moment * 0.8)
    result.landed = process.poll() is None
    rig.stop_host()  # sshd and every connection it serves
    stop_cleanly(process)
    check, outcome = recorded(rig, "pull", after)
    result.checks["recorded"] = check
    settle(rig, result, job="pull", mails_before=mails, alerts=alerts_for(outcome),
           end_fault=rig.start_host)


@fault("drive-vanish", 4)
def drive_vanishes_mid_sync(rig: Rig, result: Result) -> None:
    """The drive's filesystem disappears under the copy (a lazy unmount in the backup
    namespace, as when a drive is yanked and the kernel detaches it)."""
    mails = rig.mails()
    after = rig.newest_run_id()
    process = rig.start("run", "offsite", "-q")
    rig.wait_for_step("offsite", "copy-repo", after)
    time.sleep(result.moment * 0.3)
    result.landed = process.poll() is None
    sh("nsenter", f"--mount={rig.ns_file}", "umount", "-l", str(rig.mountpoint), check=False)
    stop_cleanly(process)
    check, outcome = recorded(rig, "offsite", after)
    result.checks["recorded"] = check
    settle(rig, result, job="offsite", mails_before=mails, alerts=alerts_for(outcome),
           drive=True, end_fault=lambda: _clear_mountpoint(rig))


def _clear_mountpoint(rig: Rig) -> None:
    """What the vanished filesystem left: nothing of phobos's to clean (the copy went to
    the drive's detached filesystem), so only the check that it is still empty."""
    left = list(rig.mountpoint.iterdir()) if rig.mountpoint.is_dir() else []
    assert not left, f"files written into the bare mount point: {left[:3]}"


@fault("drive-full", 3)
def drive_fills_up_mid_sync(rig: Rig, result: Result) -> None:
    """The drive fills up in the middle of the copy (a big file was put on it)."""
    point = rig.root / "drive-fill"
    point.mkdir(exist_ok=True)
    sh("mount", rig.drive, str(point))
    repo_size = sum(p.stat().st_size for p in rig.repo.rglob("*") if p.is_file())
    filler = fill(point, leave=int(repo_size * (0.2 + 0.6 * result.moment)))
    sh("umount", str(point))
    rig.backup.joinpath("holding", "local").mkdir(parents=True, exist_ok=True)
    mails = rig.mails()
    after = rig.newest_run_id()
    rig.phobos("run", "nightly", "-q")  # new segments the copy must write
    after = rig.newest_run_id()
    out = rig.phobos("run", "offsite", "-q")
    check, outcome = recorded(rig, "offsite", after)
    result.checks["recorded"] = check
    result.note = f"exit {out.returncode}"

    def remove_filler() -> None:
        sh("mount", rig.drive, str(point))
        (point / filler.name).unlink()
        sh("umount", str(point))

    settle(rig, result, job="offsite", mails_before=mails, alerts=alerts_for(outcome),
           drive=True, end_fault=remove_filler)


@fault("repo-fs-full", 4)
def repository_filesystem_full(rig: Rig, result: Result) -> None:
    prepare(rig, "archive")
    filler = fill(rig.backup, leave=int(200_000 * result.moment))
    mails = rig.mails()
    after = rig.newest_run_id()
    out = rig.phobos("run", "nightly", "-q")  # archive's create, without prune and compact
    check, outcome = recorded(rig, "nightly", after)
    said = "no space left on" in out.stdout and "sys.argv" not in out.stdout
    result.checks["recorded"] = Check(check.ok and said, f"{check.detail} / {out.stdout}")
    settle(rig, result, job="nightly", mails_before=mails, alerts=alerts_for(outcome),
           end_fault=lambda: filler.unlink())


@fault("holding-full", 4)
def holding_filesystem_full(rig: Rig, result: Result) -> None:
    rig.change_host_data()
    filler = fill(rig.backup, leave=int(300_000 * result.moment))
    mails = rig.mails()
    after = rig.newest_run_id()
    rig.phobos("run", "pull", "-q")
    check, outcome = recorded(rig, "pull", after)
    result.checks["recorded"] = check
    settle(rig, result, job="pull", mails_before=mails, alerts=alerts_for(outcome),
           end_fault=lambda: filler.unlink())


# --- damage to the history database ------------------------------------------------------------


def history_damage(rig: Rig, result: Result, damage: Callable[[Path], Callable[[], None]]
                   ) -> None:
    """The job runs anyway (exit 5), the run is in the history or phobos's log file, one
    mail and a red LED say so; the next run, once the damage is gone, is normal."""
    path = rig.state / "history.sqlite"
    undo = damage(path)
    status = rig.phobos("status")  # before the run moves a damaged database aside
    result.checks["status says"] = Check(
        status.returncode == 1 and "phobos: history unavailable" in status.stderr
        and "Traceback" not in status.stderr, f"exit {status.returncode}: {status.stderr[-300:]}")
    mails = rig.mails()
    lines_before = _log_lines(rig)
    out = rig.phobos("run", "quick", "--json", "-q")
    report = json.loads(out.stdout) if out.stdout.strip() else {}
    in_log = _log_lines(rig)[len(lines_before):]
    finished = [r for r in in_log if r.get("event") == "finished"]
    run = rig.last_run("quick")
    in_db = run is not None and report.get("run_id") == run["id"] and run["outcome"] == "success"
    result.checks["recorded"] = Check(
        out.returncode == 5 and report.get("outcome") == "success"
        and "history" in out.stderr and (in_db or bool(finished)),
        f"exit {out.returncode}; {out.stderr.strip()[-300:]}")

    # The next run, recorded again, clears the red (the LED's clear_on_success).
    settle(rig, result, job="quick", mails_before=mails, alerts=1, end_fault=undo)


def _log_lines(rig: Rig) -> list[dict[str, object]]:
    try:
        return [json.loads(line) for line in rig.fallback_log.read_text().splitlines()]
    except FileNotFoundError:
        return []


def _nothing() -> None:
    return None


def truncate(path: Path) -> Callable[[], None]:
    with path.open("r+b") as db:
        db.truncate(path.stat().st_size // 2)
    return _nothing


def garbage(path: Path) -> Callable[[], None]:
    with path.open("r+b") as db:
        db.write(os.urandom(100))
    return _nothing


def immutable(path: Path) -> Callable[[], None]:
    sh("chattr", "+i", str(path))
    return lambda: sh("chattr", "-i", str(path)) and None


def state_full(path: Path) -> Callable[[], None]:
    filler = fill(path.parent)
    return lambda: filler.unlink()


def state_read_only(path: Path) -> Callable[[], None]:
    sh("mount", "-o", "remount,ro", str(path.parent))
    return lambda: sh("mount", "-o", "remount,rw", str(path.parent)) and None


for _name, _damage in (("truncated", truncate), ("garbage", garbage), ("immutable", immutable),
                       ("state-full", state_full), ("state-ro", state_read_only)):
    fault(f"history-{_name}", 5)(lambda rig, result, damage=_damage: history_damage(
        rig, result, damage))


# --- a storm of conflicting triggers ----------------------------------------------------------


STORM = 50


@fault("storm", 1)
def storm_of_triggers(rig: Rig, result: Result) -> None:
    """50 runs of jobs sharing a resource and the repository, started at once: none
    fails, writers never overlap anyone, nobody is alerted."""
    rng = random.Random(result.moment)
    jobs = [rng.choice([*(f"storm-w{i}" for i in range(4)), *(f"storm-r{i}" for i in range(4)),
                        "storm-skip"]) for _ in range(STORM)]
    jobs[:3] = ["nightly", "check", "offsite"]
    mails = rig.mails()
    after = rig.newest_run_id()
    started = [rig.start("run", job, "-q") for job in jobs]
    codes = [stop_cleanly(process, timeout=300) for process in started]
    rows = rig.query("SELECT job, outcome, locked, ended FROM runs WHERE id > ?", after)
    # The work of each run: its steps (run while its locks are held; a run's end is
    # recorded after it let go of them).
    work = rig.query("SELECT r.job, r.outcome, MIN(s.started), MAX(s.ended) FROM runs r "
                     "JOIN steps s ON s.run_id = r.id WHERE r.id > ? GROUP BY r.id", after)
    overlapping = _writer_overlaps(work)
    bad = [c for c in codes if c not in (0, 3)]
    result.checks["recorded"] = Check(len(rows) == STORM and not bad and not overlapping,
                                      f"{len(rows)} runs recorded, exits {sorted(set(codes))}, "
                                      f"overlaps {overlapping[:2]}")
    settle(rig, result, job="storm-w0", mails_before=mails, alerts=0)


def _writer_overlaps(rows: list[tuple[object, ...]]) -> list[str]:
    """Pairs of storm runs whose work overlapped while one of them writes (all storm jobs
    share custom:storm; the writers write it)."""
    spans = [(str(job), float(start), float(end)) for job, outcome, start, end in rows
             if outcome in ("success", "warning") and start is not None and end is not None
             and str(job).startswith("storm")]
    found = []
    for job, start, end in spans:
        if not job.startswith("storm-w"):
            continue
        for other, other_start, other_end in spans:
            if (other, other_start) != (job, start) and start < other_end and other_start < end:
                found.append(f"{job} and {other}")
    return found


# --- running them ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> dict[str, list[Result]]:
    """Every fault of every kind, run once for the module: the rigs take faults from one
    queue (each rig one at a time), so the slow kinds do not wait for each other."""
    chosen = {item.callspec.params["kind"] for item in request.session.items
              if getattr(item, "originalname", "") == "test_faults"}  # -k picks kinds
    queue: list[Result] = []
    for kind, (count, _inject) in KINDS.items():
        if kind not in chosen:
            continue
        rng = random.Random(f"{SEED}:{kind}")
        queue += [Result(kind=kind, number=n, moment=rng.random()) for n in range(count)]
    order = random.Random(SEED).sample(queue, len(queue))  # kinds mixed over the rigs
    order.sort(key=lambda r: r.kind != "storm")  # the longest first
    pending = list(reversed(order))
    guard = threading.Lock()

    def work(rig: Rig) -> None:
        while True:
            with guard:
                if not pending:
                    return
                result = pending.pop()
            started = time.monotonic()
            before = _children_cpu()
            try:
                KINDS[result.kind][1](rig, result)
            except Exception:
                result.checks["fault ran"] = Check(False, traceback.format_exc()[-800:])
            result.seconds = time.monotonic() - started
            result.cpu = _children_cpu() - before  # exact with one rig only

    started = time.monotonic()
    with rigs(tmp_path_factory.mktemp("faults"), WORKERS) as pool:
        TIMES["rigs built"] = time.monotonic() - started
        side_by_side([lambda rig=rig: work(rig) for rig in pool])
        TIMES["faults"] = time.monotonic() - started - TIMES["rigs built"]
    RESULTS.extend(queue)
    return {kind: [r for r in queue if r.kind == kind] for kind in chosen}


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kind", list(KINDS))
def test_faults(kind: str, results: dict[str, list[Result]]) -> None:
    mine = results[kind]
    assert len(mine) == KINDS[kind][0]
    assert all(r.ok for r in mine), "\n".join(r.failures() for r in mine if not r.ok)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_the_suite_injects_at_least_a_hundred_faults() -> None:
    assert sum(count for count, _ in KINDS.values()) >= 100
