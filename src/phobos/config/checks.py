"""Checks of single config values shared by the tables: names, numbers, choices, calendar
expressions, URLs, listen addresses and references to other tables. Each returns a problem
(a sentence) or None; :mod:`phobos.config.schema` attaches it to the key's path."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from phobos.config.schema import Problems, suggest

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# What a finished run (or the overdue check) can tell a message channel.
NOTIFY_EVENTS = ("failure", "warning", "success", "skipped", "overdue")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a table ([jobs.NAME], [hosts.NAME] ...), or None."""
    if NAME.match(name):
        return None
    return (f"{name!r} is not a valid name: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit")


def calendar_problem(text: str) -> str | None:
    """systemd's verdict on an OnCalendar expression, as a config problem."""
    from phobos.oncalendar.errors import CalendarError
    from phobos.oncalendar.parse import parse_calendar

    try:
        parse_calendar(text)
    except CalendarError as exc:
        return f"not a valid systemd calendar expression: {exc.message}"
    return None


def positive(value: float | None) -> str | None:
    """Durations, counts and sizes must be above zero (an unset optional value passes)."""
    return None if value is None or value > 0 else "must be greater than zero"


def one_of(value: str, choices: tuple[str, ...]) -> str | None:
    if value in choices:
        return None
    return f"{value!r} is not one of {', '.join(map(repr, choices))}{suggest(value, choices)}"


def events_problem(values: tuple[str, ...]) -> str | None:
    return next((one_of(v, NOTIFY_EVENTS) for v in values if v not in NOTIFY_EVENTS), None)


def http_url_problem(url: str | None) -> str | None:
    if url is None or url.startswith(("http://", "https://")):
        return None
    return "must be an http:// or https:// URL"


def http_urls_problem(urls: Mapping[str, str]) -> str | None:
    bad = sorted(job for job, url in urls.items() if http_url_problem(url))
    return f"{', '.join(bad)}: must be http:// or https:// URLs" if bad else None


def listen_problem(text: str) -> str | None:
    from phobos.web.address import listen_problem as problem_of_address

    return problem_of_address(text)


def check_ref(problems: Problems, path: tuple[str, ...], table: str, name: str,
              known: Mapping[str, Any]) -> None:
    """Record a problem at ``path`` when ``name`` is not a key of ``known`` ([TABLEs.NAME])."""
    if name not in known:
        problems.add(path, f"no {table} named {name!r}" + (suggest(name, known) or
                                                           f" (define [{table}s.{name}])"))


def after_problems(after: Mapping[str, tuple[str, ...]], known: Collection[str],
                   problems: Problems) -> None:
    """Record problems of the jobs' ``after`` lists: names of no job (``known``: every job
    table, also those with problems of their own), a job after itself, a name twice, and
    jobs that wait for each other in a circle (nothing would ever start)."""
    for name, others in after.items():
        for index, other in enumerate(others):
            path = ("jobs", name, "after", f"[{index}]")
            if other == name:
                problems.add(path, "a job cannot run after itself")
            elif other not in known:
                problems.add(path, f"no job named {other!r}"
                             + (suggest(other, known) or f" (define [jobs.{other}])"))
            elif other in others[:index]:
                problems.add(path, f"{other!r} is listed twice")
    for circle in after_cycles(after):
        if len(circle) == 1:
            continue  # reported above: a job after itself
        problems.add(("jobs", circle[0], "after"), "these jobs wait for each other in a circle, "
                     "so none would start: " + " → ".join([*circle, circle[0]])
                     + "; remove one of the `after` entries")


def after_cycles(after: Mapping[str, tuple[str, ...]]) -> list[list[str]]:
    """Each circle of ``after`` references once, as job names from its first job in
    ``after``'s order (``a`` after ``b``, ``b`` after ``a``: ``[["a", "b"]]``)."""
    order = {name: index for index, name in enumerate(after)}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []
    for root in after:
        if root in state:
            continue
        state[root] = 1
        path = [root]
        stack = [iter(after[root])]
        while stack:
            nxt = next((s for s in stack[-1] if s in after), None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                circle = path[path.index(nxt):]
                first = min(range(len(circle)), key=lambda i: order[circle[i]])
                circles.append(circle[first:] + circle[:first])
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(after[nxt]))
    return circles
