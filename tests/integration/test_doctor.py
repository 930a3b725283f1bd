"""`phobos doctor` through the real CLI against sandbox configs on this machine: real tools
on PATH (and a PATH without Borg), real key files and modes, a real LUKS image on a loop
device asked with luksDump, units installed into a root directory and read back with
`systemctl --root`, the real backup namespace, a real TCP listener as the SMTP server."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import paths_toml, phobos_env
from phobos.config.load import load
from phobos.doctor.secrets import Secret, file_mode_finding
from phobos.drives.identity import default_header_backup
from phobos.drives.state import record_init
from phobos.repos.key_exports import record_key_export

REPO = Path(__file__).resolve().parents[2]
UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"

pytestmark = pytest.mark.root


class DoctorBox:
    """A config (the layer's ``[paths]``, see conftest) with a repo (passphrase file), a
    LUKS drive (keyfile), an archive job and a drive-sync job, all below ``root``; secrets
    with the modes they should have."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = root / "keys"
        self.keys.mkdir(mode=0o700)
        self.passfile = self.secret("borg.pass", b"correct horse battery\n")
        self.keyfile = self.secret("ext-a.key", os.urandom(64))
        self.extra = ""
        self.write()
        # What the config says exists does (the storage area checks it): the archive
        # source and a real repository.
        (root / "src").mkdir()
        init = self.phobos("repo", "init", "main")
        assert init.returncode == 0, init.stderr

    @property
    def config(self) -> Path:
        return self.root / "phobos.toml"

    def secret(self, name: str, data: bytes) -> Path:
        path = self.keys / name
        path.write_bytes(data)
        path.chmod(0o400)
        return path

    def write(self, extra: str | None = None, *, uuid: str = UUID) -> None:
        if extra is not None:
            self.extra = extra
        r = self.root
        self.config.write_text(paths_toml(r, keys=self.keys) + f"""
[storage]
root = "{r}/backup"
holding = "{r}/backup/holding"

[repos.main]
path = "{r}/backup/borg"
passphrase_file = "{self.passfile}"

[drives.ext-a]
luks_uuid = "{uuid}"

[jobs.nightly]
kind = "archive"
repo = "main"
sources = ["{r}/src"]
schedule = "*-*-* 03:00"

[jobs.offsite]
kind = "drive-sync"
repo = "main"
drives = ["ext-a"]
{self.extra}""")

    def doctor(self, *args: str, python: str = sys.executable,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([python, "-m", "phobos", "-c", str(self.config), "doctor",
                               *args], capture_output=True, text=True, timeout=120,
                              env=env or phobos_env(), stdin=subprocess.DEVNULL)

    def report(self, *args: str) -> tuple[int, list[dict[str, Any]]]:
        out = self.doctor("--json", "--no-network", *args)
        assert out.stderr == "", out.stderr
        return out.returncode, json.loads(out.stdout)["findings"]

    def phobos(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "phobos", "-c", str(self.config), *args],
                              capture_output=True, text=True, timeout=120, env=phobos_env(),
                              stdin=subprocess.DEVNULL)


def find(findings: list[dict[str, Any]], area: str, check: str) -> dict[str, Any]:
    matches = [f for f in findings if f["area"] == area and f["check"] == check]
    assert len(matches) == 1, (area, check, findings)
    return matches[0]


@pytest.fixture
def box(tmp_path: Path) -> DoctorBox:
    return DoctorBox(tmp_path)


def test_a_sound_config_passes_with_its_warnings_listed(box: DoctorBox) -> None:
    code, findings = box.report()
    assert code == 0, [f for f in findings if f["severity"] == "error"]
    assert find(findings, "config", "file")["severity"] == "ok"
    assert find(findings, "tools", "borg")["message"].startswith("Borg 1.")
    for tool in ("rsync", "cryptsetup", "mount", "unshare", "nsenter"):
        assert find(findings, "tools", tool)["severity"] == "ok"
    assert find(findings, "secrets", "repo main passphrase")["severity"] == "ok"
    assert find(findings, "secrets", "drive ext-a keyfile")["severity"] == "ok"
    assert find(findings, "secrets", "keys directory")["severity"] == "ok"
    exported = find(findings, "borg keys", "repo main")
    assert exported["severity"] == "warning" and "not known to be exported" in \
        exported["message"] and exported["fix"].startswith("phobos repo key-export main")
    slots = find(findings, "drives", "drive ext-a slots")
    assert slots["severity"] == "warning" and "plug it in" in slots["fix"]
    assert find(findings, "drives", "drive ext-a header")["severity"] == "warning"
    units = find(findings, "units", "systemd")
    assert units["severity"] == "warning" and "phobos daemon" in units["fix"]
    assert find(findings, "clock", "time")["severity"] == "ok"
    assert box.doctor("--no-network", "--strict").returncode == 1

    text = box.doctor("--no-network")
    assert text.returncode == 0 and "0 errors" in text.stdout
    assert "fix: phobos repo key-export main FILE" in text.stdout


def test_a_world_readable_keyfile_fails_with_the_chmod_to_run(box: DoctorBox) -> None:
    box.keyfile.chmod(0o644)
    code, findings = box.report()
    assert code == 1
    bad = find(findings, "secrets", "drive ext-a keyfile")
    assert bad["severity"] == "error" and "read or changed by group or others" in bad["message"]
    assert bad["fix"] == f"chmod 0400 {box.keyfile}"
    text = box.doctor("--no-network")
    assert text.returncode == 1 and f"fix: chmod 0400 {box.keyfile}" in text.stdout


def test_secret_file_modes(tmp_path: Path) -> None:
    key = tmp_path / "ext-a.key"
    key.write_bytes(b"k" * 32)
    key.chmod(0o400)
    assert file_mode_finding(Secret(label="k", path=key)).severity == "ok"
    key.chmod(0o644)
    bad = file_mode_finding(Secret(label="k", path=key))
    assert bad is not None and bad.severity == "error" and bad.fix == f"chmod 0400 {key}"
    key.chmod(0o600)
    os.chown(key, 1000, 1000)
    other = file_mode_finding(Secret(label="k", path=key))
    assert other is not None and other.severity == "warning" and "chown root" in str(other.fix)
    gone = tmp_path / "gone"
    missing = file_mode_finding(Secret(label="g", path=gone))
    assert missing is not None and missing.severity == "error"
    assert file_mode_finding(Secret(label="g", path=gone, required=False)) is None


def test_passcommand_files_and_the_keys_directory_are_checked(box: DoctorBox) -> None:
    catted = box.keys / "other.pass"
    catted.write_text("pw\n")
    catted.chmod(0o640)
    box.keys.chmod(0o777)
    box.config.write_text(box.config.read_text().replace(
        f'passphrase_file = "{box.passfile}"', f'passcommand = "cat {catted}"'))
    code, findings = box.report()
    assert code == 1
    assert find(findings, "secrets", "repo main passcommand")["severity"] == "error"
    assert "could be replaced" in find(findings, "secrets", "keys directory")["message"]


def test_without_borg_on_path_borg_is_an_error(box: DoctorBox, tmp_path: Path) -> None:
    # phobos also searches the directory of its own Python (the venv, where pip put Borg
    # 1.4): run it from a Python whose directory holds nothing else.
    bare = tmp_path / "bare-bin"
    bare.mkdir()
    (bare / "python3").symlink_to(os.path.realpath(sys.executable))
    site = subprocess.run([sys.executable, "-c", "import phobos, os; print(os.path.dirname("
                           "os.path.dirname(phobos.__file__)))"], capture_output=True,
                          text=True, check=True).stdout.strip()
    venv_site = subprocess.run([sys.executable, "-c", "import site; "
                                "print(site.getsitepackages()[0])"], capture_output=True,
                               text=True, check=True).stdout.strip()
    # The system's programs minus Borg (Debian's borgbackup may be installed too).
    system = tmp_path / "system-bin"
    system.mkdir()
    for directory in (Path("/usr/sbin"), Path("/usr/bin")):
        for program in directory.iterdir():
            if not program.name.startswith("borg") and not (system / program.name).exists():
                (system / program.name).symlink_to(program)
    path = str(system)
    assert subprocess.run(["sh", "-c", "command -v borg"], env={"PATH": path},
                          capture_output=True).returncode != 0
    assert subprocess.run(["sh", "-c", "command -v rsync"], env={"PATH": path},
                          capture_output=True).returncode == 0
    env = {"PATH": path, "PYTHONPATH": f"{site}:{venv_site}", "HOME": str(tmp_path)}
    out = box.doctor("--json", "--no-network", python=str(bare / "python3"), env=env)
    assert out.returncode == 1, out.stderr
    findings = json.loads(out.stdout)["findings"]
    borg = find(findings, "tools", "borg")
    assert borg["severity"] == "error" and borg["message"] == "borg: not found on PATH"
    assert "apt install borgbackup" in borg["fix"]
    assert find(findings, "tools", "rsync")["severity"] == "ok"


def test_a_bad_config_is_a_finding_and_the_other_checks_still_run(box: DoctorBox) -> None:
    box.write('\n[jobs.check]\nkind = "check"\nrepo = "main"\nmax_duraton = "2h"\n')
    code, findings = box.report()
    assert code == 1
    config = find(findings, "config", "file")
    assert config["severity"] == "error" and "max_duraton" in config["message"]
    assert "did you mean" in config["message"] and "phobos config check" in config["fix"]
    assert find(findings, "tools", "borg")["severity"] == "ok"
    assert find(findings, "clock", "time")["severity"] == "ok"
    assert not [f for f in findings if f["area"] in ("secrets", "drives", "units")]

    box.config.unlink()
    code, findings = box.report()
    assert code == 1 and "config file not found" in find(findings, "config", "file")["message"]


def test_a_recorded_key_export_counts(box: DoctorBox, tmp_path: Path) -> None:
    config = load(box.config)
    record_key_export(config, "main", tmp_path / "usb" / "main.key", paper=False)
    _, findings = box.report()
    exported = find(findings, "borg keys", "repo main")
    assert exported["severity"] == "ok" and str(tmp_path / "usb" / "main.key") in \
        exported["message"]


def test_a_drive_prepared_by_drive_init_counts_as_having_a_recovery_slot(
        box: DoctorBox) -> None:
    config = load(box.config)
    header = default_header_backup(config, "ext-a")
    record_init(config, "ext-a", {"uuid": UUID, "keyfile": str(box.keyfile),
                                  "header_backup": str(header)})
    header.write_bytes(b"header")
    header.chmod(0o400)
    code, findings = box.report()
    slots = find(findings, "drives", "drive ext-a slots")
    assert slots["severity"] == "ok" and "phobos drive init" in slots["message"]
    assert find(findings, "drives", "drive ext-a header")["severity"] == "ok"
    assert find(findings, "secrets", "drive ext-a header")["severity"] == "ok"
    header.chmod(0o644)
    code, findings = box.report()
    assert code == 1 and find(findings, "secrets", "drive ext-a header")["severity"] == "error"


@contextlib.contextmanager
def loop_device(image: Path) -> Iterator[str]:
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)


def test_a_plugged_in_drive_is_asked_for_its_key_slots(box: DoctorBox, tmp_path: Path) -> None:
    image = tmp_path / "ext-a.img"
    with image.open("wb") as handle:
        handle.truncate(32 << 20)
    fast = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]
    subprocess.run(["cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode",
                    "--key-file", str(box.keyfile), *fast, str(image)], check=True)
    uuid = subprocess.run(["cryptsetup", "luksUUID", str(image)], check=True,
                          capture_output=True, text=True).stdout.strip()
    box.write(uuid=uuid)
    with loop_device(image) as device:
        code, findings = box.report()
        one = find(findings, "drives", "drive ext-a slots")
        assert code == 1 and one["severity"] == "error", one
        assert f"{device}: only 1 key slot" in one["message"]
        assert f"luksAddKey --key-file KEYFILE {device}" in one["fix"]
        subprocess.run(["cryptsetup", "luksAddKey", "--batch-mode", "--key-file",
                        str(box.keyfile), *fast, str(image)], input=b"recovery words\n",
                       check=True)
        code, findings = box.report()
        two = find(findings, "drives", "drive ext-a slots")
        assert two["severity"] == "ok" and "2 key slots (0, 1)" in two["message"]


def test_units_installed_enabled_outdated_and_missing(box: DoctorBox, tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.mkdir()
    install = box.phobos("systemd", "install", "--root", str(image))
    assert install.returncode == 0, install.stderr
    code, findings = box.report("--root", str(image))
    units = [f for f in findings if f["area"] == "units"]
    assert code == 0, units
    timer = find(findings, "units", "phobos-job-nightly.timer")
    assert {f["check"] for f in units} >= {"phobos-job-nightly.service",
                                           "phobos-drive-ext-a.service"}
    assert timer["severity"] == "ok" and "matches the config" in timer["message"]
    enabled = {f["check"] for f in units if f["message"].endswith(", enabled")}
    assert enabled >= {"phobos-job-nightly.timer", "phobos-drive-ext-a.service"}
    assert "not checked" in find(findings, "units", "timers")["message"]

    box.write(f'\n[jobs.later]\nkind = "archive"\nrepo = "main"\nsources = ["{box.root}/src"]\n'
              'schedule = "*-*-* 05:00"\n')
    (image / "etc/systemd/system/phobos-job-offsite.service").unlink()
    subprocess.run(["systemctl", f"--root={image}", "disable", "phobos-job-nightly.timer"],
                   check=True, capture_output=True)
    code, findings = box.report("--root", str(image))
    assert code == 1
    missing = find(findings, "units", "phobos-job-offsite.service")
    assert missing["severity"] == "error" and missing["message"].endswith("was deleted")
    disabled = find(findings, "units", "phobos-job-nightly.timer")
    assert disabled["severity"] == "error" and "not enabled (disabled)" in disabled["message"]
    assert disabled["fix"] == "systemctl enable --now phobos-job-nightly.timer"
    install = box.phobos("systemd", "install", "--root", str(image))
    assert install.returncode == 0, install.stderr
    code, findings = box.report("--root", str(image))
    assert code == 0 and find(findings, "units", "phobos-job-later.timer")["severity"] == "ok"


def test_the_namespace_is_checked_when_it_exists(box: DoctorBox) -> None:
    _, findings = box.report()
    assert "does not exist yet" in find(findings, "namespace", "backup namespace")["message"]
    created = box.phobos("ns", "create")
    assert created.returncode == 0, created.stderr
    try:
        _, findings = box.report()
        alive = find(findings, "namespace", "backup namespace")
        assert alive["severity"] == "ok" and alive["message"].startswith("alive")
    finally:
        assert box.phobos("ns", "destroy").returncode == 0


@pytest.mark.parametrize(("led", "severity", "words"), [
    ('led = {{ driver = "file", path = "{root}/led" }}', "ok", "writes the state to"),
    ('led = {{ driver = "file", path = "{root}/no/such/dir/led" }}', "error",
     "cannot write into"),
    ('led = {{ driver = "blinkstick" }}', "warning", "no BlinkStick"),
    ('led = {{ driver = "command", command = ["no-such-led-tool", "{{color}}"] }}', "error",
     "no-such-led-tool: not found on PATH"),
    ('led = {{ driver = "command", command = ["true", "{{color}}"] }}', "ok", "runs /"),
])
def test_led_drivers(box: DoctorBox, led: str, severity: str, words: str) -> None:
    box.write("\n[notify]\n" + led.format(root=box.root) + "\n")
    _, findings = box.report()
    [found] = [f for f in findings if f["area"] == "led"]
    assert found["severity"] == severity and words in found["message"], found


@pytest.fixture
def smtp_port() -> Iterator[int]:
    """A real TCP listener standing in for the SMTP server (the doctor only connects)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def test_notifier_configs(box: DoctorBox, smtp_port: int) -> None:
    box.write(f'\n[notify.email]\nto = ["root"]\nhost = "127.0.0.1"\nport = {smtp_port}\n')
    out = box.doctor("--json")
    email = find(json.loads(out.stdout)["findings"], "notify", "email")
    assert email["severity"] == "ok" and f"127.0.0.1:{smtp_port} answers" in email["message"]

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    box.write(f'\n[notify.email]\nto = ["root"]\nhost = "127.0.0.1"\nport = {closed}\n')
    out = box.doctor("--json")
    email = find(json.loads(out.stdout)["findings"], "notify", "email")
    assert out.returncode == 1 and email["severity"] == "error"
    assert "does not answer" in email["message"]

    box.write('\n[notify.email]\nto = ["root"]\nusername = "phobos"\n'
              f'password_file = "{box.passfile}"\n')
    _, findings = box.report()
    assert "unencrypted" in find(findings, "notify", "email")["message"]

    box.write('\n[notify.email]\ntransport = "sendmail"\nsendmail = ["/no/sendmail", "-t"]\n')
    _, findings = box.report()
    assert find(findings, "notify", "email")["severity"] == "error"

    box.write("")
    _, findings = box.report()
    nothing = find(findings, "notify", "channels")
    assert nothing["severity"] == "warning" and "[notify.email]" in nothing["fix"]


def test_json_is_stable(box: DoctorBox) -> None:
    out = box.doctor("--json", "--no-network")
    data = json.loads(out.stdout)
    assert set(data) == {"subject", "exit_code", "counts", "findings"}
    assert data["exit_code"] == out.returncode == 0
    assert set(data["counts"]) == {"ok", "warning", "error"}
    for finding in data["findings"]:
        assert set(finding) == {"area", "check", "severity", "message", "fix"}
        assert finding["severity"] in ("ok", "warning", "error")


def test_doctor_as_a_non_root_user_says_what_it_could_not_check() -> None:
    nobody = 65534
    with tempfile.TemporaryDirectory() as top:
        os.chmod(top, 0o755)
        home = Path(top) / "home"
        home.mkdir()
        os.chown(home, nobody, nobody)
        (Path(top) / "box").mkdir(mode=0o755)
        box = DoctorBox(Path(top) / "box")
        box.config.chmod(0o644)
        env = phobos_env()
        env["HOME"] = str(home)
        out = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}",
                              "--clear-groups", sys.executable, "-m", "phobos", "-c",
                              str(box.config), "doctor", "--json", "--no-network"],
                             capture_output=True, text=True, timeout=120, env=env)
    findings = json.loads(out.stdout)["findings"]
    assert "permission denied" in find(findings, "secrets", "repo main passphrase")["message"]
    assert "non-root" in find(findings, "namespace", "backup namespace")["message"]


def test_hosts_to_pull_need_a_pinned_key(box: DoctorBox) -> None:
    from phobos.tools import ssh

    box.write('\n[hosts.luv]\naddress = "192.0.2.7"\npaths = ["/etc"]\n')
    code, findings = box.report()
    host = find(findings, "hosts", "host luv")
    assert code == 1 and host["severity"] == "error"
    assert host["fix"] == "phobos host add luv 192.0.2.7"
    assert find(findings, "tools", "ssh")["severity"] == "ok"
    pull_key = find(findings, "secrets", "pull key")
    assert pull_key["severity"] == "error" and "does not exist" in pull_key["message"]
    ssh.pin(box.keys / "known_hosts", "luv", [ssh.HostKey("ssh-ed25519", "AAAAC3NzaC1lZDI1"
                                                           "NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsa"
                                                           "bgH5C9okWi0dh2l9GKJl")])
    _, findings = box.report()
    assert find(findings, "hosts", "host luv")["severity"] == "ok"


def test_a_missing_repository_source_device_and_bad_borgmatic_yaml_are_errors(
        box: DoctorBox) -> None:
    borgmatic = box.root / "borgmatic.yaml"
    borgmatic.write_text(f"repositories:\n  - path: {box.root}/backup/borg\n"
                         "source_directories:\n  - /etc\nbogus_option: 1\n")
    box.write(f"""
[repos.gone]
path = "{box.root}/backup/gone"

[jobs.lost]
kind = "archive"
repo = "main"
sources = ["{box.root}/nowhere"]

[jobs.maybe]
kind = "archive"
repo = "main"
sources = ["{box.root}/nowhere"]
missing_ok = true

[jobs.bm]
kind = "borgmatic"
configs = ["{borgmatic}"]
""")
    code, findings = box.report()
    assert code == 1
    assert find(findings, "storage", "repo main")["severity"] == "ok"
    gone = find(findings, "storage", "repo gone")
    assert gone["severity"] == "error" and "does not exist" in gone["message"]
    assert gone["fix"].startswith("`phobos repo init gone`")
    lost = find(findings, "storage", "job lost source")
    assert lost["severity"] == "error" and "missing_ok = true" in lost["fix"]
    assert find(findings, "storage", "job maybe source")["severity"] == "warning"
    bad = find(findings, "storage", "job bm borgmatic configs")
    assert bad["severity"] == "error" and "bogus_option" in bad["message"], bad
    borgmatic.write_text(f"repositories:\n  - path: {box.root}/backup/borg\n"
                         "source_directories:\n  - /etc\n")
    _, findings = box.report()
    assert find(findings, "storage", "job bm borgmatic configs")["severity"] == "ok"


def test_an_absent_storage_device_is_an_error(box: DoctorBox) -> None:
    text = box.config.read_text().replace(
        "[storage]\n", '[storage]\ndevice = "UUID=00000000-0000-4000-8000-000000000042"\n')
    box.config.write_text(text)
    code, findings = box.report()
    device = find(findings, "storage", "device")
    assert code == 1 and device["severity"] == "error" and "not attached" in device["message"]
    # The repository is on that device: only the backup namespace could show it.
    assert find(findings, "storage", "repo main")["severity"] == "ok"
