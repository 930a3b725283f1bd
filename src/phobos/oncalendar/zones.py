"""Time zones as systemd and glibc see them: the zone names systemd accepts in an expression,
the local zone, and the local zone's abbreviations.

Known limit: a trailing abbreviation of the *local* zone (``CET``) is matched against glibc's
``tzname``, which glibc rewrites as a side effect of conversions; here the names come from the
zone's current rules (:func:`zone_abbreviations`), as glibc has them for zones with DST.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

ZONEINFO_DIR = "/usr/share/zoneinfo"


@lru_cache(maxsize=64)
def load_zone(name: str) -> tzinfo | None:
    """The zone if systemd's ``timezone_is_valid()`` accepts ``name`` (a sane relative path
    to a TZif file under /usr/share/zoneinfo, or "UTC"), else None."""
    if name == "UTC":
        return UTC
    if not name or name[0] == "/" or name[-1] == "/" or "//" in name:
        return None
    if not all(ch.isascii() and (ch.isalnum() or ch in "-_+/") for ch in name):
        return None
    try:  # load the very file systemd checks, never a bundled tzdata package
        with open(os.path.join(ZONEINFO_DIR, name), "rb") as tzfile:
            if tzfile.read(4) != b"TZif":
                return None
            tzfile.seek(0)
            return ZoneInfo.from_file(tzfile, key=name)
    except (OSError, ValueError):  # missing, a directory, unreadable: invalid for systemd too
        return None


def system_timezone() -> tzinfo:
    """The local zone as glibc picks it: ``$TZ``, else ``/etc/localtime``, else UTC.

    POSIX rule strings in ``$TZ`` (``CET-1CEST,...``) are not supported and yield UTC.
    """
    spec = os.environ.get("TZ")
    name = "/etc/localtime" if spec is None else spec.removeprefix(":")
    try:
        if name.startswith("/"):
            with open(name, "rb") as tzfile:
                return ZoneInfo.from_file(tzfile, key=name)
        return ZoneInfo(name) if name else UTC
    except (OSError, ValueError):
        return UTC


def _zone_samples(zone: tzinfo) -> list[datetime]:
    year = datetime.now(UTC).year
    return [datetime(year, month, 1, 12, tzinfo=UTC).astimezone(zone) for month in (1, 7)]


def zone_abbreviations(zone: tzinfo) -> tuple[str, str]:
    """glibc's ``tzname`` pair (standard, daylight) for ``zone`` under its current rules.

    A zone without daylight saving time repeats its standard name, as glibc does.
    """
    names = {bool(moment.dst()): moment.tzname() or "" for moment in _zone_samples(zone)}
    standard = names.get(False) or names.get(True, "")
    return standard, names.get(True, standard)


def zone_is_utc(zone: tzinfo) -> bool:
    """systemd-analyze's ``in_utc_timezone()``: no offset from UTC and no daylight saving."""
    return all(m.utcoffset() == timedelta(0) and not m.dst() for m in _zone_samples(zone))
