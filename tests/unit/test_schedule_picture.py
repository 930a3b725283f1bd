"""The SVG picture of a simulated window, at one day and at seven: one row per job (a
chain's rows together), hatched waiting, lighter late bands, crosses for skipped runs,
the triggered band, a legend, hour labels that never overprint, nothing outside the
picture. (Chromium draws it for real in tests/integration/test_web_browser.py.)"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from configs import config_from
from nights import HEAD, job, nine_archives

from phobos.core.history import History
from phobos.schedule.picture import CHAR, render_svg
from phobos.schedule.simulate import simulate

SVG = "{http://www.w3.org/2000/svg}"
SUNDAY = datetime(2026, 1, 4, 0, 0, tzinfo=UTC)
BODY = HEAD + nine_archives(last=(
    job("check", "Sun *-*-* 03:00", writes=("repo:main",), estimate="5h30m")
    + job("backup-luv", "*-*-* 03:44", writes=("holding:luv",), estimate="20m")
    + job("skipper", "*-*-* 04:00", writes=("repo:main",), estimate="1m", on_busy='"skip"')
    + job("a-job-with-a-rather-long-name-that-goes-on-and-on", "*-*-* 12:00", estimate="1h")
    + job("offsite", reads=("repo:main",), estimate="5h")))


def extent(node: ET.Element) -> tuple[float, float]:
    """Left and right of a text element, by the picture's own character estimate."""
    x, width = float(node.get("x", 0)), len(node.text or "") * CHAR
    anchor = node.get("text-anchor", "start")
    return (x - width / 2, x + width / 2) if anchor == "middle" else (x, x + width)


@pytest.mark.parametrize("days", [1, 7])
def test_picture_is_readable(tmp_path: Path, days: int) -> None:
    config = config_from(BODY, root=tmp_path)
    history = History.open(config.paths.state)
    sim = simulate(config, history, SUNDAY, SUNDAY + timedelta(days=days))
    root = ET.fromstring(render_svg(sim, config))
    width, height = float(root.get("width", 0)), float(root.get("height", 0))
    assert root.get("viewBox") == f"0 0 {width:.0f} {height:.0f}"
    texts = list(root.iter(f"{SVG}text"))
    for node in texts:  # nothing clipped: every label inside the picture
        left, right = extent(node)
        assert left >= 0 and right <= width, (node.text, left, right, width)
        assert 0 < float(node.get("y", 0)) <= height
    for rect in root.iter(f"{SVG}rect"):
        x, w = float(rect.get("x", 0)), float(rect.get("width", 0))
        assert x >= 0 and x + w <= width + 0.5 and w >= 0
    # Hour labels and day labels: in order, never touching.
    for row_y in {node.get("y") for node in texts if node.get("font-size") == "11"} | {"36"}:
        row = sorted(extent(n) for n in texts if n.get("y") == row_y)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(row)), row_y
    hours = [n.text for n in texts if n.get("font-size") == "11"]
    assert len(hours) >= (12 if days == 1 else 4 * days)  # every 2 h, or every 6 h
    labels = [n.text for n in texts if n.get("x") == "16" and float(n.get("y", 0)) > 60]
    chain = [f"arc-{name}" for name in
             ("etc", "home", "root", "srv", "var-lib", "var-mail", "holding-luv",
              "holding-chew", "holding-nuhc")]
    assert labels[:9] == [chain[0], *(f"↳ {name}" for name in chain[1:])]
    assert "offsite (triggered)" in labels
    assert any(label and label.endswith("…") for label in labels)  # the long name, cut
    classes = [node.get("class") for node in root.iter()]
    runs = sim.runs
    assert classes.count("waiting") == sum(1 for r in runs if r.outcome == "run" and r.wait > 0)
    assert classes.count("run") == sum(1 for r in runs if r.outcome == "run")
    assert classes.count("skipped") == sum(1 for r in runs if r.outcome == "skipped") >= days
    assert classes.count("safe") >= days
    legend = {n.text for n in texts}
    assert {"waiting for its turn", "late (up to p90)", "skipped",
            "start a triggered job here"} <= legend
    advice = " ".join(n.text or "" for n in texts if "plug" in (n.text or "")
                      or "start it" in (n.text or ""))
    assert "offsite: start it" in advice
