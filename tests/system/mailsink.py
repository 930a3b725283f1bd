"""An SMTP server on the host's 127.0.0.1 that keeps what it receives, for the system
tests' failure mails (the nspawn container shares the host's network; the QEMU guest
reaches it through QEMU's guestfwd)."""

from __future__ import annotations

import contextlib
import email
import email.policy
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.content.replace(b"\r\n", b"\n")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def about(self, unit: str) -> list[EmailMessage]:
        """The messages whose subject names ``unit``."""
        return [m for m in self.messages if unit in str(m["Subject"])]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def smtp_sink() -> Iterator[tuple[Inbox, int]]:
    """A running server and the port it listens on (aiosmtpd cannot take port 0)."""
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()
