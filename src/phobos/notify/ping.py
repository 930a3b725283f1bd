"""Dead man's switch pings in the healthchecks.io protocol.

A job's check URL is ``[notify.ping] jobs.NAME`` or, failing that, ``url/NAME`` (a
healthchecks.io slug URL). A run pings ``URL/start`` when it starts, ``URL`` when it succeeds
(or ends with warnings), ``URL/fail`` when it fails or is interrupted, and ``URL/log`` when it
is skipped (which leaves the check's state alone: the outside monitor notices a job that
stopped running by itself — that is the point). Finishing pings POST the log tail as their
body when ``send_log`` is on. Every ping of one run carries the same ``rid``, so the monitor
pairs start and end even when runs overlap.

Check URLs hold the check's secret (its UUID or the project's ping key): messages show only
the scheme, host and the kind of ping.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from phobos import __version__
from phobos.config.tables import PingConfig
from phobos.core.model import Outcome
from phobos.errors import ConfigError
from phobos.notify.base import EventKind, RunEvent
from phobos.notify.channel import render
from phobos.notify.errors import NotifyFailed

BODY_LIMIT = 100_000  # bytes; healthchecks.io keeps the first 100 kB of a ping body

_FINISH_SIGNAL = {
    Outcome.SUCCESS: "",
    Outcome.WARNING: "",
    Outcome.FAILED: "fail",
    Outcome.INTERRUPTED: "fail",
    Outcome.SKIPPED: "log",
}


@dataclass(frozen=True, slots=True)
class PingNotifier:
    """Pings the check of each run's job, as the module docstring describes."""

    config: PingConfig
    name: str = "ping"

    @classmethod
    def from_config(cls, config: PingConfig) -> PingNotifier:
        """The notifier; ConfigError if ``config`` names no URL at all."""
        if config.url is None and not config.jobs:
            raise ConfigError("notify.ping: set `url` (every job) or `jobs` (some jobs)",
                              hint='e.g. url = "https://hc-ping.com/PING_KEY"')
        return cls(config)

    def check_url(self, job: str) -> str | None:
        """The check URL of ``job``, or None if it has none."""
        if job in self.config.jobs:
            return self.config.jobs[job]
        if self.config.url is not None:
            return f"{self.config.url.rstrip('/')}/{quote(job, safe='')}"
        return None

    def notify(self, event: RunEvent) -> None:
        """Ping for a run's start or end; other events (overdue) are the monitor's own job."""
        base = self.check_url(event.job)
        if base is None or event.run_id is None:
            return
        if event.kind is EventKind.STARTED:
            signal, body = "start", None
        elif event.kind is EventKind.FINISHED and event.outcome in _FINISH_SIGNAL:
            signal = _FINISH_SIGNAL[event.outcome]
            body = _body(event) if self.config.send_log or signal == "log" else None
        else:
            return
        ping(base, signal, body, float(self.config.timeout), rid=run_rid(event))

    def test(self, jobs: Iterable[str]) -> str:
        """POST a test line to ``URL/log`` of each job's check (it changes no check's state).
        Returns what was done; NotifyFailed names the jobs whose ping failed."""
        targets = {job: url for job in sorted(jobs) if (url := self.check_url(job))}
        failed = []
        for job, url in targets.items():
            try:
                ping(url, "log", b"phobos notify test\n", float(self.config.timeout))
            except NotifyFailed as exc:
                failed.append(f"{job}: {exc.message}")
        if failed:
            raise NotifyFailed(f"{len(failed)} of {len(targets)} checks failed: "
                               + "; ".join(failed))
        if not targets:
            return "no job has a check URL (only `jobs` entries naming no configured job)"
        return f"logged a test line to the checks of {', '.join(targets)}"


def run_rid(event: RunEvent) -> str:
    """A stable UUID for one run (healthchecks.io's ``rid``)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"phobos:{event.host}:{event.job}:{event.run_id}"))


def ping_url(base: str, signal: str, rid: str | None = None) -> str:
    """``base`` + ``/signal`` (none for success) + ``?rid=`` (kept with an existing query)."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/") + (f"/{signal}" if signal else "")
    query = parts.query
    if rid is not None:
        query = "&".join(q for q in (query, urlencode({"rid": rid})) if q)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


def shown_url(url: str, signal: str) -> str:
    """What a message may say about a ping: scheme, host, the signal — never the secret path."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…" + (f"/{signal}" if signal else "")


def _body(event: RunEvent) -> bytes:
    return render(event).body.encode("utf-8", "replace")[:BODY_LIMIT]


def ping(base: str, signal: str, body: bytes | None, timeout: float, *,
         rid: str | None = None) -> None:
    """GET the ``signal`` URL of check ``base`` (POST ``body`` if given); NotifyFailed unless
    the answer is 2xx."""
    import http.client
    import urllib.error
    import urllib.request

    shown = shown_url(base, signal)
    request = urllib.request.Request(
        ping_url(base, signal, rid), data=body, method="GET" if body is None else "POST",
        headers={"User-Agent": f"phobos/{__version__}",
                 "Content-Type": "text/plain; charset=utf-8"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(4096)
    except urllib.error.HTTPError as exc:
        raise NotifyFailed(f"ping {shown} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise NotifyFailed(f"ping {shown} failed: {_reason(exc.reason)}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise NotifyFailed(f"ping {shown} failed: {_reason(exc)}") from None


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__
