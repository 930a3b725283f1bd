"""Who started a job's unit: its timer, or a person with ``systemctl start``.

What systemd hands the service itself cannot tell: systemd 252 (Debian 12) sets
``$TRIGGER_UNIT`` and ``$TRIGGER_TIMER_REALTIME_USEC`` once and then hands the same,
stale values to every later activation of the loaded unit, by its timer or by hand.
What systemd keeps about the two units can: the timer's ``LastTriggerUSecMonotonic``
(0 when it has not elapsed since boot) and the service's
``InactiveEnterTimestampMonotonic`` (when its previous run ended; 0 if none since it was
loaded). A timer that elapsed after the previous run ended started this one; otherwise
a person did (a timer elapsing during a run starts nothing: systemd leaves the running
unit alone).

Asking systemd needs its socket, which the job's sandbox does not have
(``RestrictAddressFamilies=none``): the unit's ``ExecStartPre=-+`` (outside the
sandbox, failure ignored) runs ``phobos systemd trigger JOB``, which asks and leaves a
note for this activation (``$INVOCATION_ID``) in the run directory; ``phobos run JOB
--trigger unit`` takes the note. No note, or another activation's: manual.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

from phobos.core.files import write_atomic
from phobos.core.model import Trigger
from phobos.systemd.names import job_service, job_timer

NOTES_DIR = "unit-triggers"
INVOCATION_ENV = "INVOCATION_ID"

# systemd's format_timespan units, in microseconds (a month is 30.44 days, a year 365.25).
_UNITS = {"y": 31_557_600_000_000, "month": 2_629_800_000_000, "w": 604_800_000_000,
          "d": 86_400_000_000, "h": 3_600_000_000, "min": 60_000_000, "s": 1_000_000,
          "ms": 1_000, "us": 1}
_SPAN_PART = re.compile(r"(\d+(?:\.\d+)?)(month|min|ms|us|y|w|d|h|s)")


def parse_timespan(text: str) -> int:
    """Microseconds of a systemd time span as ``systemctl show`` prints it
    (``2h 27min 14.282922s``, ``0``). ValueError for anything else."""
    text = text.strip()
    if text in ("", "0"):
        return 0
    total, end = 0, 0
    for match in _SPAN_PART.finditer(text):
        if text[end:match.start()].strip():
            raise ValueError(f"not a systemd time span: {text!r}")
        total += round(float(match.group(1)) * _UNITS[match.group(2)])
        end = match.end()
    if end == 0 or text[end:].strip():
        raise ValueError(f"not a systemd time span: {text!r}")
    return total


def show_argv(job: str) -> list[str]:
    """``systemctl show`` of the two facts (one block per unit, in this order)."""
    return ["systemctl", "show", "--property=InactiveEnterTimestampMonotonic",
            "--property=LastTriggerUSecMonotonic", "--", job_service(job), job_timer(job)]


def _properties(block: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in block.splitlines() if "=" in line)


def trigger_from_show(text: str) -> Trigger:
    """TIMER when the output of :func:`show_argv` says the timer elapsed (since boot) no
    earlier than the service's previous run ended; else MANUAL. ValueError when the
    output lacks either fact."""
    blocks = [block for block in re.split(r"\n\s*\n", text) if block.strip()]
    if len(blocks) != 2:
        raise ValueError(f"systemctl show said {text.strip()!r}")
    service, timer = (_properties(block) for block in blocks)
    try:
        previous_end = int(service["InactiveEnterTimestampMonotonic"] or 0)
        last_trigger = parse_timespan(timer["LastTriggerUSecMonotonic"])
    except KeyError as missing:
        raise ValueError(f"systemctl show did not say {missing}") from None
    return Trigger.TIMER if last_trigger > 0 and previous_end <= last_trigger \
        else Trigger.MANUAL


def _note_path(run_dir: Path, job: str) -> Path:
    return run_dir / NOTES_DIR / f"{job}.json"


def write_note(run_dir: Path, job: str, invocation: str, trigger: Trigger) -> None:
    """Leave ``trigger`` for activation ``invocation`` of job ``job``'s unit."""
    write_atomic(_note_path(run_dir, job),
                 json.dumps({"invocation": invocation, "trigger": str(trigger)}),
                 parents=True)


def take_note(run_dir: Path, job: str, invocation: str | None) -> Trigger:
    """The trigger noted for activation ``invocation`` (the note is removed), else
    MANUAL: no note, one of another activation, or one that cannot be read."""
    path = _note_path(run_dir, job)
    try:
        note = json.loads(path.read_text())
        path.unlink()
    except (OSError, ValueError):
        return Trigger.MANUAL
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        if invocation and note.get("invocation") == invocation:
            return Trigger(note.get("trigger"))
    return Trigger.MANUAL
