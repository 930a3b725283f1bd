"""The dashboard as an ASGI application (Starlette routes, Jinja2 templates).

Every request opens the history read-only (:mod:`phobos.web.readonly`), gathers its
page (:mod:`phobos.web.views`) and closes it again; only GET and HEAD exist, so
nothing a browser sends can change anything. :class:`Guard` wraps the whole app: with
a token it admits a request carrying it (``Authorization: Bearer``, the cookie set by
opening ``/?token=…`` once, or that query itself), compared in constant time; without
one (loopback only) it admits only requests addressed to a loopback name, so a web
page elsewhere cannot read the dashboard through DNS rebinding. It also adds the
security headers (a strict Content-Security-Policy: no script at all).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import sqlite3
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from phobos.config.model import Config
from phobos.core.history import History
from phobos.core.model import format_duration
from phobos.errors import PhobosError, UsageError
from phobos.web import charts, metrics, views
from phobos.web.address import is_loopback
from phobos.web.readonly import open_history

TEMPLATES = Path(__file__).parent / "templates"
COOKIE = "phobos_token"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _now() -> datetime:
    return datetime.now().astimezone()


# --- templates --------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    return "-" if ts is None else f"{datetime.fromtimestamp(ts):%Y-%m-%d %H:%M}"


def _relative(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    delta = ts - now
    text = format_duration(abs(delta)).replace(".0s", "s")
    if abs(delta) < 60:
        return "just now" if delta <= 0 else "in under a minute"
    return f"in {text}" if delta > 0 else f"{text} ago"


def _share(running: dict[str, Any]) -> float | None:
    """The fraction done of a running entry, for a <progress> bar (None: unknown)."""
    from phobos.core.progress import Progress

    told = running.get("progress")
    return None if told is None else Progress.from_json(told).share


def environment() -> Environment:
    from phobos.schedule.running import eta_text, progress_text

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(share=_share, progress_text=progress_text, eta_text=eta_text)
    env.filters.update(when=_when, relative=_relative, duration=format_duration,
                       clock=lambda ts: f"{datetime.fromtimestamp(ts):%H:%M:%S}",
                       bytes=charts.human_bytes, pct=lambda v: "-" if v is None
                       else f"{100 * v:.1f}%")
    env.globals.update(charts=charts, svg=lambda text: Markup(text))
    return env


class Pages:
    """The routes' work: each opens the history, renders one template, closes it."""

    def __init__(self, config: Config, *, clock: Callable[[], datetime] = _now) -> None:
        self.config = config
        self.clock = clock
        self.env = environment()
        self.css = (TEMPLATES / "style.css").read_text(encoding="utf-8")
        digest = base64.b64encode(hashlib.sha256(self.css.encode()).digest()).decode()
        self._problem = threading.local()  # the history's problem, per request thread
        self.csp = (f"default-src 'none'; style-src 'sha256-{digest}'; img-src 'self' data:; "
                    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

    def read(self, work: Callable[[History], Any]) -> Any:
        """``work(history)`` on a fresh read-only connection. When the history cannot be
        read (damaged, unreadable), on an empty one, and the page says "history
        unavailable: ..." (see :meth:`render`) instead of failing."""
        self._problem.text = None
        try:
            return self._read(work)
        except UsageError:
            raise  # an unknown job or run: not the history's fault
        except (PhobosError, sqlite3.DatabaseError) as exc:
            hint = f" ({exc.hint})" if isinstance(exc, PhobosError) and exc.hint else ""
            self._problem.text = f"history unavailable: {exc}{hint}"
        empty = History.in_memory()
        try:
            return work(empty)
        finally:
            empty.db.close()

    def _read(self, work: Callable[[History], Any]) -> Any:
        """``work(history)`` on a fresh read-only connection, retried once: a read of
        the immutable main file can race a checkpoint of a run that just ended."""
        for attempt in (1, 2):
            history = open_history(self.config.paths.state)
            try:
                return work(history)
            except sqlite3.DatabaseError:
                if attempt == 2:
                    raise
            finally:
                history.db.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def render(self, template: str, **context: Any) -> str:
        now = self.clock()
        problem = getattr(self._problem, "text", None)
        return self.env.get_template(template).render(
            css=Markup(self.css), now=now, ts=now.timestamp(), config=self.config,
            history_problem=problem, **context)

    # Each page returns its HTML; the route wrapper turns errors into pages.

    def overview(self, request: Request) -> str:
        data = self.read(lambda h: views.overview(self.config, h, self.clock()))
        return self.render("overview.html", page="overview", o=data, refresh=data.refresh)

    def timeline(self, request: Request) -> str:
        from phobos.schedule.picture import render_svg

        data = self.read(lambda h: views.timeline(self.config, h, self.clock()))
        return self.render("timeline.html", page="timeline", t=data,
                           schedule_svg=Markup(render_svg(data.sim, self.config)),
                           week_svg=Markup(charts.week_chart(data.past, data.past_start,
                                                             data.now, data.plan_jobs)),
                           refresh=data.refresh)

    def job(self, request: Request) -> str:
        name = request.path_params["name"]
        limit = _int(request.query_params.get("runs"), views.JOB_RUNS)
        data = self.read(lambda h: views.job_page(self.config, h, name, self.clock(), limit))
        return self.render("job.html", page="job", j=data, refresh=data.refresh,
                           durations=Markup(charts.duration_chart(
                               data.runs[:views.CHART_RUNS])))

    def run(self, request: Request) -> str:
        run_id = request.path_params["run_id"]
        data = self.read(lambda h: views.run_page(h, run_id))
        stats = json.dumps(data.run.stats, indent=2, sort_keys=True)
        return self.render("run.html", page="run", r=data, stats=stats, refresh=data.refresh)

    def drives(self, request: Request) -> str:
        data = views.drives_page(self.config)
        return self.render("drives.html", page="drives", d=data, refresh=views.IDLE_REFRESH)

    def metrics(self, request: Request) -> str:
        text: str = self.read(lambda h: metrics.render(self.config, h, self.clock()))
        return text

    def status(self, request: Request) -> str:
        entries = self.read(lambda h: views.status(self.config, h, self.clock()))
        problem = getattr(self._problem, "text", None)
        # The same bytes `phobos status --json` prints.
        return json.dumps({"jobs": entries, **({"history_problem": problem} if problem else {})},
                          indent=2, sort_keys=True) + "\n"


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _page(pages: Pages, method: Callable[[Request], str],
          kind: type[Response] = HTMLResponse, media_type: str | None = None
          ) -> Callable[[Request], Response]:
    @functools.wraps(method)
    def endpoint(request: Request) -> Response:
        try:
            body = method(request)
        except UsageError as exc:  # an unknown job or run
            return HTMLResponse(pages.render("error.html", page="error", title="Not found",
                                             error=exc), status_code=404)
        except PhobosError as exc:
            return HTMLResponse(pages.render("error.html", page="error",
                                             title="Cannot read the state", error=exc),
                                status_code=503)
        if media_type is not None:
            return kind(body, media_type=media_type)
        return kind(body)

    return endpoint


def create_app(config: Config, *, token: str | None,
               clock: Callable[[], datetime] = _now) -> ASGIApp:
    """The dashboard for ``config``; ``token`` (None: loopback only) guards every
    request."""
    pages = Pages(config, clock=clock)
    routes = [
        Route("/", _page(pages, pages.overview), methods=["GET"]),
        Route("/timeline", _page(pages, pages.timeline), methods=["GET"]),
        Route("/drives", _page(pages, pages.drives), methods=["GET"]),
        Route("/jobs/{name}", _page(pages, pages.job), methods=["GET"]),
        Route("/runs/{run_id:int}", _page(pages, pages.run), methods=["GET"]),
        Route("/metrics", _page(pages, pages.metrics, Response, metrics.CONTENT_TYPE),
              methods=["GET"]),
        Route("/api/status", _page(pages, pages.status, Response, "application/json"),
              methods=["GET"]),
    ]
    return Guard(Starlette(routes=routes), token=token, csp=pages.csp)


# --- the guard ------------------------------------------------------------------------------


class Guard:
    """Token (or loopback Host) check on every request, and the security headers."""

    def __init__(self, app: ASGIApp, *, token: str | None, csp: str) -> None:
        self.app = app
        self.digest = None if token is None else _digest(token)
        self.cookie = None if token is None else hmac.new(
            token.encode(), b"phobos web cookie", hashlib.sha256).hexdigest()
        self.headers = [(b"content-security-policy", csp.encode()),
                        (b"x-content-type-options", b"nosniff"),
                        (b"referrer-policy", b"no-referrer"),
                        (b"x-frame-options", b"DENY"),
                        (b"cache-control", b"no-store")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        refusal = self.refusal(scope)
        await (refusal or self.app)(scope, receive, send_with_headers)

    def refusal(self, scope: Scope) -> Response | None:
        """The response refusing this request, or None to let it through."""
        headers = Headers(scope=scope)
        if self.digest is None:
            if _loopback_host(headers.get("host")):
                return None
            return PlainTextResponse("phobos web answers only to localhost without a token "
                                     "([web] token_file)\n", status_code=403)
        query = QueryParams(scope.get("query_string", b"").decode("latin-1"))
        offered = query.get("token")
        if offered is not None:
            return self._token_in_query(scope, query, offered)
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._matches(value.strip()):
            return None
        cookie = HTTPConnection(scope).cookies.get(COOKIE, "")
        if self.cookie is not None and hmac.compare_digest(cookie.encode(), self.cookie.encode()):
            return None
        return _unauthorized()

    def _matches(self, offered: str) -> bool:
        assert self.digest is not None
        return hmac.compare_digest(_digest(offered), self.digest)

    def _token_in_query(self, scope: Scope, query: QueryParams, offered: str) -> Response:
        """``?token=`` from a link: set the cookie and redirect to the same page without
        the token in its address (history, bookmarks, Referer)."""
        if not self._matches(offered):
            return _unauthorized()
        rest = urlencode([(k, v) for k, v in query.multi_items() if k != "token"])
        location = scope.get("path", "/") + (f"?{rest}" if rest else "")
        response = RedirectResponse(location, status_code=303)
        assert self.cookie is not None
        response.set_cookie(COOKIE, self.cookie, httponly=True, samesite="strict",
                            max_age=400 * 86400, path="/")
        return response


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def _unauthorized() -> Response:
    return PlainTextResponse(
        "phobos web needs its token: open the dashboard once as /?token=TOKEN (the token "
        "is in the file [web] token_file names), or send 'Authorization: Bearer TOKEN'\n",
        status_code=401, headers={"WWW-Authenticate": 'Bearer realm="phobos"'})


def _loopback_host(host: str | None) -> bool:
    if not host:
        return True  # HTTP/1.0 without Host: only a local client would bother
    name = host.strip()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return is_loopback(name)
