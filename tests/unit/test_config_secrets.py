"""The one registry of secrets (config/secrets.py): which files hold secrets, which values
are known in advance and redacted everywhere, and which URL parts count as tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from phobos.config.load import parse
from phobos.config.secrets import redactor, secret_files, secret_values, url_parts


def _config(tmp_path: Path) -> object:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "borg.pass").write_text("borg-passphrase-1\n")
    (tmp_path / "cat.pass").write_text("catted-passphrase-2\n")
    (keys / "smtp.pass").write_text("smtp-password-3\n")
    (keys / "web.token").write_text("web-token-4444444444\n")
    (keys / "ext-a.key").write_bytes(bytes(range(256)))  # a keyfile: not text
    return parse({
        "paths": {"keys": str(keys), "state": str(tmp_path / "state")},
        "repos": {"main": {"path": "/backup/borg", "passphrase_file": f"{keys}/borg.pass"},
                  "usb": {"path": "/mnt/usb/borg", "passcommand": f"cat {tmp_path}/cat.pass"}},
        "drives": {"ext-a": {"luks_uuid": "2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11"}},
        "jobs": {"tidy": {"kind": "command", "argv": ["/bin/true"],
                          "secret_env": {"TOKEN": "job-secret-5"}}},
        "notify": {"email": {"to": ["root"], "username": "u", "security": "tls",
                             "password_file": f"{keys}/smtp.pass"},
                   "apprise": {"urls": ["tgram://123456789:AAbbCCddEEff/42"]},
                   "ping": {"url": "https://hc-ping.com/ping-key-666666"}},
        "web": {"token_file": f"{keys}/web.token"},
    }, tmp_path / "phobos.toml")


def test_every_secret_the_config_knows(tmp_path: Path) -> None:
    config = _config(tmp_path)
    values = set(secret_values(config))  # type: ignore[arg-type]
    for secret in ("borg-passphrase-1\n", "catted-passphrase-2\n", "smtp-password-3\n",
                   "web-token-4444444444\n", "job-secret-5", "ping-key-666666",
                   "tgram://123456789:AAbbCCddEEff/42", "123456789:AAbbCCddEEff",
                   "https://hc-ping.com/ping-key-666666"):
        assert secret in values, secret
    labels = [s.label for s in secret_files(config)]  # type: ignore[arg-type]
    assert labels == ["repo main passphrase", "repo usb passcommand", "drive ext-a keyfile",
                      "drive ext-a header", "email password", "web token", "pull key"]


def test_the_redactor_masks_them_in_any_text(tmp_path: Path) -> None:
    redact = redactor(_config(tmp_path))  # type: ignore[arg-type]
    line = ("pass borg-passphrase-1 smtp smtp-password-3 url "
            "https://api.telegram.org/bot123456789:AAbbCCddEEff/sendMessage")
    assert redact(line) == ("pass ******** smtp ******** url "
                            "https://api.telegram.org/bot********/sendMessage")


@pytest.mark.parametrize("url, parts", [
    ("json://127.0.0.1:9/hook-token-abcdef", ["hook-token-abcdef"]),
    ("json://localhost:8080/notifications", []),  # no token: nothing redacted on its own
    ("ntfys://user:pass1234@ntfy.sh/my-topic-1234", ["pass1234", "my-topic-1234"]),
    ("https://hc-ping.com/5f2a4c1e-0000-4000-8000-000000000000?rid=1",
     ["5f2a4c1e-0000-4000-8000-000000000000"]),
    ("mailto://u:p@example.org", []),  # a password of one letter redacts nothing
])
def test_url_parts_that_are_tokens(url: str, parts: list[str]) -> None:
    assert url_parts(url) == parts
