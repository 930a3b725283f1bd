"""The line in front of the locks (core/queue.py) and the order rules of one run
(core/order.py): tickets in place order, who stands in whose way (readers share, a writer
ahead holds a reader back), dead owners' tickets vanish, an interrupted enter leaves
nothing, and `after` waits for a predecessor of the same slot only while it may still
come."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from configs import config_from
from nights import job

from phobos.core.history import History
from phobos.core.order import START_GRACE, RunOrder
from phobos.core.queue import Line, Place, live_tickets


def line(directory: Path, job_name: str, when: float, resources: dict[str, bool],
         rank: int = 0) -> Line:
    entered = Line(directory, job=job_name, run_id=0, place=Place(when, rank),
                   resources=resources)
    entered.enter()
    return entered


def test_tickets_go_by_place_and_only_conflicts_stand_in_the_way(tmp_path: Path) -> None:
    writer = line(tmp_path, "writer", 100.0, {"repo:main": True})
    reader = line(tmp_path, "reader", 200.0, {"repo:main": False})
    early_reader = line(tmp_path, "early-reader", 50.0, {"repo:main": False})
    chain_link = line(tmp_path, "link", 100.0, {"holding:luv": False}, rank=3)
    other = line(tmp_path, "other", 10.0, {"holding:luv": True})
    tickets = writer.tickets()
    assert [t.job for t in tickets] == ["other", "early-reader", "writer", "link", "reader"]
    assert [t.job for t in reader.ahead(tickets)] == ["writer"]  # a writer ahead: wait
    assert [t.job for t in writer.ahead(tickets)] == ["early-reader"]
    assert early_reader.ahead(tickets) == []  # a reader ahead of readers: nobody blocks it
    assert [t.job for t in chain_link.ahead(tickets)] == ["other"]
    assert chain_link.ahead(tickets, held_back=lambda t: t.job == "other") == []
    for entered in (writer, reader, early_reader, chain_link, other):
        entered.leave()
    assert live_tickets(tmp_path) == [] and os.listdir(tmp_path) == []


def test_a_killed_owners_ticket_is_dead_and_removed(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from phobos.core.queue import Line, "
            "Place\nline = Line(Path(sys.argv[1]), job='victim', run_id=1, place=Place(1.0),"
            " resources={'storage': True}); line.enter(); print('in', flush=True); "
            "time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "in\n"
        [ticket] = live_tickets(tmp_path)
        assert (ticket.job, ticket.pid, ticket.resources) == ("victim", child.pid,
                                                               {"storage": True})
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert live_tickets(tmp_path) == []
    assert os.listdir(tmp_path) == []  # the first look removed it


def test_leave_cleans_up_after_an_interrupted_enter(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    entering = Line(tmp_path, job="j", run_id=1, place=Place(1.0), resources={})

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        entering.enter()
    assert os.listdir(tmp_path) != []  # the locked temporary file
    entering.leave()
    assert os.listdir(tmp_path) == []
    Line(tmp_path, job="never", run_id=2, place=Place(1.0), resources={}).leave()


ORDER = "".join([job("first", "*-*-* *:*:*", writes=("storage",)),
                 job("second", "*-*-* *:*:*", writes=("storage",), after='["first"]'),
                 job("unrelated", "*-*-* *:*:*", writes=("custom:x",))])


def started_run(history: History, name: str, trigger: str, started: float) -> int:
    run_id = history.start_run(job=name, kind="command", trigger=trigger)
    history.db.execute("UPDATE runs SET started = ? WHERE id = ?", (started, run_id))
    return run_id


def test_after_waits_for_a_predecessor_of_the_slot_only_while_it_may_come(
        tmp_path: Path) -> None:
    config = config_from(ORDER, root=tmp_path)
    history = History.open(config.paths.state)
    slot = float(int(time.time()))
    second = RunOrder(config, "second", "timer", slot + 0.2, history)
    assert (second.slot, second.place) == (slot, Place(slot, 1))
    wait = second([])
    assert wait is not None and not wait.busy and wait.jobs == ("first",)
    assert wait.text.startswith("waiting for first to run first (it fires at ")
    # `first` of this slot started: its ticket ahead makes second wait until it leaves.
    run_id = started_run(history, "first", "timer", slot + 0.1)
    ahead = Line(tmp_path / "q", job="first", run_id=run_id, place=Place(slot, 0),
                 resources={"storage": True})
    ahead.enter()
    wait = second(ahead.tickets())
    assert wait is not None and wait.text.startswith("waiting for first to finish first")
    ahead.leave()
    history.db.execute("UPDATE runs SET outcome = 'success', ended = ? WHERE id = ?",
                       (slot + 1, run_id))
    assert second([]) is None
    # An old slot whose `first` never started: not going to run, not waited for.
    old = slot - START_GRACE - 60
    late = RunOrder(config, "second", "daemon", old + 0.5, history)
    assert late.slot == old and late([]) is None
    # A manual run has no slot: only a predecessor's run ahead of it in line counts.
    by_hand = RunOrder(config, "second", "manual", slot + 5, history)
    assert by_hand.slot is None and by_hand([]) is None
    history.close()


def test_a_waiting_chain_link_holds_back_only_its_own_slot(tmp_path: Path) -> None:
    config = config_from(ORDER, root=tmp_path)
    history = History.open(config.paths.state)
    slot = float(int(time.time()))
    lines = [line(tmp_path / "q", "first", slot, {"storage": True}, 0),
             line(tmp_path / "q", "second", slot, {"storage": True}, 1)]
    tickets = lines[0].tickets()
    link = tickets[1]
    later = RunOrder(config, "unrelated", "manual", slot + 1, history)
    assert later.held_back(link, tickets)  # another time: second does not stand in its way
    same_slot = RunOrder(config, "unrelated", "timer", slot + 0.5, history)
    assert not same_slot.held_back(link, tickets)
    lines[0].leave()
    assert not later.held_back(link, lines[1].tickets())  # its predecessor is done
    lines[1].leave()
    history.close()
