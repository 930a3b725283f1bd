"""`phobos led show|set|ack|test` as real processes, with the file driver and with the command
driver running a tiny script; LED trouble during a run is a warning, never a new outcome."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Sandbox

JOBS = """
[jobs.nightly]
kind = "command"
argv = ["sh", "-c", "echo broken >&2; exit 3"]

[jobs.fine]
kind = "command"
argv = ["true"]
"""


def file_driver(sandbox: Sandbox) -> Path:
    led = sandbox.root / "led-state"
    sandbox.write(JOBS + f'[notify.led]\ndriver = "file"\npath = "{led}"\n')
    return led


def show(sandbox: Sandbox) -> dict[str, object]:
    done = sandbox.phobos("led", "show", "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_failure_latches_red_until_ack(sandbox: Sandbox) -> None:
    led = file_driver(sandbox)
    assert sandbox.phobos("run", "nightly").returncode == 1
    assert led.read_text() == "red\n"
    assert sandbox.phobos("run", "fine").returncode == 0
    assert led.read_text() == "red\n"  # latched: a later success of another job keeps it
    state = show(sandbox)
    assert state["state"] == "red" and state["driver"] == "file"
    failures = state["failures"]
    assert isinstance(failures, list)
    assert [(f["job"], f["outcome"]) for f in failures] == [("nightly", "failed")]
    text = sandbox.phobos("led", "show").stdout
    assert text.startswith("LED: red (nightly failed at ")
    assert f"driver: file ({led})" in text
    ack = sandbox.phobos("led", "ack")
    assert ack.returncode == 0
    assert ack.stdout.startswith("acknowledged 1 failure: nightly (run 1); LED: off")
    assert led.read_text() == "off\n"
    assert show(sandbox)["state"] == "off"
    again = sandbox.phobos("led", "ack")
    assert again.stdout.strip() == "no failures to acknowledge; LED: off"


def test_set_shows_a_colour_without_changing_the_tracked_state(sandbox: Sandbox) -> None:
    led = file_driver(sandbox)
    done = sandbox.phobos("led", "set", "blue")
    assert done.returncode == 0, done.stderr
    assert led.read_text() == "blue\n"
    assert "tracked state again (off" in done.stdout
    assert show(sandbox)["state"] == "off"
    assert sandbox.phobos("led", "set", "purple").returncode == 2


def test_led_test_cycles_and_restores_the_tracked_state(sandbox: Sandbox) -> None:
    led = file_driver(sandbox)
    assert sandbox.phobos("run", "nightly").returncode == 1
    done = sandbox.phobos("led", "test", "--delay", "0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "red: ok", "yellow: ok", "green: ok", "blue: ok", "off: ok",
        "LED test passed: the driver took every colour; the LED shows the tracked state "
        "again (red)"]
    assert led.read_text() == "red\n"


def test_led_test_says_when_the_driver_fails(sandbox: Sandbox) -> None:
    sandbox.write(JOBS + f'[notify.led]\ndriver = "file"\npath = "{sandbox.root}/no/dir/led"\n')
    done = sandbox.phobos("led", "test", "--delay", "0")
    assert done.returncode == 1
    assert "red: FAILED: cannot write the LED state to" in done.stdout
    assert done.stdout.rstrip().endswith("LED test failed: the driver did not take every colour")


def test_led_verbs_without_a_driver(sandbox: Sandbox) -> None:
    sandbox.write(JOBS)
    for verb in (("set", "red"), ("test",)):
        done = sandbox.phobos("led", *verb)
        assert done.returncode == 2
        assert "no LED driver is configured" in done.stderr
    assert show(sandbox)["state"] == "off"  # the state is tracked even without a light


def command_driver(sandbox: Sandbox, exit_code: int = 0) -> Path:
    calls = sandbox.root / "calls"
    script = sandbox.root / "fake-blinkstick"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit {exit_code}\n')
    script.chmod(0o755)
    sandbox.write(JOBS + '[notify.led]\ndriver = "command"\n'
                  f'command = ["{script}", "--index", "1", "--limit", "50", '
                  '"--set-color", "{color}", "--hex", "#{hex}"]\n')
    return calls


def test_command_driver_runs_the_argv_with_the_colour(sandbox: Sandbox) -> None:
    calls = command_driver(sandbox)
    done = sandbox.phobos("led", "test", "--delay", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls.read_text().splitlines() == [
        "--index 1 --limit 50 --set-color red --hex #ff0000",
        "--index 1 --limit 50 --set-color yellow --hex #ffff00",
        "--index 1 --limit 50 --set-color green --hex #00ff00",
        "--index 1 --limit 50 --set-color blue --hex #0000ff",
        "--index 1 --limit 50 --set-color off --hex #000000",
        "--index 1 --limit 50 --set-color off --hex #000000",  # back to the tracked state
    ]
    calls.unlink()
    assert sandbox.phobos("run", "nightly", "--trigger", "timer").returncode == 1
    colours = [line.split()[5] for line in calls.read_text().splitlines()]
    assert colours == ["yellow", "red"]


def test_failing_command_driver_is_a_warning_in_the_run(sandbox: Sandbox) -> None:
    command_driver(sandbox, exit_code=7)
    done = sandbox.phobos("run", "fine", "--json")
    report = json.loads(done.stdout)
    assert (done.returncode, report["outcome"]) == (0, "success")
    log = json.loads(sandbox.phobos("log", str(report["run_id"]), "--json").stdout)["log"]
    warnings = [e["line"] for e in log if "notifier" in e["line"]]
    assert len(warnings) == 2
    assert all(w.startswith("warning: notifier led failed: LED command: fake-blinkstick "
                            "failed with exit code 7") for w in warnings)
    test = sandbox.phobos("led", "test", "--delay", "0")
    assert test.returncode == 1
    assert "red: FAILED: LED command: fake-blinkstick failed with exit code 7" in test.stdout


def test_ack_works_even_when_the_driver_setting_is_broken(sandbox: Sandbox) -> None:
    sandbox.write(JOBS + '[notify.led]\ndriver = "file"\n')  # no path: no light, state kept
    assert sandbox.phobos("run", "nightly").returncode == 1
    assert show(sandbox)["state"] == "red"
    done = sandbox.phobos("led", "ack")
    assert done.returncode == 0
    assert "the file driver needs `path`" in done.stderr
    assert show(sandbox)["state"] == "off"
