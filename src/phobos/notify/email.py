"""E-mail: through an SMTP server (plain, STARTTLS or TLS, optional login) or the local MTA.

The SMTP password comes from ``password_file`` or the output of ``password_command``; it goes
to the server through smtplib only — never into argv, a log line or an error message.
Sendmail gets the message on its stdin (``sendmail -t`` takes the recipients from the
headers) through :func:`phobos.core.proc.run`, the one module that starts processes.
"""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from phobos.config.tables import EmailConfig
from phobos.core import proc
from phobos.core.model import Outcome
from phobos.errors import ConfigError, PhobosError
from phobos.notify.channel import Note
from phobos.notify.errors import NotifyFailed

if TYPE_CHECKING:
    import smtplib
    from email.message import EmailMessage

_PASSWORD_HINT = "check [notify.email] password_file / password_command"


def config_problems(config: EmailConfig) -> list[str]:
    """What keeps ``config`` from working, beyond what the config loader checks per key."""
    problems = []
    has_password = config.password_file is not None or config.password_command is not None
    if config.password_file is not None and config.password_command is not None:
        problems.append("set password_file or password_command, not both")
    if config.username is not None and not has_password:
        problems.append("username is set: add password_file or password_command")
    if has_password and config.username is None:
        problems.append("a password is set without a username")
    if config.username is not None and config.security == "none":
        problems.append("refusing to send the SMTP password unencrypted: "
                        "set security = \"starttls\" or \"tls\"")
    if config.password_command is not None and not _split(config.password_command):
        problems.append("password_command is empty")
    return problems if config.transport == "smtp" else []


def _split(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return []


@dataclass(frozen=True, slots=True)
class EmailChannel:
    """Sends notes as e-mail as ``config`` says. Construct with :meth:`from_config`."""

    config: EmailConfig
    name: str = "email"

    @classmethod
    def from_config(cls, config: EmailConfig) -> EmailChannel:
        """The channel; ConfigError naming every problem of ``config``."""
        problems = config_problems(config)
        if problems:
            raise ConfigError("notify.email: " + "; ".join(problems),
                              hint="fix [notify.email] and try `phobos notify test`")
        return cls(config)

    @property
    def events(self) -> tuple[str, ...]:
        return self.config.events

    def send(self, note: Note) -> str:
        """Deliver ``note``; NotifyFailed says why not. Returns where it went."""
        message = build_message(self.config, note)
        if self.config.transport == "sendmail":
            return send_sendmail(self.config, message)
        return send_smtp(self.config, message)


def build_message(config: EmailConfig, note: Note) -> EmailMessage:
    """The e-mail for ``note``: From, To, Subject, Date, Message-ID, Auto-Submitted."""
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    host = socket.gethostname()
    message = EmailMessage()
    message["From"] = config.sender or f"phobos@{host}"
    message["To"] = ", ".join(config.to)
    message["Subject"] = note.subject
    message["Date"] = formatdate(localtime=True)
    # An explicit domain: the default asks DNS for our FQDN, which can hang offline.
    message["Message-ID"] = make_msgid(domain=host)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to this
    for key, value in note.headers.items():
        message[key] = value
    message.set_content(note.body)
    return message


# --------------------------------------------------------------------------------------------
# SMTP


def send_smtp(config: EmailConfig, message: EmailMessage) -> str:
    """Send over SMTP; NotifyFailed with the server's reason (the password redacted)."""
    import smtplib

    where = f"{config.host}:{config.port}"
    password = smtp_password(config) if config.username is not None else None
    redact = proc.Redactor([password] if password else [])
    try:
        with _connect(config) as smtp:
            if config.username is not None and password is not None:
                smtp.login(config.username, password)
            refused = smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise NotifyFailed(f"{where} refused the login of {config.username!r}: "
                           f"{redact(_reply(exc))}", hint=_PASSWORD_HINT) from None
    except (smtplib.SMTPException, OSError) as exc:
        raise NotifyFailed(f"cannot send mail via {where}: {redact(_reason(exc))}",
                           hint="check [notify.email] host, port and security; "
                           "`phobos notify test` tries again") from None
    sent = ", ".join(config.to)
    if refused:
        raise NotifyFailed(f"{where} refused {', '.join(sorted(refused))} (sent to the others)")
    return f"sent to {sent} via {where} ({config.security})"


def _connect(config: EmailConfig) -> smtplib.SMTP:
    import smtplib
    import ssl

    context = ssl.create_default_context(
        cafile=None if config.ca_file is None else str(config.ca_file))
    # Our own name for EHLO: smtplib would otherwise ask DNS for the FQDN.
    local = socket.gethostname()
    timeout = float(config.timeout)
    if config.security == "tls":
        return smtplib.SMTP_SSL(config.host, config.port, local_hostname=local,
                                timeout=timeout, context=context)
    smtp = smtplib.SMTP(config.host, config.port, local_hostname=local, timeout=timeout)
    if config.security == "starttls":
        try:
            smtp.starttls(context=context)
        except BaseException:
            smtp.close()
            raise
    return smtp


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(
        exc.smtp_error, bytes) else str(exc.smtp_error)
    return f"{exc.smtp_code} {text}"


def _reason(exc: BaseException) -> str:
    import smtplib

    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply(exc)
    if isinstance(exc, smtplib.SMTPNotSupportedError | smtplib.SMTPServerDisconnected):
        return str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def smtp_password(config: EmailConfig) -> str:
    """The SMTP password from ``password_file`` or ``password_command`` (trailing newlines
    dropped). NotifyFailed when it cannot be had; the message never contains it."""
    if config.password_file is not None:
        try:
            return config.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise NotifyFailed(f"cannot read the SMTP password from {config.password_file}: "
                               f"{reason}", hint=_PASSWORD_HINT) from None
    argv = _split(config.password_command or "")
    try:
        result = proc.run(argv, capture=True, check=False, timeout=float(config.timeout))
    except PhobosError as exc:
        raise NotifyFailed(f"password_command: {exc.message}", hint=_PASSWORD_HINT) from None
    if result.outcome is Outcome.FAILED:
        raise NotifyFailed(f"password_command: {proc.failure(result).message}",
                           hint=_PASSWORD_HINT)
    return result.stdout.rstrip("\r\n")


# --------------------------------------------------------------------------------------------
# sendmail


def send_sendmail(config: EmailConfig, message: EmailMessage) -> str:
    """Hand the message to the local MTA; NotifyFailed if it is missing or refuses."""
    argv = config.sendmail
    try:
        result = proc.run(argv, stdin_data=message.as_bytes(), check=False,
                          timeout=float(config.timeout))
    except PhobosError as exc:
        raise NotifyFailed(f"cannot send mail: {exc.message}",
                           hint="install a mail transfer agent (e.g. exim4 or nullmailer), "
                           "or set transport = \"smtp\" in [notify.email]") from None
    if result.outcome is Outcome.FAILED:
        raise NotifyFailed(f"cannot send mail: {proc.failure(result).message}")
    return f"handed to {argv[0]} for {', '.join(config.to)}"
