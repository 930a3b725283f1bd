"""Names of the files and units phobos installs, and systemd's escaping and quoting rules
(``systemd-escape --path``, ``Exec*=`` words, path lists, specifiers, time spans).

Pure string functions: no config, no system access. :func:`unit_value` is the one way
a value from the config (or the command line) enters a unit file.
"""

from __future__ import annotations

import re
from enum import StrEnum

from phobos.systemd.errors import SystemdError

FAILURE_UNIT = "phobos-failure@.service"
UDEV_RULES = "90-phobos-drives.rules"
OVERDUE_SERVICE = "phobos-overdue.service"
OVERDUE_TIMER = "phobos-overdue.timer"
WEB_UNIT = "phobos-web.service"
# The instance OnFailure= starts: %n is the failed unit's full name.
FAILURE_HOOK = "phobos-failure@%n.service"


def job_service(name: str) -> str:
    """The service running job ``name``."""
    return f"phobos-job-{name}.service"


def job_timer(name: str) -> str:
    """The timer starting job ``name`` on its schedule."""
    return f"phobos-job-{name}.timer"


def drive_service(name: str) -> str:
    """The service started when drive ``name`` is plugged in."""
    return f"phobos-drive-{name}.service"


def escape_path(path: str) -> str:
    """``systemd-escape --path PATH``: ``/`` becomes ``-``, other bytes outside
    ``[A-Za-z0-9:_.]`` (and a leading ``.``) become ``\\xHH``."""
    trimmed = "/".join(part for part in path.split("/") if part and part != ".")
    if not trimmed:
        return "-"
    out = []
    for index, char in enumerate(trimmed):
        if char == "/":
            out.append("-")
        elif (char.isascii() and (char.isalnum() or char in ":_.")
              and not (index == 0 and char == ".")):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


def device_unit(luks_uuid: str) -> str:
    """The device unit of ``/dev/disk/by-uuid/UUID`` (``dev-disk-by\\x2duuid-….device``)."""
    return escape_path(f"/dev/disk/by-uuid/{luks_uuid}") + ".device"


# A unit name is at most 255 characters (systemd's UNIT_NAME_MAX, NUL excluded).
UNIT_NAME_MAX = 255


def failure_instance(unit: str) -> str:
    """The ``OnFailure=`` instance systemd starts when ``unit`` fails (``%n`` filled in)."""
    return FAILURE_HOOK.replace("%n", unit)


def longest_unit_name(name: str) -> str:
    """The longest unit name phobos derives from a job or drive called ``name``: the
    failure hook's instance for the unit of a drive (``phobos-failure@phobos-drive-NAME
    .service.service``), longer than every job unit, timer or their instances."""
    return max((failure_instance(unit(name)) for unit in (job_service, job_timer,
                                                           drive_service)), key=len)


#: The longest job, drive (or any table) name whose units systemd accepts: 211.
NAME_MAX = UNIT_NAME_MAX - len(longest_unit_name(""))


class Syntax(StrEnum):
    """Where in a unit (or udev rule) a value goes, which decides how it is written."""

    EXECUTABLE = "executable"  # the program of an Exec*= command line
    ARG = "arg"  # one word of an Exec*= command line
    PATH = "path"  # one entry of a path list (ReadWritePaths=, DeviceAllow='s node ...)
    TEXT = "text"  # the rest of a line as it is (Description=, OnCalendar=)
    COMMENT = "comment"  # a "#" comment line
    UDEV = "udev"  # inside the double quotes of a udev rule's value


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Quoted, a path list entry keeps its ":" (BindPaths= splits SOURCE:DEST on it).
_NEEDS_QUOTES = {Syntax.ARG: re.compile(r"[\s\"'\\;]"), Syntax.EXECUTABLE: re.compile(r"\s"),
                 Syntax.PATH: re.compile(r"[\s\"'\\:]")}


def unit_value(value: str, syntax: Syntax, *, key: str) -> str:
    """``value`` as it must be written into a unit at a place of kind ``syntax``: the one
    way any value that is not phobos's own constant reaches a unit file or udev rule.

    Refused (SystemdError naming ``key``, the setting it came from) where no escaping can
    keep it on its line: a control character (systemd ends a line at a newline, a
    carriage return or a NUL), a trailing backslash in ``TEXT`` (systemd would join the
    next line to it), a quote or backslash in ``UDEV``. Otherwise escaped so that systemd
    reads back exactly ``value``: specifiers (``%`` → ``%%``) everywhere but in comments
    and udev rules; in ``ARG`` also ``$`` → ``$$`` and C-style quoting (Exec lines
    unescape ``\\`` and ``\"``); ``EXECUTABLE`` is quoted for whitespace only (systemd
    expands no variables in it and refuses quotes and backslashes); in ``PATH`` quoting
    (path lists take quotes, not C escapes, and expand no variables) — see
    systemd.service(5) COMMAND LINES and systemd.syntax(7).
    """
    bad = _CONTROL.search(value)
    if bad:
        raise SystemdError(f"{key}: {value!r} contains the control character "
                           f"{bad.group()!r}, which a unit file cannot hold",
                           "remove it from the config (or from the path of the config "
                           "file or program)")
    if syntax is Syntax.COMMENT:
        return value
    if syntax is Syntax.UDEV:
        if '"' in value or "\\" in value:
            raise SystemdError(f"{key}: {value!r} cannot be written into a udev rule",
                               "use letters, digits and dashes")
        return value
    if syntax is Syntax.EXECUTABLE and re.search(r"[\\\"']", value):
        # systemd refuses such a program path ("contains special characters").
        raise SystemdError(f"{key}: {value!r} holds a quote or backslash, which systemd "
                           "refuses in the path of a program",
                           "install phobos under a path without them")
    text = value.replace("%", "%%")
    if syntax is Syntax.TEXT:
        if text.endswith("\\"):
            raise SystemdError(f"{key}: {value!r} ends with a backslash, which systemd "
                               "reads as a line continuation", "remove the backslash")
        return text
    if syntax is Syntax.ARG:
        text = text.replace("$", "$$")
    if text and not _NEEDS_QUOTES[syntax].search(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def timespan(seconds: float) -> str:
    """A systemd time span: ``1h 30min``, ``45s``, ``1d 2h``."""
    whole = round(seconds)
    if whole <= 0:
        return "0"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)
