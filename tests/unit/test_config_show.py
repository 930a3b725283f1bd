"""`phobos config show` prints TOML that `phobos config check` accepts and that loads to
the same configuration (secrets masked, never shown): the example config, the seed's,
a demo-like one and a hostile-looking one go round the loop."""

from __future__ import annotations

import json
import textwrap
import tomllib
from pathlib import Path

import pytest

from phobos.__main__ import main
from phobos.config.load import load
from phobos.config.show import MASK, to_plain, toml_string

DOCS = Path(__file__).resolve().parents[2] / "docs"

DEMO_LIKE = """\
[storage]
root = "{root}/backup"
holding = "{root}/backup/holding"

[repos.main]
path = "{root}/backup/borg"
passphrase_file = "{root}/keys/borg.pass"
base_dir = "{root}/borg-base"

[notify.led]
driver = "file"
path = "{root}/led"
limit = {{ yellow = 10, blue = 10, green = 10, red = 50 }}

[notify.email]
to = ["admin@nas.example"]
host = "127.0.0.1"
port = 2525

[hosts.luv]
address = "10.77.0.2"
paths = ["/srv/luv/etc", "/srv/luv/home"]
rrsync_root = "/srv/luv"

[jobs.pull-hosts]
kind = "pull"
hosts = ["luv"]
max_parallel = 2
schedule = "*-*-* 02:00"

[jobs.nightly]
kind = "archive"
description = "the nightly 03:00 Borg run"
repo = "main"
sources = ["{root}/backup/holding"]
keep = {{ daily = 7, weekly = 4, monthly = 12 }}
schedule = "*-*-* 03:00"

[jobs.check]
kind = "check"
repo = "main"
max_duration = "2s"
schedule = "Sun *-*-* 07:00"

[jobs.sync-nuhc]
kind = "command"
argv = ["sh", "-c", "echo 'connecting to nuhc'; echo 'nuhc: No route' >&2; exit 12"]

[drives.ext-a]
luks_uuid = "2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11"
unlock = "none"

[jobs.offsite]
kind = "drive-sync"
repo = "main"
drives = ["ext-a"]
"""

# Names TOML must quote, strings full of quotes, backslashes, control characters,
# comment and table syntax, characters outside the BMP; and every kind of secret.
HOSTILE = r'''
[repos."main.v2"]
path = "{root}/bor g/\"quoted\"\\dir"
passcommand = "cat '/etc/phobos/p\"w' # not a comment"

[jobs."nightly.full"]
kind = "archive"
repo = "main.v2"
sources = ["/srv/etc", "/home/émile/🗄️", "/srv/[x]"]
description = "a \"quote\", a 'quote', a backslash \\ and ]] [x] # = é 🗄️"
keep = {{ daily = 7 }}

[jobs."x_-9"]
kind = "command"
argv = ["printf", "%s\n", "\\", "'", "\"\"\"", "#", "=", "[jobs.fake]", """two
lines, a tab:	a bell:\u0007 and DEL:\u007f"""]
env = {{ "WEIRD KEY" = "a=b", "ÜBER" = "x" }}
secret_env = {{ API_TOKEN = "hunter2-very-secret", "DB PASS" = "s3cr3t\"'\\" }}
after = ["nightly.full"]

[notify.apprise]
urls = ["tgram://bot-token-very-secret/chat", "json://127.0.0.1:9/hook-secret"]

[notify.ping]
url = "https://hc-ping.com/ping-key-very-secret"
jobs = {{ "nightly.full" = "https://hc-ping.com/uuid-very-secret" }}
'''

SECRETS = ("hunter2", "s3cr3t", "bot-token", "hook-secret", "ping-key", "uuid-very")


def _configs(root: Path) -> dict[str, str]:
    header = f'[paths]\nstate = "{root}/state"\nrun = "{root}/run"\n'
    seed = (DOCS / "from-the-seed.md").read_text().split("```toml\n", 1)[1].split("```")[0]
    return {"example": header + (DOCS / "examples" / "phobos.toml").read_text(),
            "seed": header + seed,
            "demo": header + DEMO_LIKE.format(root=root),
            "hostile": header + HOSTILE.format(root=root)}


def _show(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["-c", str(config), "config", "show", *extra]) == 0
    return capsys.readouterr().out


def _same(config: Path) -> dict[str, object]:
    plain: dict[str, object] = to_plain(load(config))
    plain.pop("source")
    return plain


@pytest.mark.parametrize("name", ["example", "seed", "demo", "hostile"])
def test_config_show_round_trips_through_config_check(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = tmp_path / "phobos.toml"
    original.write_text(_configs(tmp_path)[name])
    assert main(["-c", str(original), "config", "check"]) == 0
    capsys.readouterr()
    shown = tmp_path / "shown.toml"
    shown.write_text(_show(original, capsys))
    assert main(["-c", str(shown), "config", "check"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    # The same configuration (secrets compared as masked on both sides), shown the same.
    assert _same(shown) == _same(original)
    assert _show(shown, capsys).splitlines()[3:] == shown.read_text().splitlines()[3:]
    text = shown.read_text()
    assert "null" not in text and "source =" not in text
    assert not [secret for secret in SECRETS if secret in text]


def test_masked_values_keep_their_shape_and_are_marked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = tmp_path / "phobos.toml"
    original.write_text(_configs(tmp_path)["hostile"])
    text = _show(original, capsys)
    shown = tomllib.loads(text)
    assert shown["jobs"]["x_-9"]["secret_env"] == {"API_TOKEN": MASK, "DB PASS": MASK}
    assert shown["notify"]["apprise"]["urls"] == [f"tgram://{MASK}", f"json://{MASK}"]
    assert shown["notify"]["ping"]["url"] == f"https://{MASK}"
    assert shown["notify"]["ping"]["jobs"] == {"nightly.full": f"https://{MASK}"}
    assert f'url = "https://{MASK}"  # masked' in text.splitlines()
    assert f'API_TOKEN = "{MASK}"  # masked' in text.splitlines()
    assert text.startswith(f"# {original} as phobos reads it")
    # Unmasked values as written; unset optional keys (web, schedule, timeout) left out.
    assert shown["jobs"]["x_-9"]["env"] == {"WEIRD KEY": "a=b", "ÜBER": "x"}
    assert "web" not in shown and "schedule" not in shown["jobs"]["x_-9"]
    assert "timeout" not in shown["jobs"]["nightly.full"]
    plain = json.loads(_show(original, capsys, "--json"))
    assert plain["jobs"]["x_-9"]["secret_env"] == {"API_TOKEN": MASK, "DB PASS": MASK}
    assert plain["web"] is None and plain["source"] == str(original)


@pytest.mark.parametrize("text", ["", "plain", 'q"uote', "back\\slash", "tab\tnew\nline",
                                  "\x00\x01\x1f\x7f", "é 🗄️ \U0010ffff", '"""', "'''",
                                  "\\u0041"])
def test_toml_string_reads_back_as_written(text: str) -> None:
    assert tomllib.loads(f"k = {toml_string(text)}")["k"] == text


def test_show_of_a_config_without_secrets_says_so_plainly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "phobos.toml"
    config.write_text(textwrap.dedent(f"""\
        [paths]
        state = "{tmp_path}/state"
        [jobs.a]
        kind = "command"
        argv = ["true"]
        """))
    text = _show(config, capsys)
    assert "# masked" not in text
    assert tomllib.loads(text)["jobs"]["a"]["argv"] == ["true"]
