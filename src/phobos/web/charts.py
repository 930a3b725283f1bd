"""Small server-rendered SVG pictures: a job's durations and stats, the past week of runs.

Pure string building, every text escaped. Colours follow the outcome classes of the
stylesheet; each picture has a ``viewBox`` so CSS can shrink it to a phone's width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from html import escape

from phobos.core.history import Run
from phobos.core.model import format_duration
from phobos.web.readonly import Span

OUTCOME_COLOURS = {"success": "#3f9b4a", "warning": "#e0a526", "failed": "#d8383a",
                   "interrupted": "#a0262b", "skipped": "#9aa0a6", "running": "#2f6fd6",
                   "stale": "#7b61a8"}
WAIT_COLOUR = "#c9d3e6"


def human_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - the loop always returns


def fmt(unit: str) -> Callable[[float], str]:
    if unit == "bytes":
        return human_bytes
    if unit == "ratio":
        return lambda v: f"{100 * v:.1f}%"
    return lambda v: f"{v:g}"


def _open(width: int, height: int, label: str, font: int = 11) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" '
            f'aria-label="{escape(label)}" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="{font}">')


def duration_chart(runs: Sequence[Run], width: int = 720, height: int = 150) -> str:
    """Bars, oldest left: each run's duration (waiting for locks in a paler shade),
    coloured by outcome, linking to the run."""
    done = [r for r in reversed(runs) if r.ended is not None]
    parts = [_open(width, height, "run durations")]
    if not done:
        parts.append(f'<text x="8" y="{height // 2}" fill="#666">no finished runs yet</text>')
        return "".join(parts) + "</svg>"
    top, base, left = 14, height - 18, 6
    longest = max((r.ended or r.started) - r.started for r in done) or 1.0
    step = (width - left - 6) / len(done)
    bar = min(24.0, max(1.0, step * 0.8))
    parts.append(f'<text x="{left}" y="10" fill="#555">max {format_duration(longest)}</text>')
    for index, run in enumerate(done):
        x = left + index * step
        total = (run.ended or run.started) - run.started
        waited = max(0.0, (run.locked or run.started) - run.started)
        h = max(1.0, (base - top) * total / longest)
        # Under a second is phobos starting up, not waiting for another job.
        hw = (base - top) * min(waited, total) / longest if waited >= 1 else 0.0
        colour = OUTCOME_COLOURS.get(str(run.outcome), "#888")
        parts.append(
            f'<a href="/runs/{run.id}"><rect x="{x:.1f}" y="{base - h:.1f}" width="{bar:.1f}" '
            f'height="{h:.1f}" fill="{colour}"><title>run {run.id}: {escape(str(run.outcome))}'
            f', {format_duration(total)} ({datetime.fromtimestamp(run.started):%Y-%m-%d %H:%M})'
            f'</title></rect>')
        if hw >= 1:
            parts.append(f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{bar:.1f}" '
                         f'height="{hw:.1f}" fill="{WAIT_COLOUR}"/>')
        parts.append("</a>")
    parts.append(_date_axis(done[0].started, done[-1].started, width, height))
    return "".join(parts) + "</svg>"


def _date_axis(first: float, last: float, width: int, height: int) -> str:
    a = datetime.fromtimestamp(first)
    b = datetime.fromtimestamp(last)
    return (f'<line x1="6" y1="{height - 17}" x2="{width - 6}" y2="{height - 17}" '
            f'stroke="#bbb"/><text x="6" y="{height - 4}" fill="#555">{a:%Y-%m-%d}</text>'
            f'<text x="{width - 6}" y="{height - 4}" fill="#555" text-anchor="end">'
            f'{b:%Y-%m-%d %H:%M}</text>')


def stat_chart(label: str, unit: str, points: Sequence[tuple[Run, float]],
               width: int = 720, height: int = 120) -> str:
    """A line of one stat over the runs that recorded it, oldest left."""
    show = fmt(unit)
    parts = [_open(width, height, label)]
    values = [v for _, v in points]
    low, high = min(values), max(values)
    span = (high - low) or (abs(high) or 1.0)
    top, base, left = 16, height - 18, 6
    step = (width - left - 6) / max(1, len(points) - 1)
    coords = []
    for index, (_, value) in enumerate(points):
        x = left + index * step if len(points) > 1 else width / 2
        y = base - (base - top) * ((value - low) / span if high != low else 0.5)
        coords.append((x, y))
    parts.append(f'<text x="{left}" y="11" fill="#555">{escape(label)}: last '
                 f'{escape(show(values[-1]))}, max {escape(show(high))}</text>')
    parts.append('<polyline fill="none" stroke="#4e79a7" stroke-width="1.5" points="'
                 + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>')
    for (run, value), (x, y) in zip(points, coords, strict=True):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="#4e79a7"><title>run '
                     f'{run.id}: {escape(show(value))}</title></circle>')
    parts.append(_date_axis(points[0][0].started, points[-1][0].started, width, height))
    return "".join(parts) + "</svg>"


ROW, LABEL, WIDTH = 24, 140, 960


def week_chart(spans: Sequence[Span], start: datetime, now: datetime,
               jobs: Sequence[str]) -> str:
    """The past week of real runs: one row per job, a bar per run from start to end;
    the time a run waited for another's locks (the runs overlapped on a resource) is
    drawn pale with a red frame."""
    names = sorted({s.job for s in spans} | set(jobs))
    height = ROW * (len(names) + 1) + 6
    t0, t1 = start.timestamp(), now.timestamp()
    scale = (WIDTH - LABEL - 10) / max(1.0, t1 - t0)

    def x(ts: float) -> float:
        return LABEL + max(0.0, min(t1 - t0, ts - t0)) * scale

    parts = [_open(WIDTH, height, "runs of the past week", font=12),
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>']
    parts += _day_grid(start, now, x, height)
    rows = {name: index for index, name in enumerate(names, start=1)}
    for name, row in rows.items():
        parts.append(f'<text x="6" y="{row * ROW + 16}">{escape(name)}</text>')
    for span in spans:
        parts.append(_span_bar(span, rows[span.job] * ROW, x, t1))
    return "".join(parts) + "</svg>"


def _day_grid(start: datetime, now: datetime, x: Callable[[float], float],
              height: int) -> list[str]:
    lines = []
    day = (start + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    while day < now:
        px = x(day.timestamp())
        lines.append(f'<line x1="{px:.1f}" y1="4" x2="{px:.1f}" y2="{height}" stroke="#ddd"/>'
                     f'<text x="{px + 3:.1f}" y="14" fill="#555">{day:%a %d}</text>')
        day += timedelta(days=1)
    return lines


def _span_bar(span: Span, y: int, x: Callable[[float], float], now: float) -> str:
    end = span.ended if span.ended is not None else now
    work = span.locked if span.locked is not None else span.started
    colour = OUTCOME_COLOURS.get(span.outcome, "#888")
    x0, xw, x1 = x(span.started), x(min(work, end)), x(end)
    began = datetime.fromtimestamp(span.started)
    title = (f"{escape(span.job)} run {span.id}: {escape(span.outcome)}, {began:%a %H:%M}, "
             f"{format_duration(end - span.started)}")
    parts = [f'<a href="/runs/{span.id}"><g class="run {escape(span.outcome)}"><title>{title}'
             '</title>']
    if work - span.started >= 1 and xw - x0 >= 1:
        parts.append(f'<rect x="{x0:.1f}" y="{y + 4}" width="{xw - x0:.1f}" height="{ROW - 8}" '
                     f'fill="{WAIT_COLOUR}" stroke="#e15759" stroke-width="1.5"/>')
    parts.append(f'<rect x="{xw:.1f}" y="{y + 4}" width="{max(2.0, x1 - xw):.1f}" '
                 f'height="{ROW - 8}" fill="{colour}"/>')
    return "".join(parts) + "</g></a>"
