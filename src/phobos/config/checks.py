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
    """Why ``name`` cannot name a table ([jobs.NAME], [hosts.NAME] ...), or None. Names
    become unit names, which systemd limits to 255 characters: the longest one phobos
    derives (the failure hook's instance for a drive's unit) leaves NAME_MAX for it."""
    from phobos.systemd.names import NAME_MAX

    if not NAME.match(name):
        return (f"{name!r} is not a valid name: use letters, digits, '.', '_' and '-', "
                "starting with a letter or digit")
    if len(name) > NAME_MAX:
        return (f"{name[:20]!r}... is {len(name)} characters long; names are at most "
                f"{NAME_MAX} (systemd's limit of 255 for the unit names made from them)")
    return None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def control_problem(text: str) -> str | None:
    """Why ``text`` (a value that must be one line: a path, a device, a description)
    cannot be used: it holds a newline or another control character."""
    bad = _CONTROL.search(text)
    if bad is None:
        return None
    what = "a newline" if bad.group() in "\r\n" else f"the control character {bad.group()!r}"
    return f"{text!r} contains {what}; write it on one line without control characters"


def line_problem(text: str | None) -> str | None:
    """A one-line text (a description): no control character, no trailing backslash
    (systemd would join the next line of a unit to it)."""
    if text is None:
        return None
    if problem := control_problem(text):
        return problem
    if text.endswith("\\"):
        return f"{text!r} ends with a backslash; remove it"
    return None


# Filesystem and LUKS UUIDs: hex digits in dash-separated groups (LUKS and ext4
# 8-4-4-4-12, FAT and exFAT XXXX-XXXX, NTFS 16 digits).
_UUID = re.compile(r"^[0-9A-Fa-f]+(-[0-9A-Fa-f]+)*$")
UUID_MAX = 64


def uuid_problem(text: str) -> str | None:
    """Why ``text`` is not a filesystem or LUKS UUID, or None."""
    if _UUID.match(text) and len(text) <= UUID_MAX:
        return None
    return (f"{text!r} is not a UUID: hex digits in groups separated by '-', as "
            "`cryptsetup luksUUID DEVICE` or `blkid` print it")


# Login names as useradd and sshd take them; "-" first would make an option of it.
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$")
USER_MAX = 32


def user_problem(user: str) -> str | None:
    """Why ``user`` is not a login name for ssh and rsync (``USER@HOST``), or None."""
    if _USER.match(user) and len(user) <= USER_MAX:
        return None
    return (f"{user!r} is not a login name: letters, digits, '_', '.' and '-' (not "
            f"first), at most {USER_MAX} characters")


# mount(8)'s ways of naming a device, besides a path under /dev.
DEVICE_TAGS = ("UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=")


def device_problem(device: str | None) -> str | None:
    """Why ``device`` is not something mount(8) takes as the device to mount."""
    if device is None:
        return None
    if problem := control_problem(device):
        return problem
    tag = next((t for t in DEVICE_TAGS if device.startswith(t)), None)
    if tag is not None and device.removeprefix(tag) and "/" not in device.removeprefix(tag):
        return None
    if device.startswith("/dev/") and ".." not in device.split("/"):
        return None
    return (f"{device!r} is not a device: write UUID=..., LABEL=..., PARTUUID=..., "
            "PARTLABEL=... or a path under /dev/")


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


#: The LED colours a brightness limit can be set for (LED states other than off).
LED_COLOURS = ("blue", "yellow", "green", "red")


def led_limit_problem(value: Any) -> str | None:
    """``[notify.led] limit``: a percentage 0-100, or a table of them per colour."""
    def percent_problem(item: Any) -> str | None:
        if isinstance(item, bool) or not isinstance(item, int):
            return "expected a whole number 0-100"
        return None if 0 <= item <= 100 else f"{item} is not 0-100"

    if not isinstance(value, Mapping):
        problem = percent_problem(value)
        return f"{problem}, or a table per colour, e.g. {{ red = 50, green = 10 }}" \
            if problem else None
    for colour, item in value.items():
        if colour not in LED_COLOURS:
            return one_of(colour, LED_COLOURS)
        if problem := percent_problem(item):
            return f"{colour}: {problem}"
    return None


def events_problem(values: tuple[str, ...]) -> str | None:
    return next((one_of(v, NOTIFY_EVENTS) for v in values if v not in NOTIFY_EVENTS), None)


def http_url_problem(url: str | None) -> str | None:
    if url is None or url.startswith(("http://", "https://")):
        return None
    return "must be an http:// or https:// URL"


def http_urls_problem(urls: Mapping[str, str]) -> str | None:
    bad = sorted(job for job, url in urls.items() if http_url_problem(url))
    return f"{', '.join(bad)}: must be http:// or https:// URLs" if bad else None


def ssh_url_problem(url: str | None) -> str | None:
    """Why ``url`` is not a repository URL Borg reaches over SSH, or None."""
    from phobos.tools.ssh import parse_ssh_url

    if url is None:
        return None
    try:
        parse_ssh_url(url)
    except ValueError as exc:
        return f"{exc}; e.g. \"ssh://borg@nas.example.org:22/srv/borg/main\""
    return None


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
