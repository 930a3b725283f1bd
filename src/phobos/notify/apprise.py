"""Apprise: one config line per service (ntfy, Gotify, Matrix, Telegram, ...).

The Apprise library is imported only when a note is sent, so a host without
``[notify.apprise]`` never pays for it. Each URL is sent to on its own, so a failure names
the URL that failed — by its place in the list and its service, never its tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from phobos.config.secrets import url_parts
from phobos.config.tables import AppriseConfig
from phobos.core.proc import Redactor
from phobos.notify.channel import Note
from phobos.notify.errors import NotifyFailed

if TYPE_CHECKING:
    from types import ModuleType


@dataclass(frozen=True, slots=True)
class AppriseChannel:
    """Sends notes to every URL of ``config``; NotifyFailed names the URLs that failed."""

    config: AppriseConfig
    name: str = "apprise"

    @property
    def events(self) -> tuple[str, ...]:
        return self.config.events

    def send(self, note: Note) -> str:
        """Deliver ``note`` to each URL; raises NotifyFailed if any of them failed."""
        apprise = _library()
        failures = [problem for index, url in enumerate(self.config.urls, start=1)
                    if (problem := _send_one(apprise, index, url, note))]
        if failures:
            count = len(self.config.urls)
            raise NotifyFailed(f"{len(failures)} of {count} Apprise URL"
                               f"{'s' if count != 1 else ''} failed: " + "; ".join(failures),
                               hint="`phobos notify test` tries again; the URL syntax of each "
                               "service is in Apprise's documentation")
        return f"sent to {len(self.config.urls)} URL{'s' if len(self.config.urls) != 1 else ''}"


def _library() -> ModuleType:
    try:
        import apprise
    except ImportError as exc:
        raise NotifyFailed("the Apprise library is not installed",
                           hint="pip install 'apprise>=1.7' into phobos's environment") from exc
    return apprise


def _send_one(apprise: Any, index: int, url: str, note: Note) -> str | None:
    """Send ``note`` to one URL; None on success, else why not (secrets masked)."""
    redact = Redactor([url, *url_parts(url)])
    client = apprise.Apprise()
    # Apprise reports through logging; capture it, so nothing reaches stderr unredacted.
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
        if not client.add(url):
            return f"URL #{index} is not a valid Apprise URL"
        ok = client.notify(body=note.body, title=note.subject, notify_type=note.severity,
                           body_format="text")
    if ok:
        return None
    said = [redact(line) for line in captured.getvalue().splitlines() if line.strip()]
    return f"{shown_url(index, url)}: {said[-1] if said else 'not delivered'}"


def shown_url(index: int, url: str) -> str:
    """``#2 json://…``: which URL, by its place and service only. Apprise's "privacy"
    form is not enough: it masks passwords but keeps tokens that sit in the path
    (``json://host/TOKEN``) or the host (``tgram://BOT_TOKEN/...``)."""
    scheme = url.partition("://")[0]
    return f"#{index} {scheme}://…" if scheme.isalnum() else f"#{index}"
