"""The simulation of a window (schedule/simulate.py) and the order rules it shares with the
runner (core/order.py): chains of `after` run in order and keep their slot together, a
job of another time takes what a waiting link does not hold yet, readers share unless a
writer is ahead, on_busy and busy_timeout decide skips, randomized_delay counts at its
worst, a run whose previous one still goes is dropped, runs of the day before carry
over, and unknown durations are drawn nominally."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from configs import config_from
from nights import ARCHIVES, HEAD, job, nine_archives

from phobos.config.model import Config
from phobos.core.history import History
from phobos.core.order import run_order, slot_of, slot_order
from phobos.schedule.digest import notes, render_notes
from phobos.schedule.simulate import PredictedRun, Simulation, simulate

SUNDAY = datetime(2026, 1, 4, 0, 0, tzinfo=UTC)
def run_sim(tmp_path: Path, body: str, start: datetime = SUNDAY,
            days: int = 1) -> tuple[Config, Simulation]:
    config = config_from(HEAD + body, root=tmp_path)
    history = History.open(config.paths.state)
    try:
        return config, simulate(config, history, start, start + timedelta(days=days))
    finally:
        history.close()


def runs_of(sim: Simulation, name: str) -> list[PredictedRun]:
    return [r for r in sim.runs if r.job == name]


def hm(sim: Simulation, when: float) -> str:
    return sim.moment(when).strftime("%H:%M")


def test_nine_archives_run_in_order_and_a_check_of_the_same_slot_waits_for_all(
        tmp_path: Path) -> None:
    config, sim = run_sim(tmp_path, nine_archives(last=job(
        "check", "Sun *-*-* 03:00", writes=("repo:main",), estimate="5h30m")))
    starts = [hm(sim, runs_of(sim, f"arc-{name}")[0].start) for name in ARCHIVES]
    assert starts == ["03:00", "03:08", "03:16", "03:24", "03:32", "03:40", "03:48",
                      "03:56", "04:04"]
    [check] = runs_of(sim, "check")
    assert (hm(sim, check.start), check.wait) == ("04:12", 72 * 60)
    assert check.waits_for[0].startswith("arc-")
    said = render_notes(sim, notes(sim, config))
    assert said == ["Sun     arc-* run 03:00–04:12 in order",
                    "Sun     check at 03:00 waits 1h12m for arc-* (repo:main)"]
    assert sim.chains == [[f"arc-{name}" for name in ARCHIVES]]


def test_a_job_listed_before_the_chain_goes_first_and_the_chain_follows_whole(
        tmp_path: Path) -> None:
    _, sim = run_sim(tmp_path, nine_archives(first=job(
        "check", "Sun *-*-* 03:00", writes=("repo:main",), estimate="5h30m")))
    assert hm(sim, runs_of(sim, "check")[0].start) == "03:00"
    arcs = [runs_of(sim, f"arc-{name}")[0] for name in ARCHIVES]
    assert [hm(sim, r.start) for r in arcs[:4]] == ["08:30", "08:38", "08:46", "08:54"]
    # The default busy_timeout (6 h) runs out for the rest at 09:00: the truth, said.
    assert [(r.outcome, hm(sim, r.start)) for r in arcs[4:]] == [("skipped", "09:00")] * 5
    assert arcs[4].skip_reason == "waited its busy_timeout (6h00m) for arc-srv"


def test_a_pull_of_another_time_delays_the_link_that_needs_its_holding(tmp_path: Path
                                                                        ) -> None:
    # backup-luv (03:44, 20 m) writes holding:luv; the seventh link reads it. While the
    # links before it run, that link holds nothing back from a job of another time.
    config, sim = run_sim(tmp_path, nine_archives(last=job(
        "backup-luv", "*-*-* 03:44", writes=("holding:luv",), estimate="20m")))
    assert hm(sim, runs_of(sim, "backup-luv")[0].start) == "03:44"
    link = runs_of(sim, "arc-holding-luv")[0]
    assert (hm(sim, link.start), link.waits_for) == ("04:04", ["arc-var-mail", "backup-luv"])
    assert hm(sim, runs_of(sim, "arc-holding-nuhc")[0].end) == "04:28"
    said = render_notes(sim, notes(sim, config))
    assert said == ["Sun     arc-* run 03:00–04:28 in order",
                    "Sun     backup-luv at 03:44 delays arc-holding-luv by 16m (holding:luv)"]


def test_readers_share_but_not_past_a_writer_ahead_of_them(tmp_path: Path) -> None:
    _, sim = run_sim(tmp_path, job("reader-1", "*-*-* 02:50", reads=("repo:main",),
                                   estimate="20m")
                     + job("writer", "*-*-* 03:00", writes=("repo:main",), estimate="10m")
                     + job("reader-2", "*-*-* 03:05", reads=("repo:main",), estimate="5m")
                     + job("reader-3", "*-*-* 02:55", reads=("repo:main",), estimate="5m"))
    assert hm(sim, runs_of(sim, "reader-3")[0].start) == "02:55"  # shares with reader-1
    assert hm(sim, runs_of(sim, "writer")[0].start) == "03:10"
    # reader-2 arrives while reader-1 reads, but the writer waits ahead of it.
    assert hm(sim, runs_of(sim, "reader-2")[0].start) == "03:20"


def test_busy_policies_and_busy_timeout_decide_skips(tmp_path: Path) -> None:
    _, sim = run_sim(tmp_path, job("long", "*-*-* 03:00", writes=("storage",), estimate="1h")
                     + job("skipper", "*-*-* 03:10", writes=("storage",), estimate="1m",
                           on_busy='"skip"')
                     + job("failer", "*-*-* 03:10", reads=("storage",), estimate="1m",
                           on_busy='"fail"')
                     + job("patient", "*-*-* 03:20", writes=("storage",), estimate="1m",
                           busy_timeout='"15m"'))
    skipper, failer, patient = (runs_of(sim, n)[0] for n in ("skipper", "failer", "patient"))
    assert (skipper.outcome, hm(sim, skipper.start)) == ("skipped", "03:10")
    assert skipper.skip_reason == 'on_busy = "skip" and it is busy with long'
    assert failer.outcome == "skipped" and "on_busy = \"fail\"" in failer.skip_reason
    assert (patient.outcome, hm(sim, patient.start)) == ("skipped", "03:35")
    assert patient.skip_reason == "waited its busy_timeout (15m00s) for long"


def test_randomized_delay_counts_at_its_worst_and_its_slot_mates_wait(tmp_path: Path
                                                                       ) -> None:
    _, sim = run_sim(tmp_path, job("first", "*-*-* 03:00", writes=("storage",),
                                   estimate="5m", randomized_delay='"10m"')
                     + job("second", "*-*-* 03:00", writes=("storage",), estimate="5m")
                     + job("unrelated", "*-*-* 03:00", writes=("holding:luv",),
                           estimate="5m"))
    first, second = runs_of(sim, "first")[0], runs_of(sim, "second")[0]
    assert (hm(sim, first.start), hm(sim, second.start)) == ("03:10", "03:15")
    assert second.waits_for == ["first"]
    assert hm(sim, runs_of(sim, "unrelated")[0].start) == "03:00"


def test_a_run_whose_previous_one_still_goes_is_dropped(tmp_path: Path) -> None:
    _, sim = run_sim(tmp_path, job("slow", "*-*-* 03,04,05:00", estimate="90m"))
    assert [(hm(sim, r.planned), r.outcome) for r in runs_of(sim, "slow")] == [
        ("03:00", "run"), ("04:00", "skipped"), ("05:00", "run")]
    assert "previous run is still going" in runs_of(sim, "slow")[1].skip_reason


def test_after_waits_for_a_predecessor_of_another_slot_still_going(tmp_path: Path) -> None:
    config, sim = run_sim(tmp_path, job("pull", "*-*-* 02:50", writes=("holding:luv",),
                                        estimate="30m")
                          + job("archive", "*-*-* 03:00", reads=("holding:luv",),
                                estimate="10m", after='["pull"]')
                          + job("solo", "*-*-* 03:00", estimate="1m", after='["pull"]'))
    archive, solo = runs_of(sim, "archive")[0], runs_of(sim, "solo")[0]
    assert (hm(sim, archive.start), hm(sim, solo.start)) == ("03:20", "03:20")
    assert archive.order_by and not archive.busy_by  # waited for the order, not a lock
    assert "Sun     solo at 03:00 waits 20m for pull (after)" in render_notes(
        sim, notes(sim, config))


def test_runs_of_the_day_before_carry_over_and_unknown_durations_are_nominal(
        tmp_path: Path) -> None:
    _, sim = run_sim(tmp_path, job("check", "Sun *-*-* 03:00", writes=("repo:main",),
                                   estimate="5h30m")
                     + job("nightly", "*-*-* 05:00", writes=("repo:main",))
                     + job("offsite", reads=("repo:main",)),
                     start=SUNDAY + timedelta(hours=4))
    [check] = runs_of(sim, "check")
    assert hm(sim, check.planned) == "03:00"  # before the window, still going in it
    [nightly] = runs_of(sim, "nightly")
    assert (hm(sim, nightly.start), nightly.work, nightly.known) == ("08:30", 60.0, False)
    assert set(sim.triggered) == {"offsite"}


@pytest.mark.parametrize(("jobs", "order"), [
    # A chain stays together, in the config's place of its first job.
    ({"x": (), "a1": (), "c": (), "a2": ("a1",), "a3": ("a2",)},
     ["x", "a1", "a2", "a3", "c"]),
    # A job after two others comes after both, in its chain.
    ({"b": (), "a": (), "both": ("a", "b"), "z": ()}, ["b", "a", "both", "z"]),
    # A predecessor that does not fire in the slot is not waited for by the order.
    ({"late": ("absent",), "early": ()}, ["late", "early"]),
])
def test_run_order_keeps_chains_together_in_config_order(
        tmp_path: Path, jobs: dict[str, tuple[str, ...]], order: list[str]) -> None:
    body = "".join(job(name, "*-*-* 03:00", after=repr(list(after)).replace("'", '"'))
                   for name, after in jobs.items())
    body += job("absent", "*-*-* 04:00")
    config = config_from(HEAD + body)
    assert run_order(config, [n for n in jobs]) == order
    three = (SUNDAY + timedelta(hours=3)).timestamp()
    assert slot_order(config, three) == order


def test_a_run_is_on_time_for_its_slot_within_the_grace(tmp_path: Path) -> None:
    config = config_from(HEAD + job("a", "*-*-* 03:00", randomized_delay='"10m"')
                         + job("b", "*-*-* 03:00"))
    three = (SUNDAY + timedelta(hours=3)).timestamp()
    assert slot_of(config.jobs["b"], "timer", three + 0.4) == three
    assert slot_of(config.jobs["b"], "daemon", three + 29) == three
    assert slot_of(config.jobs["b"], "timer", three + 31) is None  # a catch-up: not on time
    assert slot_of(config.jobs["a"], "timer", three + 9 * 60) == three  # randomized delay
    assert slot_of(config.jobs["b"], "manual", three) is None


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("start", ["2026-01-04 00:00", "2026-03-27 12:00", "2026-10-23 22:00",
                                   "2026-11-01 00:00", "2026-02-25 03:00", "2026-12-28 00:00"])
def test_daily_calendars_repeat_exactly_as_each_elapse_computed(
        zone: str, start: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from zoneinfo import ZoneInfo

    from phobos.oncalendar.parse import parse_calendar
    from phobos.schedule import simulate as module

    monkeypatch.setenv("TZ", zone)
    first = datetime.strptime(start, "%Y-%m-%d %H:%M").replace(
        tzinfo=ZoneInfo(zone)).timestamp()
    last = first + 8 * 86400
    for text in ("*-*-* 03:00", "*-*-* 02:30", "Sun *-*-* 07:00", "Mon,Fri *-*-* 01:15:30",
                 "*-*-* 03,15:00,30", "*-*-* 00/5:07", "*-*-* 03:00 UTC",
                 "*-*-* 02:30 Europe/Berlin", "*-*-1 04:00", "*-*~1 04:00"):
        spec = parse_calendar(text)
        assert module._elapses(spec, first, last) == module._exact_elapses(spec, first, last), \
            (text, zone, start)
