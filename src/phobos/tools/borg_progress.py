"""Borg's ``--progress --log-json`` output, read line by line (Borg 1.2 and 1.4 write the
same JSON; its types are listed under "Logging" in Borg's "All about JSON" page).

With ``--log-json`` Borg writes one JSON object per line on stderr:

- ``archive_progress`` (``borg create``, about five a second): ``original_size``,
  ``compressed_size``, ``deduplicated_size``, ``nfiles``, ``path``, ``time``; a last one
  with only ``finished``;
- ``progress_percent`` (``borg check``'s "Checking segments", compaction...):
  ``current``, ``total``, ``message``, ``msgid``; ``finished`` at the end;
- ``progress_message`` (cache transactions...): a ``message`` naming a phase;
- ``log_message``: what Borg would otherwise log as text (``levelname``, ``message``);
- ``file_status`` (``--list``): ``status`` and ``path``.

:func:`reader` turns progress lines into :class:`~phobos.core.progress.Progress` and
every message back into the text Borg would have written without ``--log-json``, so the
run's log reads as before. A line that is not such JSON is kept as it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from phobos.core.progress import LineReader, Progress, RateMeter, Reading
from phobos.core.step import Step

PROGRESS_OPTIONS = ("--progress", "--log-json")
SEGMENTS_MSGID = "repository.check"


def _text(data: dict[str, Any]) -> str | None:
    kind = data.get("type")
    if kind == "log_message":
        return str(data.get("message", ""))
    if kind == "file_status":
        return f"{data.get('status', '?')} {data.get('path', '')}"
    if kind == "question_prompt":
        return str(data.get("message", ""))
    return None


class _Reader:
    """The state one run of a Borg command needs: the rate of bytes read, when its time
    box (``check --max-duration``) started."""

    def __init__(self, time_box: float | None, clock: Callable[[], float]) -> None:
        self.time_box = time_box
        self.clock = clock
        self.began: float | None = None
        self.bytes_rate = RateMeter()
        self.segment_rate = RateMeter(window=30.0)
        self.detail: str | None = None
        self.last: Progress | None = None

    def __call__(self, _stream: str, line: str) -> Reading:
        if self.began is None:
            self.began = self.clock()
        if not line.startswith("{"):
            return Reading(line)
        try:
            data = json.loads(line)
        except ValueError:
            return Reading(line)
        if not isinstance(data, dict):
            return Reading(line)
        kind = data.get("type")
        if kind == "archive_progress":
            return Reading(None, self._archive(data))
        if kind == "progress_percent":
            return Reading(None, self._percent(data))
        if kind == "progress_message":
            return Reading(None, self._phase(data))
        text = _text(data)
        return Reading(line if text is None else text)

    def _archive(self, data: dict[str, Any]) -> Progress | None:
        if "original_size" not in data:  # the closing {"finished": true}
            return None
        done = int(data["original_size"])
        self.detail = None
        self.last = Progress(bytes_done=done, files_done=int(data.get("nfiles", 0)),
                             deduplicated_bytes=int(data.get("deduplicated_size", 0)),
                             rate=self.bytes_rate.add(self._when(data), done))
        return self.last

    def _percent(self, data: dict[str, Any]) -> Progress | None:
        if data.get("finished") or not data.get("total"):
            return None
        current, total = int(data.get("current", 0)), int(data["total"])
        if data.get("msgid") != SEGMENTS_MSGID:
            return Progress(fraction=current / total, detail=_phase_name(data))
        rate = self.segment_rate.add(self._when(data), current)
        left = (total - current) / rate if rate else None
        if self.time_box is not None and self.began is not None:
            boxed = max(0.0, self.time_box - (self.clock() - self.began))
            left = boxed if left is None else min(left, boxed)
        return Progress(segments_done=current, segments_total=total,
                        fraction=current / total, eta=left)

    def _when(self, data: dict[str, Any]) -> float:
        """Borg's time stamp of a line (our clock for lines without one)."""
        when = data.get("time")
        return float(when) if isinstance(when, int | float) else self.clock()

    def _phase(self, data: dict[str, Any]) -> Progress | None:
        """A phase between the counted parts ("Saving files cache"): shown with the last
        counts, so a long cache synchronisation does not look like a stall."""
        if data.get("finished"):
            self.detail = None
        else:
            self.detail = str(data.get("message") or "") or None
        return replace(self.last or Progress(), detail=self.detail, rate=None)


def _phase_name(data: dict[str, Any]) -> str | None:
    message = str(data.get("message") or "")
    return message.rsplit(" ", 1)[0].strip() if message.endswith("%") else message or None


def reader(*, time_box: float | None = None,
           clock: Callable[[], float] = time.monotonic) -> LineReader:
    """A fresh reader for one Borg command run with :data:`PROGRESS_OPTIONS`.
    ``time_box``: the ``--max-duration`` of a check slice, so that the time left is at
    most what is left of it."""
    return _Reader(time_box, clock)


def with_progress(argv: Sequence[str]) -> tuple[str, ...]:
    """A Borg command's argv (``borg COMMAND OPTIONS... -- ARGS``) with
    :data:`PROGRESS_OPTIONS` right after the command."""
    return (*argv[:2], *PROGRESS_OPTIONS, *argv[2:])


def progress_step(step: Step, *, time_box: float | None = None) -> Step:
    """``step``, a Borg command, reporting its progress (see :func:`reader`)."""
    return replace(step, argv=with_progress(step.argv),
                   progress=lambda: reader(time_box=time_box))
