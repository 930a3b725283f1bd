"""Names of the files and units phobos installs, and systemd's escaping and quoting rules
(``systemd-escape --path``, ``Exec*=`` words, path lists, specifiers, time spans).

Pure string functions: no config, no system access.
"""

from __future__ import annotations

import re

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


def escape_specifiers(text: str) -> str:
    """``text`` with every ``%`` doubled: systemd expands %X specifiers in almost every
    setting, and ``%%`` is a literal ``%``."""
    return text.replace("%", "%%")


def quote_arg(arg: str) -> str:
    """One command-line word for ``Exec*=``: specifiers and ``$`` escaped, quoted when
    it holds whitespace, quotes or backslashes (systemd.service(5), COMMAND LINES)."""
    text = escape_specifiers(arg).replace("$", "$$")
    if text and not re.search(r"[\s\"'\\;]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_path(path: str) -> str:
    """One entry of a path list (``ReadWritePaths=``): like :func:`quote_arg` without
    ``$`` (path lists expand no variables)."""
    text = escape_specifiers(path)
    if text and not re.search(r"[\s\"'\\]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space."""
    return " ".join(text.split())


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
