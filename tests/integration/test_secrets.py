"""Secrets in output, end to end with real `phobos run` processes, a real SMTP server and a
real HTTP server on 127.0.0.1: a job that prints every secret phobos knows (the Borg
passphrase from its file, the SMTP password, the Apprise and ping URLs, another job's
secret_env) leaves none of them in the run log, the history, `phobos log`, stderr, the
mail, the ping body or the web dashboard's pages. And the modes: the state directory and
the history database are private whatever the umask."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import time
from pathlib import Path

import pytest
from notify_servers import SMTP_PASSWORD, SMTP_USER, Cert, http_server, make_cert, smtp_server

from conftest import Sandbox, phobos_env

PASSPHRASE = "borg-pass-phrase-4242"
APPRISE_TOKEN = "hook-token-x7y8z9"
PING_KEY = "ping-key-0011223344"
OTHER_SECRET = "other-jobs-secret-99"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return make_cert(tmp_path_factory.mktemp("tls"))


def _config(sandbox: Sandbox, smtp_port: int, web_port: int, cert: Cert) -> None:
    keys = sandbox.root / "secret"
    keys.mkdir(mode=0o700)
    (keys / "borg.pass").write_text(PASSPHRASE + "\n")
    (keys / "smtp.pass").write_text(SMTP_PASSWORD + "\n")
    everything = " ".join([PASSPHRASE, SMTP_PASSWORD, APPRISE_TOKEN, PING_KEY, OTHER_SECRET,
                           f"json://127.0.0.1:{web_port}/{APPRISE_TOKEN}"])
    sandbox.write(f"""
        [storage]
        root = "{sandbox.root}/backup"
        holding = "{sandbox.root}/backup/holding"

        [repos.main]
        path = "{sandbox.root}/backup/borg"
        passphrase_file = "{keys}/borg.pass"

        [jobs.leaky]
        kind = "command"
        argv = ["sh", "-c", "echo out: {everything}; echo err: {everything} >&2; exit 1"]

        [jobs.other]
        kind = "command"
        argv = ["true"]
        secret_env = {{ API_KEY = "{OTHER_SECRET}" }}

        [notify.email]
        to = ["admin@example.org"]
        host = "127.0.0.1"
        port = {smtp_port}
        security = "starttls"
        ca_file = "{cert.cert}"
        username = "{SMTP_USER}"
        password_file = "{keys}/smtp.pass"

        [notify.apprise]
        urls = ["json://127.0.0.1:{web_port}/{APPRISE_TOKEN}"]

        [notify.ping]
        url = "http://127.0.0.1:{web_port}/{PING_KEY}"
        """)


SECRETS = (PASSPHRASE, SMTP_PASSWORD, APPRISE_TOKEN, PING_KEY, OTHER_SECRET)


def _found(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_a_job_printing_every_secret_leaks_none(sandbox: Sandbox, cert: Cert) -> None:
    with smtp_server(starttls=cert, auth=True) as smtp, http_server() as web:
        _config(sandbox, smtp.port, web.port, cert)
        done = sandbox.phobos("run", "leaky", "--json")
        [mail] = smtp.inbox.wait()
        requests = web.wait(3)  # the Apprise post, the ping start and fail
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert _found(done.stdout + done.stderr) == []
    log = sandbox.phobos("log", str(report["run_id"])).stdout
    assert "out: ********" in log and _found(log) == []
    db = sqlite3.connect(sandbox.state / "history.sqlite")
    try:
        rows = db.execute("SELECT line FROM log UNION ALL SELECT argv FROM steps "
                          "UNION ALL SELECT COALESCE(message, '') || stats FROM runs")
        assert _found("\n".join(str(row[0]) for row in rows)) == []
    finally:
        db.close()
    assert "out: ********" in mail.get_content() and _found(mail.get_content()) == []
    bodies = "\n".join(r.body.decode() for r in requests)
    assert "********" in bodies and _found(bodies.replace(PING_KEY + "/", "")) == []


def test_the_state_is_private_whatever_the_umask(sandbox: Sandbox) -> None:
    sandbox.write("""
        [jobs.slow]
        kind = "command"
        argv = ["sleep", "3"]
        """)
    running = subprocess.Popen(["sh", "-c", 'umask 022; exec "$@"', "sh",
                                *sandbox.argv("run", "slow")], env=phobos_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wal = sandbox.state / "history.sqlite-wal"
        deadline = time.monotonic() + 20
        while not (wal.exists() and wal.with_name("history.sqlite-shm").exists()):
            assert time.monotonic() < deadline, "the run never opened its history"
            time.sleep(0.05)
        # While the run writes: the database and SQLite's own files are the owner's only.
        history = {path.name: oct(stat.S_IMODE(path.stat().st_mode))
                   for path in sandbox.state.glob("history.sqlite*")}
    finally:
        assert running.wait(timeout=60) == 0, running.stderr.read() if running.stderr else ""
        if running.stderr:
            running.stderr.close()
    assert history == {"history.sqlite": "0o600", "history.sqlite-wal": "0o600",
                       "history.sqlite-shm": "0o600"}
    # Others may pass through (the dashboard's SQLite needs it), not list or read.
    assert stat.S_IMODE(sandbox.state.stat().st_mode) == 0o711


def test_an_old_open_state_is_closed(sandbox: Sandbox) -> None:
    sandbox.state.mkdir(mode=0o755)
    os.chmod(sandbox.state, 0o755)
    (sandbox.state / "history.sqlite").touch(mode=0o644)
    os.chmod(sandbox.state / "history.sqlite", 0o644)
    sandbox.write("")
    assert sandbox.phobos("history").returncode == 0
    assert stat.S_IMODE(sandbox.state.stat().st_mode) == 0o711
    assert stat.S_IMODE((sandbox.state / "history.sqlite").stat().st_mode) == 0o600


def test_the_web_token_may_not_be_group_readable(sandbox: Sandbox, tmp_path: Path) -> None:
    token = tmp_path / "web.token"
    token.write_text("t" * 32 + "\n")
    token.chmod(0o640)
    sandbox.write(f'[web]\ntoken_file = "{token}"\n')
    done = sandbox.phobos("web", "--listen", "127.0.0.1:1")
    assert done.returncode == 2
    assert "readable by its group or every user" in done.stderr and "chmod 0600" in done.stderr
