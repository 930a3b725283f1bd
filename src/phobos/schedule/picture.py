"""A simulated window as an SVG picture: one row per job, readable at one day and at seven.

Rows: the chains of ``after`` first (each on a tinted band, in run order), then the other
scheduled jobs by family, then the triggered jobs with the spans in which starting them
finishes before the next conflicting run. A run is drawn as a hatched bar while it waits
(from its timer to its start), a solid bar for its typical (median) work and a lighter
band up to its p90 ("late"); a skipped run is a red cross at its timer. Hour ticks are
spaced so their labels never touch; the day names sit on a row of their own; the legend
is at the bottom; every element stays inside the picture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from html import escape

from phobos.config.model import Config
from phobos.core.model import format_duration
from phobos.schedule.digest import safe_starts, triggered_advice
from phobos.schedule.simulate import PredictedRun, Simulation
from phobos.schedule.timeline import FAMILIES, FAMILY_ORDER

CHAR = 7.0  # average advance of a 12px sans-serif character
ROW, BAR = 22, 12
TOP = 64  # title, day row, hour row
PAD = 16
COLOURS = {"Borg": "#4e79a7", "Rsync pulls": "#59a14f", "External": "#f28e2b",
           "Other": "#9c755f"}
SAFE = "#8cd17d"
SKIP = "#e15759"
TICK_HOURS = (1, 2, 3, 4, 6, 12, 24)


@dataclass(frozen=True, slots=True)
class Row:
    job: str
    label: str
    chain: int | None  # index of its chain, for the band
    triggered: bool = False


class Canvas:
    """Maps times to x and collects SVG elements."""

    def __init__(self, sim: Simulation, label_width: float) -> None:
        self.sim = sim
        self.first = sim.start.timestamp()
        self.span = max(sim.end.timestamp() - self.first, 1.0)
        hours = self.span / 3600
        self.left = label_width
        self.plot = max(720.0, min(1680.0, hours * max(8.0, 960.0 / hours)))
        self.width = self.left + self.plot + PAD
        self.parts: list[str] = []

    def x(self, when: float) -> float:
        offset = min(max(when - self.first, 0.0), self.span)
        return self.left + self.plot * offset / self.span

    def add(self, text: str) -> None:
        self.parts.append(text)


def render_svg(sim: Simulation, config: Config) -> str:
    """The picture of ``sim`` (see the module docstring)."""
    rows = _rows(sim, config)
    longest = max([len(r.label) for r in rows] + [12])
    canvas = Canvas(sim, min(longest * CHAR + 2 * PAD, 300.0))
    advice = [triggered_advice(sim, config, r.job) for r in rows if r.triggered]
    advice_lines = [line for text in advice for line in _wrap(text, canvas.width - 2 * PAD)]
    body_end = TOP + ROW * len(rows)
    legend_top = body_end + 12 + 16 * len(advice_lines)
    legend = _legend_items(sim, config)
    legend_rows = _legend_layout(legend, canvas.width)
    height = legend_top + 20 * (max(legend_rows.values(), default=0) + 1) + 8
    canvas.add(f'<svg xmlns="http://www.w3.org/2000/svg" width="{canvas.width:.0f}" '
               f'height="{height}" viewBox="0 0 {canvas.width:.0f} {height}" '
               'font-family="sans-serif" font-size="12">')
    canvas.add(_DEFS)
    canvas.add(f'<rect width="{canvas.width:.0f}" height="{height}" fill="white"/>')
    canvas.add(f'<text x="{PAD}" y="18" font-weight="bold">{escape(_title(sim))}</text>')
    _bands(canvas, rows, body_end)
    _axis(canvas, body_end)
    for index, row in enumerate(rows):
        _row(canvas, config, row, TOP + ROW * index)
    for number, line in enumerate(advice_lines):
        canvas.add(f'<text x="{PAD}" y="{body_end + 20 + 16 * number}" fill="#333">'
                   f'{escape(line)}</text>')
    _legend(canvas, legend, legend_rows, legend_top)
    canvas.add("</svg>")
    return "\n".join(canvas.parts)


_DEFS = ('<defs><pattern id="waiting" width="6" height="6" patternUnits="userSpaceOnUse" '
         'patternTransform="rotate(45)"><rect width="6" height="6" fill="#f4f4f4"/>'
         '<line x1="0" y1="0" x2="0" y2="6" stroke="#8a8a8a" stroke-width="2"/>'
         '</pattern></defs>')


def _title(sim: Simulation) -> str:
    zone = sim.start.strftime("%Z") or sim.start.strftime("%z")
    return (f"phobos schedule {sim.start:%a %Y-%m-%d %H:%M} – {sim.end:%a %Y-%m-%d %H:%M} "
            f"({zone})")


def _rows(sim: Simulation, config: Config) -> list[Row]:
    shown = {r.job for r in sim.runs}
    rows: list[Row] = []
    for index, chain in enumerate(sim.chains):
        members = [job for job in chain if job in shown]
        rows += [Row(job, ("" if i == 0 else "↳ ") + job, index)
                 for i, job in enumerate(members)]
    chained = {job for chain in sim.chains for job in chain}
    rest = sorted((FAMILY_ORDER.index(FAMILIES[config.jobs[job].kind]), job)
                  for job in shown - chained)
    rows += [Row(job, job, None) for _, job in rest]
    rows += [Row(job, f"{job} (triggered)", None, triggered=True)
             for job in sorted(sim.triggered)]
    return rows


def _bands(canvas: Canvas, rows: list[Row], body_end: int) -> None:
    """Tinted bands behind each chain's rows, and a line above the triggered rows."""
    for index, row in enumerate(rows):
        y = TOP + ROW * index
        if row.chain is not None:
            canvas.add(f'<rect x="0" y="{y}" width="{canvas.width:.0f}" height="{ROW}" '
                       f'fill="{"#eaf0f8" if row.chain % 2 == 0 else "#f3eefa"}"/>')
        if row.triggered and (index == 0 or not rows[index - 1].triggered):
            canvas.add(f'<line x1="0" y1="{y}" x2="{canvas.width:.0f}" y2="{y}" '
                       'stroke="#999" stroke-dasharray="4 3"/>')
    canvas.add(f'<line x1="0" y1="{body_end}" x2="{canvas.width:.0f}" y2="{body_end}" '
               'stroke="#ccc"/>')


def _axis(canvas: Canvas, body_end: int) -> None:
    """Day names on one row, hour ticks on the next, spaced so labels never overlap."""
    sim = canvas.sim
    per_hour = canvas.plot / (canvas.span / 3600)
    step = next((h for h in TICK_HOURS if h * per_hour >= 5 * CHAR + 10), 24)
    hour = sim.start.replace(minute=0, second=0, microsecond=0)
    last_label_end = 0.0
    while hour < sim.end:
        when = hour.timestamp()
        if when >= canvas.first and hour.hour % step == 0:
            px = canvas.x(when)
            midnight = hour.hour == 0
            canvas.add(f'<line x1="{px:.1f}" y1="{TOP - 4}" x2="{px:.1f}" y2="{body_end}" '
                       f'stroke="{"#999" if midnight else "#e2e2e2"}"/>')
            label = f"{hour:%H:%M}"
            if px - len(label) * CHAR / 2 > last_label_end and \
                    px + len(label) * CHAR / 2 <= canvas.width - 2:
                canvas.add(f'<text x="{px:.1f}" y="{TOP - 8}" text-anchor="middle" '
                           f'fill="#555" font-size="11">{label}</text>')
                last_label_end = px + len(label) * CHAR / 2 + 4
        hour = sim.moment(hour.timestamp() + 3600)
    _day_names(canvas)


def _day_names(canvas: Canvas) -> None:
    sim = canvas.sim
    day = sim.start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < sim.end:
        following = day.replace(tzinfo=None).toordinal() + 1
        nxt = day.fromordinal(following).replace(tzinfo=day.tzinfo)
        left, right = canvas.x(day.timestamp()), canvas.x(nxt.timestamp())
        for label in (f"{day:%a %Y-%m-%d}", f"{day:%a %d}", f"{day:%a}"):
            if len(label) * CHAR + 8 <= right - left:
                canvas.add(f'<text x="{(left + right) / 2:.1f}" y="36" text-anchor="middle" '
                           f'fill="#333">{label}</text>')
                break
        day = nxt


def _row(canvas: Canvas, config: Config, row: Row, y: int) -> None:
    canvas.add(f'<text x="{PAD}" y="{y + 15}">{escape(_fit(row.label, canvas.left - PAD))}'
               '</text>')
    if row.triggered:
        for begin, end in safe_starts(canvas.sim, config, row.job):
            x0, x1 = canvas.x(begin), canvas.x(end)
            if x1 > x0:
                canvas.add(f'<rect class="safe" x="{x0:.1f}" y="{y + 5}" width="{x1 - x0:.1f}" '
                           f'height="{BAR}" fill="{SAFE}" opacity="0.7"><title>start '
                           f'{escape(row.job)} in here to finish before the next conflicting '
                           'job</title></rect>')
        return
    colour = COLOURS[FAMILIES[config.jobs[row.job].kind]]
    for run in (r for r in canvas.sim.runs if r.job == row.job):
        _run(canvas, run, colour, y)


def _run(canvas: Canvas, run: PredictedRun, colour: str, y: int) -> None:
    x = canvas.x
    tip = f"<title>{escape(_tooltip(canvas.sim, run))}</title>"
    top = y + (ROW - BAR) // 2
    if run.outcome == "skipped":
        px = x(run.planned)
        canvas.add(f'<g class="skipped" stroke="{SKIP}" stroke-width="2">{tip}'
                   f'<line x1="{px - 4:.1f}" y1="{top}" x2="{px + 4:.1f}" y2="{top + BAR}"/>'
                   f'<line x1="{px - 4:.1f}" y1="{top + BAR}" x2="{px + 4:.1f}" y2="{top}"/>'
                   '</g>')
        return
    if run.start > run.planned:
        canvas.add(f'<rect class="waiting" x="{x(run.planned):.1f}" y="{top}" '
                   f'width="{x(run.start) - x(run.planned):.1f}" height="{BAR}" '
                   f'fill="url(#waiting)" stroke="#8a8a8a" stroke-width="0.5">{tip}</rect>')
    if run.late_end > run.end:
        canvas.add(f'<rect class="late" x="{x(run.end):.1f}" y="{top}" '
                   f'width="{x(run.late_end) - x(run.end):.1f}" height="{BAR}" '
                   f'fill="{colour}" opacity="0.3">{tip}</rect>')
    x0 = x(run.start)
    dashed = "" if run.known else ' stroke="#333" stroke-dasharray="2 2" fill-opacity="0.4"'
    canvas.add(f'<rect class="run" x="{x0:.1f}" y="{top}" width="{max(x(run.end) - x0, 2):.1f}" '
               f'height="{BAR}" fill="{colour}"{dashed}>{tip}</rect>')


def _tooltip(sim: Simulation, run: PredictedRun) -> str:
    def hm(when: float) -> str:
        return sim.moment(when).strftime("%a %H:%M")

    if run.outcome == "skipped":
        return f"{run.job}: timer {hm(run.planned)}, skipped: {run.skip_reason}"
    text = (f"{run.job}: timer {hm(run.planned)}, starts {hm(run.start)}, ends ~{hm(run.end)}"
            f" (late {hm(run.late_end)})")
    if run.waits_for:
        text += f"; waits {format_duration(run.wait)} for {', '.join(run.waits_for)}"
    return text + ("" if run.known else "; duration unknown (set `estimate`)")


def _fit(text: str, width: float) -> str:
    fits = int(width // CHAR)
    return text if len(text) <= fits else text[:max(fits - 1, 1)] + "…"


def _wrap(text: str, width: float) -> list[str]:
    fits = max(int(width // CHAR), 20)
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > fits:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return [*lines, current] if current else lines


# --- legend ------------------------------------------------------------------------------

Swatch = Callable[[float, float], str]


def _legend_items(sim: Simulation, config: Config) -> list[tuple[str, Swatch]]:
    families = [f for f in FAMILY_ORDER
                if any(FAMILIES[config.jobs[r.job].kind] == f for r in sim.runs)]
    items: list[tuple[str, Swatch]] = [
        (f"{family} (typical run)", _box(COLOURS[family])) for family in families]
    items += [("late (up to p90)", _box(COLOURS[families[0]] if families else "#999", 0.3)),
              ("waiting for its turn", _box("url(#waiting)")),
              ("skipped", _cross)]
    if sim.triggered:
        items.append(("start a triggered job here", _box(SAFE, 0.7)))
    return items


def _box(fill: str, opacity: float = 1.0) -> Swatch:
    return lambda x, y: (f'<rect x="{x:.1f}" y="{y - 10}" width="18" height="10" '
                         f'fill="{fill}" opacity="{opacity}" stroke="#8a8a8a" '
                         'stroke-width="0.5"/>')


def _cross(x: float, y: float) -> str:
    return (f'<g stroke="{SKIP}" stroke-width="2"><line x1="{x + 5:.1f}" y1="{y - 10}" '
            f'x2="{x + 13:.1f}" y2="{y}"/><line x1="{x + 5:.1f}" y1="{y}" x2="{x + 13:.1f}" '
            f'y2="{y - 10}"/></g>')


def _legend_layout(items: list[tuple[str, Swatch]], width: float) -> dict[str, int]:
    """Which legend row each item goes on, wrapping before the right edge."""
    placed, x, line = {}, float(PAD), 0
    for label, _ in items:
        size = 24 + len(label) * CHAR + 18
        if x + size > width - PAD and x > PAD:
            line, x = line + 1, float(PAD)
        placed[label] = line
        x += size
    return placed


def _legend(canvas: Canvas, items: list[tuple[str, Swatch]], rows: dict[str, int],
            top: float) -> None:
    x, line = float(PAD), 0
    for label, swatch in items:
        if rows[label] != line:
            line, x = rows[label], float(PAD)
        y = top + 20 * line + 12
        canvas.add(swatch(x, y))
        canvas.add(f'<text x="{x + 24:.1f}" y="{y}" fill="#333">{escape(label)}</text>')
        x += 24 + len(label) * CHAR + 18
