"""`phobos web`: serve the read-only dashboard (see :mod:`phobos.web`).

Starlette, Jinja2 and uvicorn are imported only here, when the verb runs. Binding to
anything but loopback needs ``[web] token_file``; without it the server refuses to
start. A configured token is required on every request, whatever the address.
"""

from __future__ import annotations

import argparse
import os
import socket
import stat
import sys
from pathlib import Path
from typing import Any

from phobos.cli.common import verb
from phobos.errors import ExitCode, PhobosError, UsageError

MIN_TOKEN = 16


def register(verbs: Any) -> None:
    """Add the `web` verb to the top-level parser's ``verbs``."""
    sub = verb(verbs, "web", "serve the read-only web dashboard (status, timeline, drives, "
               "history, /metrics)", cmd_web)
    sub.add_argument("--listen", metavar="HOST:PORT",
                     help="address to listen on (default: [web] listen, 127.0.0.1:8470); "
                     "anything but loopback needs [web] token_file")


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace ignored). UsageError if it is
    missing, unreadable, too short, or open to its group or other users."""
    try:
        text = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"[web] token_file {path}: cannot read it: "
                         f"{getattr(exc, 'strerror', None) or exc}",
                         "create it with a long random token, e.g. "
                         f"`umask 077; openssl rand -hex 32 > {path}`") from None
    if len(text) < MIN_TOKEN:
        raise UsageError(f"[web] token_file {path}: the token is {len(text)} characters "
                         f"long; use at least {MIN_TOKEN}",
                         f"e.g. `umask 077; openssl rand -hex 32 > {path}`")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"[web] token_file {path} is readable by its group or every user",
                         f"`chmod 0600 {path}`")
    return text


def cmd_web(args: argparse.Namespace) -> ExitCode:
    from phobos.config.load import config_path, load
    from phobos.config.tables import WebConfig
    from phobos.web.address import parse_listen

    config = load(config_path(args.config))
    web = config.web or WebConfig()
    try:
        listen = parse_listen(args.listen or web.listen)
    except ValueError as exc:
        raise UsageError(f"--listen {exc}") from None
    token = read_token(web.token_file) if web.token_file is not None else None
    if token is None and not listen.loopback:
        raise UsageError(
            f"refusing to serve the dashboard on {listen} without a token: anyone who "
            "can reach that address could read every job's logs",
            "set [web] token_file to a file holding a long random token (`umask 077; "
            "openssl rand -hex 32 > /etc/phobos/web.token`), or listen on 127.0.0.1 and "
            "reach it through an SSH tunnel")
    sock = _bind(str(listen), listen.host, listen.port)
    return _serve(config, token, sock, str(listen))


def _bind(shown: str, host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise PhobosError(f"cannot listen on {shown}: {exc.strerror or exc}",
                          "pick another address with --listen or [web] listen") from None
    sock.set_inheritable(False)
    return sock


def _serve(config: Any, token: str | None, sock: socket.socket, shown: str) -> ExitCode:
    import uvicorn

    from phobos.web.app import create_app

    app = create_app(config, token=token)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="off", server_header=False,
                                           proxy_headers=False))
    guard = "a token is required" if token else "loopback only, no token"
    print(f"phobos web: serving {config.source} read-only on http://{shown}/ "
          f"({guard}); pid {os.getpid()}", file=sys.stderr, flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return ExitCode.OK
