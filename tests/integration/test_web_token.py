"""The token rule of `phobos web`: anything but loopback needs [web] token_file (the
server refuses to start without it and says why); a configured token is checked on
every request (bearer header, the cookie from `/?token=`, or that query), whatever the
address. The non-loopback bind runs in a private network namespace, so nothing
outside this test can reach it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_web import Server, fill, free_port, get, start_server, write_config

from conftest import Sandbox, phobos_env
from phobos.web.address import parse_listen

TOKEN = "3f9a1c0e5b7d2468ace13579bdf02468"
PAGES = ("/", "/timeline", "/drives", "/jobs/nightly", "/runs/1", "/metrics", "/api/status")


def with_token(sandbox: Sandbox, token: str = TOKEN, mode: int = 0o600) -> Path:
    path = sandbox.root / "web.token"
    path.write_text(token + "\n")
    path.chmod(mode)
    write_config(sandbox, extra="")
    text = sandbox.config.read_text().replace("[web]\n", f'[web]\ntoken_file = "{path}"\n')
    sandbox.config.write_text(text)
    return path


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("token")
    sandbox = Sandbox(root=root, config=root / "phobos.toml")
    with_token(sandbox)
    fill(sandbox)
    server = start_server(sandbox)
    yield server
    server.stop()


def test_every_page_needs_the_token(guarded: Server) -> None:
    for page in PAGES:
        reply = get(guarded.url + page)
        assert reply.status == 401, page
        assert reply.headers["www-authenticate"] == 'Bearer realm="phobos"'
        assert "nightly" not in reply.body
        assert get(guarded.url + page, {"Authorization": "Bearer wrong-token-xxxxxxxxxx"}
                   ).status == 401
        assert get(guarded.url + page, {"Authorization": f"Bearer {TOKEN}x"}).status == 401
        assert get(guarded.url + page, {"Authorization": f"Bearer {TOKEN[:-1]}"}).status == 401
        ok = get(guarded.url + page, {"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200, page


def test_a_link_with_the_token_sets_a_cookie_and_drops_the_token(guarded: Server) -> None:
    reply = get(f"{guarded.url}/jobs/nightly?runs=10&token={TOKEN}")
    assert reply.status == 303
    assert reply.headers["location"] == "/jobs/nightly?runs=10"
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith("phobos_token=") and TOKEN not in cookie
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    value = cookie.split(";")[0]
    page = get(guarded.url + "/jobs/nightly?runs=10", {"Cookie": value})
    assert page.status == 200 and "nightly" in page.body
    assert get(guarded.url + "/", {"Cookie": value + "0"}).status == 401
    assert get(guarded.url + "/", {"Cookie": f"phobos_token={TOKEN}"}).status == 401
    assert get(f"{guarded.url}/?token=not-the-token-at-all").status == 401


def test_with_a_token_any_host_name_is_fine(guarded: Server) -> None:
    reply = get(guarded.url + "/", {"Host": "nas.example.org",
                                    "Authorization": f"Bearer {TOKEN}"})
    assert reply.status == 200


def test_non_loopback_without_token_refuses_to_start(tmp_path: Path) -> None:
    sandbox = Sandbox(root=tmp_path, config=tmp_path / "phobos.toml")
    write_config(sandbox)
    port = free_port()
    for address in (f"0.0.0.0:{port}", f"[::]:{port}", f"192.0.2.1:{port}",
                    f"nas.example.org:{port}"):
        done = sandbox.phobos("web", "--listen", address, timeout=30)
        assert done.returncode == 2, (address, done.stderr)
        assert f"refusing to serve the dashboard on {address} without a token" in done.stderr
        assert "hint: set [web] token_file" in done.stderr
    # The config's own listen counts the same.
    text = sandbox.config.read_text().replace("[web]\n", f'[web]\nlisten = "0.0.0.0:{port}"\n')
    sandbox.config.write_text(text)
    done = sandbox.phobos("web", timeout=30)
    assert done.returncode == 2 and "without a token" in done.stderr


@pytest.mark.parametrize("problem", ["missing", "short", "world-readable", "group-readable"])
def test_a_bad_token_file_refuses_to_start(problem: str, tmp_path: Path) -> None:
    sandbox = Sandbox(root=tmp_path, config=tmp_path / "phobos.toml")
    token = with_token(sandbox, token="short" if problem == "short" else TOKEN,
                       mode={"world-readable": 0o644, "group-readable": 0o640}.get(problem,
                                                                                   0o600))
    if problem == "missing":
        token.unlink()
    done = sandbox.phobos("web", "--listen", f"127.0.0.1:{free_port()}", timeout=30)
    assert done.returncode == 2, done.stderr
    expected = {"missing": "cannot read it", "short": "use at least 16",
                "world-readable": "is readable by its group or every user",
                "group-readable": "is readable by its group or every user"}[problem]
    assert f"[web] token_file {token}" in done.stderr and expected in done.stderr


def test_a_bad_listen_address_is_a_config_error(tmp_path: Path) -> None:
    sandbox = Sandbox(root=tmp_path, config=tmp_path / "phobos.toml")
    write_config(sandbox)
    sandbox.config.write_text(sandbox.config.read_text().replace(
        "[web]\n", '[web]\nlisten = "8470"\n'))
    done = sandbox.phobos("config", "check", timeout=30)
    assert done.returncode == 2
    assert "web.listen" in done.stderr and "expected HOST:PORT" in done.stderr
    assert sandbox.phobos("web", "--listen", "127.0.0.1:99999").returncode == 2


def _in_namespace(pid: int, url: str, headers: dict[str, str]) -> str:
    """GET ``url`` from inside the network namespace of process ``pid``: status code."""
    code = ("import sys, urllib.request, urllib.error\n"
            "req = urllib.request.Request(sys.argv[1], headers=dict(a.split('=', 1) "
            "for a in sys.argv[2:]))\n"
            "try:\n    print(urllib.request.urlopen(req, timeout=10).status)\n"
            "except urllib.error.HTTPError as e:\n    print(e.code)\n")
    argv = ["nsenter", f"--net=/proc/{pid}/ns/net", sys.executable, "-c", code, url,
            *(f"{k}={v}" for k, v in headers.items())]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_all_addresses_with_a_token_serve_only_with_it(tmp_path: Path) -> None:
    for tool in ("unshare", "nsenter", "ip"):
        assert shutil.which(tool), f"{tool} is needed (util-linux, iproute2)"
    sandbox = Sandbox(root=tmp_path, config=tmp_path / "phobos.toml")
    with_token(sandbox)
    fill(sandbox)
    port = 8470
    # unshare and sh exec: the process keeps its PID, and /proc/PID/ns/net is its netns.
    argv = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
            *sandbox.argv("web", "--listen", f"0.0.0.0:{port}")]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=phobos_env())
    server = Server(process, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, process.communicate()
            try:
                status = _in_namespace(process.pid, server.url + "/", {})
                break
            except AssertionError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert status == "401"
        assert _in_namespace(process.pid, server.url + "/",
                             {"Authorization": f"Bearer {TOKEN}"}) == "200"
        assert _in_namespace(process.pid, server.url + "/metrics",
                             {"Authorization": "Bearer nope-nope-nope-nope"}) == "401"
    finally:
        err = server.stop()
    assert "a token is required" in err


@pytest.mark.parametrize("text, host, port, loopback", [
    ("127.0.0.1:8470", "127.0.0.1", 8470, True),
    ("127.9.9.9:1", "127.9.9.9", 1, True),
    ("localhost:8080", "localhost", 8080, True),
    ("[::1]:8470", "::1", 8470, True),
    ("0.0.0.0:8470", "0.0.0.0", 8470, False),
    (":8470", "0.0.0.0", 8470, False),
    ("[::]:8470", "::", 8470, False),
    ("192.168.1.5:80", "192.168.1.5", 80, False),
    ("nas.lan:8470", "nas.lan", 8470, False),
])
def test_listen_addresses(text: str, host: str, port: int, loopback: bool) -> None:
    listen = parse_listen(text)
    assert (listen.host, listen.port, listen.loopback) == (host, port, loopback)
    assert parse_listen(str(listen)) == listen


@pytest.mark.parametrize("text", ["8470", "::1:8470", "[::1]8470", "host:0", "host:65536",
                                  "host:http", "[::1"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)
