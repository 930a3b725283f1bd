"""Real servers on 127.0.0.1 for the notification tests: SMTP (aiosmtpd, optionally with
STARTTLS, implicit TLS and AUTH) and a recording HTTP server (Apprise's json:// target and
healthchecks.io-style pings)."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

SMTP_USER = "phobos"
SMTP_PASSWORD = "correct-horse-battery"


def free_port() -> int:
    """A TCP port nobody listens on right now (aiosmtpd cannot take port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_cert(directory: Path) -> Cert:
    """A self-signed certificate for 127.0.0.1 (made with the openssl CLI)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return Cert(cert=cert, key=key)


@dataclass
class Inbox:
    """The aiosmtpd handler: keeps every message it accepted."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, bool]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = (envelope.original_content or envelope.content).replace(b"\r\n", b"\n")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode()
              and auth_data.password == SMTP_PASSWORD.encode())
        self.logins.append((mechanism, ok))
        # handled=False: aiosmtpd answers 535 itself; anything else makes the client hang.
        return AuthResult(success=True) if ok else AuthResult(success=False, handled=False)

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages


@dataclass
class SmtpServer:
    port: int
    inbox: Inbox
    controller: Controller


@contextmanager
def smtp_server(*, starttls: Cert | None = None, implicit_tls: Cert | None = None,
                auth: bool = False) -> Iterator[SmtpServer]:
    """An aiosmtpd server on 127.0.0.1 at a free port; stopped on exit."""
    inbox = Inbox()
    port = free_port()
    kwargs: dict[str, Any] = {}
    if starttls is not None:
        kwargs.update(tls_context=starttls.server_context(), require_starttls=True)
    if implicit_tls is not None:
        kwargs.update(ssl_context=implicit_tls.server_context())
    if auth:
        # aiosmtpd counts only STARTTLS as TLS for auth_require_tls: with implicit TLS it
        # would not offer AUTH at all, though the connection is encrypted from the start.
        kwargs.update(authenticator=inbox.authenticate,
                      auth_require_tls=implicit_tls is None)
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield SmtpServer(port=port, inbox=inbox, controller=controller)
    finally:
        controller.stop()


# --------------------------------------------------------------------------------------------
# HTTP


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpServer:
    port: int
    requests: list[Request]
    status: list[int]  # the status every answer has; a list so tests can change it

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, count: int, timeout: float = 10.0) -> list[Request]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.requests


@contextmanager
def http_server(status: int = 200) -> Iterator[HttpServer]:
    """A threaded HTTP server on 127.0.0.1 that records each request and answers ``status``."""
    requests: list[Request] = []
    statuses = [status]

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            requests.append(Request(method=self.command, path=parts.path,
                                    query=parse_qs(parts.query), headers=dict(self.headers),
                                    body=body))
            self.send_response(statuses[0])
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        do_GET = do_POST = do_HEAD = _record

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpServer(port=server.server_address[1], requests=requests, status=statuses)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])
