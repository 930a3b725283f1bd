"""Sections a test suite adds to pytest's terminal summary (the fuzz suite's counts, the
fault suite's table), printed by tests/conftest.py after every run that collected them.

A suite registers a section when its helper module is imported; a run that does not
collect the suite prints nothing of it. (Suites cannot each bring a conftest.py of their
own: with pytest's default import mode, a second module named ``conftest`` hides the
shared one from ``from conftest import ...``.)"""

from __future__ import annotations

from collections.abc import Callable

SECTIONS: dict[str, Callable[[], list[str]]] = {}


def add_section(title: str, lines: Callable[[], list[str]]) -> None:
    """Print ``lines()`` under ``title`` at the end of the run (nothing when empty)."""
    SECTIONS[title] = lines
