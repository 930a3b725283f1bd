"""`phobos repo init/info/list/key-export` on a real Borg repository, and the
passphrase never reaching argv, logs or history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_borg_helpers import PASSPHRASE, BorgBox, initialized


def test_init_info_list_key_export(sandbox: Any) -> None:
    box = initialized(sandbox)
    assert (box.repo / "config").is_file()
    assert (box.root / "borgbase").is_dir()  # keys/cache/security kept out of ~

    again = box.phobos("repo", "init", "main")
    assert again.returncode == 1
    assert "already exists" in again.stderr

    listing = json.loads(box.ok("repo", "list", "--json").stdout)["repos"]
    assert [(r["name"], r["initialized"], r["last_archive"]) for r in listing] == [
        ("main", True, None)]

    box.ok("run", "nightly")
    archives = json.loads(box.ok("repo", "list", "main", "--json").stdout)["archives"]
    assert len(archives) == 1 and archives[0]["name"].startswith("nightly-")

    info = json.loads(box.ok("repo", "info", "main", "--json").stdout)
    assert info["borg"]["encryption"]["mode"] == "repokey-blake2"
    assert info["repo"]["last_archive"]["archive"] == archives[0]["name"]
    text = box.ok("repo", "info", "main").stdout
    assert "last archive: nightly-" in text and "by job nightly" in text

    key = box.root / "main.key"
    box.ok("repo", "key-export", "main", str(key))
    assert key.read_text().startswith("BORG_KEY ")
    # The export is remembered (path and time, never the key) for `phobos doctor`.
    exports = json.loads((box.root / "state" / "key-exports.json").read_text())
    assert exports["main"]["path"] == str(key)
    assert "BORG_KEY" not in json.dumps(exports)


def test_passphrase_never_in_history_or_output(sandbox: Any) -> None:
    box = initialized(sandbox)
    runs = [box.phobos("run", "nightly") for _ in range(2)]
    assert all(r.returncode == 0 for r in runs)
    database = b"".join(p.read_bytes() for p in (box.root / "state").iterdir() if p.is_file())
    assert PASSPHRASE.encode() not in database
    assert all(PASSPHRASE not in r.stdout + r.stderr for r in runs)
    steps = json.loads(box.ok("log", str(box.last_run("nightly")["id"]), "--json").stdout)
    assert steps["steps"][0]["argv"][1] == "create"
    assert PASSPHRASE not in json.dumps(steps)


def test_wrong_passphrase_fails_with_meaning(sandbox: Any) -> None:
    box = initialized(sandbox)
    (box.root / "borg.pass").write_text("not the passphrase\n")
    result = box.phobos("run", "nightly")
    assert result.returncode == 1
    assert "wrong passphrase" in result.stdout + result.stderr


def test_unknown_repo_and_uninitialized(sandbox: Any) -> None:
    box = BorgBox(sandbox)
    box.write("")
    result = box.phobos("repo", "info", "mian")
    assert result.returncode == 2 and "did you mean 'main'" in result.stderr
    listing = box.ok("repo", "list").stdout
    assert "not initialized" in listing
    missing = box.phobos("repo", "list", "main")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert not Path(box.repo).exists()
