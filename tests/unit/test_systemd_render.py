"""Unit rendering (pure): golden files for whole configs, escaping and quoting tables, and
the sandbox each kind gets. Regenerate the golden files with UPDATE_GOLDEN=1 and review
the diff."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

import pytest

from phobos.config.load import parse
from phobos.config.model import Config
from phobos.core.model import Trigger
from phobos.errors import ConfigError
from phobos.oncalendar.errors import CalendarError
from phobos.systemd.activation import parse_timespan, take_note, trigger_from_show, write_note
from phobos.systemd.errors import SystemdError
from phobos.systemd.names import (
    NAME_MAX,
    Syntax,
    device_unit,
    escape_path,
    longest_unit_name,
    timespan,
    unit_value,
)
from phobos.systemd.sandbox import required_directories
from phobos.systemd.units import Target, render

GOLDEN = Path(__file__).parent / "golden" / "systemd"
TARGET = Target(executable=Path("/usr/bin/phobos"), config=Path("/etc/phobos/phobos.toml"))

# The original setup's NAS: backup filesystem hidden in the namespace, LED, failure mail, two
# off-site drives, the weekly check, a pull, and a command that pulls over SSH itself.
NAS = (GOLDEN / "nas.toml").read_text()

# No namespace, phobos's directories off the standard roots, Borg with its own base
# directory, a path with a space, the udev drive trigger, a file LED, mail through the
# local MTA for every warning.
PLAIN = (GOLDEN / "plain.toml").read_text()


def _config(text: str) -> Config:
    return parse(tomllib.loads(text), Path("/etc/phobos/phobos.toml"), text)


@pytest.mark.parametrize("case, text", [("nas", NAS), ("plain", PLAIN)])
def test_golden(case: str, text: str) -> None:
    files = render(_config(text), TARGET)
    directory = GOLDEN / case
    if os.environ.get("UPDATE_GOLDEN"):
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.iterdir():
            old.unlink()
        for name, body in files.items():
            (directory / name).write_text(body)
    expected = {p.name: p.read_text() for p in sorted(directory.iterdir())}
    assert sorted(files) == sorted(expected), "run with UPDATE_GOLDEN=1 and review"
    for name, body in files.items():
        assert body == expected[name], f"{name} differs: run with UPDATE_GOLDEN=1 and review"


def _lines(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def test_every_job_gets_a_service_and_scheduled_ones_a_timer() -> None:
    files = render(_config(NAS), TARGET)
    for job in ("backup-luv", "nightly", "check", "sync-nuhc", "offsite"):
        service = files[f"phobos-job-{job}.service"]
        assert _lines(service, "Type") == ["oneshot"]
        assert _lines(service, "SuccessExitStatus") == ["3"]
        assert _lines(service, "OnFailure") == ["phobos-failure@%n.service"]
    assert "phobos-job-offsite.timer" not in files
    assert "--trigger manual" in files["phobos-job-offsite.service"]
    timer = files["phobos-job-nightly.timer"]
    assert _lines(timer, "OnCalendar") == ["*-*-* 03:00"]
    assert _lines(timer, "Persistent") == ["true"]
    assert _lines(timer, "RandomizedDelaySec") == ["10min"]
    assert _lines(timer, "WantedBy") == ["timers.target"]
    assert "run nightly --trigger unit" in files["phobos-job-nightly.service"]


def test_failure_template_passes_the_unit_name_unescaped() -> None:
    text = render(_config(NAS), TARGET)["phobos-failure@.service"]
    assert _lines(text, "ExecStart") == [
        "/usr/bin/phobos -c /etc/phobos/phobos.toml notify unit-failure %i"]
    assert "OnFailure" not in text  # a failing notice must not loop


def test_drive_units_follow_the_luks_uuid() -> None:
    files = render(_config(NAS), TARGET)
    drive = files["phobos-drive-ext-a.service"]
    device = r"dev-disk-by\x2duuid-2f1e6b1c\x2d1b8e\x2d4f37\x2d9d53\x2d0c5d0a8e6f11.device"
    assert _lines(drive, "WantedBy") == [device]
    assert _lines(drive, "BindsTo") == [device]
    assert _lines(drive, "ExecStart") == [
        "/usr/bin/phobos -c /etc/phobos/phobos.toml drive attached "
        "--uuid 2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11"]
    assert _lines(drive, "ExecStopPost") == [
        "/usr/bin/phobos -c /etc/phobos/phobos.toml drive release "
        "--uuid 2f1e6b1c-1b8e-4f37-9d53-0c5d0a8e6f11"]
    rules = files["90-phobos-drives.rules"]
    assert ('ENV{ID_FS_UUID}=="A2EA-96ED", TAG+="systemd", '
            'ENV{SYSTEMD_WANTS}+="phobos-drive-ext-b.service"') in rules


def test_udev_trigger_leaves_drive_units_without_install() -> None:
    files = render(_config(PLAIN), TARGET)
    assert "[Install]" not in files["phobos-drive-ext-a.service"]


@pytest.mark.parametrize("path, escaped", [
    ("/dev/disk/by-uuid/A2EA-96ED", r"dev-disk-by\x2duuid-A2EA\x2d96ED"),
    ("/", "-"),
    ("//a//b/./c/", "a-b-c"),
    ("/.hidden/x y", r"\x2ehidden-x\x20y"),
    ("/mnt/ä:b_c.d", r"mnt-\xc3\xa4:b_c.d"),
])
def test_escape_path(path: str, escaped: str) -> None:
    assert escape_path(path) == escaped


def test_device_unit() -> None:
    assert device_unit("A2EA-96ED") == r"dev-disk-by\x2duuid-A2EA\x2d96ED.device"


@pytest.mark.parametrize("arg, quoted", [
    ("/usr/bin/phobos", "/usr/bin/phobos"),
    ("50%", "50%%"),
    ("$HOME", "$$HOME"),
    ("a b", '"a b"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("", '""'),
    ("semi;colon", '"semi;colon"'),
])
def test_quote_arg(arg: str, quoted: str) -> None:
    assert unit_value(arg, Syntax.ARG, key="k") == quoted


def test_quote_path_keeps_dollars_and_quotes_colons() -> None:
    assert unit_value("/srv/$x 1%", Syntax.PATH, key="k") == '"/srv/$x 1%%"'
    assert unit_value("/srv/a:b", Syntax.PATH, key="k") == '"/srv/a:b"'


@pytest.mark.parametrize("syntax", list(Syntax))
@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\x1bb", "a\x7fb"])
def test_control_characters_never_reach_a_unit(syntax: Syntax, value: str) -> None:
    with pytest.raises(SystemdError, match=r"^jobs\.x\.description: .* control character"):
        unit_value(value, syntax, key="jobs.x.description")


def test_text_cannot_end_in_a_line_continuation() -> None:
    with pytest.raises(SystemdError, match="backslash"):
        unit_value("phobos: a\\", Syntax.TEXT, key="jobs.x.description")
    assert unit_value("50% a\\b", Syntax.TEXT, key="k") == "50%% a\\b"


def test_udev_values_cannot_close_their_quotes() -> None:
    for value in ('x", RUN+="/bin/sh', "x\\"):
        with pytest.raises(SystemdError, match="udev rule"):
            unit_value(value, Syntax.UDEV, key="drives.a.luks_uuid")


def test_name_limit_is_the_longest_unit_name() -> None:
    assert NAME_MAX == 211
    assert len(longest_unit_name("x" * NAME_MAX)) == 255
    assert longest_unit_name("n") == "phobos-failure@phobos-drive-n.service.service"


@pytest.mark.parametrize("seconds, text", [
    (0, "0"), (45, "45s"), (600, "10min"), (5400, "1h 30min"), (93600, "1d 2h")])
def test_timespan(seconds: float, text: str) -> None:
    assert timespan(seconds) == text


def _service(text: str, job: str, *, visible_storage: bool = False) -> str:
    config = _config(text)
    if visible_storage:  # the same NAS without [storage] device: no namespace for jobs
        config = dataclasses.replace(
            config, storage=dataclasses.replace(config.storage, device=None))
    return render(config, TARGET)[f"phobos-job-{job}.service"]


def test_sandbox_per_kind() -> None:
    pull = _service(NAS, "backup-luv", visible_storage=True)
    assert _lines(pull, "RestrictAddressFamilies") == ["AF_INET AF_INET6"]
    assert "RestrictSUIDSGID=yes" not in pull  # a pull keeps setuid/setgid bits
    assert _lines(pull, "ProtectHome") == ["yes"]
    assert _lines(pull, "ReadWritePaths") == ["-/backup/holding"]
    check = _service(NAS, "check", visible_storage=True)
    assert _lines(check, "RestrictAddressFamilies") == ["none"]
    assert _lines(check, "PrivateNetwork") == ["yes"]
    assert _lines(check, "SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    # Borg's default cache and keys under /root, bound into an otherwise empty /root.
    assert _lines(check, "ProtectHome") == ["tmpfs"]
    assert "/root/.cache/borg /root/.config/borg" in _lines(check, "BindPaths")
    assert _lines(check, "PrivateDevices") == ["yes"]  # the LED's hidraw is bound in
    archive = _service(NAS, "nightly", visible_storage=True)
    assert _lines(archive, "ProtectHome") == ["read-only"]  # it archives /home
    offsite = _service(NAS, "offsite")
    assert _lines(offsite, "PrivateDevices") == ["no"]
    assert "block-* rw" in _lines(offsite, "DeviceAllow")


# Every option systemd implements with a mount namespace of the unit's own.
MOUNT_OPTIONS = ("ProtectSystem", "ProtectHome", "PrivateTmp", "ReadWritePaths", "BindPaths",
                 "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                 "ProtectControlGroups", "ProtectProc", "ProcSubset")


def test_drive_units_get_no_mount_namespace_of_their_own() -> None:
    """systemd would copy the host's mount namespace without the nsfs mount that holds
    the backup namespace, and setns() would have nothing to join."""
    files = render(_config(NAS), TARGET)
    for unit in (files["phobos-job-offsite.service"], files["phobos-drive-ext-a.service"]):
        assert [key for key in MOUNT_OPTIONS if _lines(unit, key)] == []
        assert _lines(unit, "PrivateMounts") == ["no"]
        assert _lines(unit, "PrivateDevices") == ["no"]
        assert _lines(unit, "DevicePolicy") == ["closed"]
        assert "char-hidraw rw" in _lines(unit, "DeviceAllow")  # the LED still works
        assert _lines(unit, "ExecStartPre") == [
            "+/usr/bin/phobos -c /etc/phobos/phobos.toml ns create"]
        assert _lines(unit, "RestrictNamespaces") == ["mnt"]
        assert "CAP_SYS_CHROOT" in _lines(unit, "CapabilityBoundingSet")[0]


@pytest.mark.parametrize("job", ["backup-luv", "nightly", "check"])
def test_hidden_storage_jobs_mount_it_in_their_own_sandbox(job: str) -> None:
    """Jobs that need the hidden storage but no drive keep every mount-based option and
    mount the storage device in the unit's own namespace."""
    unit = _service(NAS, job)
    assert _lines(unit, "Environment")[-1] == "PHOBOS_STORAGE_MOUNT=private"
    assert _lines(unit, "ProtectSystem") == ["strict"]
    assert _lines(unit, "PrivateMounts") == ["yes"]
    assert _lines(unit, "RestrictNamespaces") == ["yes"]
    assert not [line for line in _lines(unit, "ExecStartPre") if "ns create" in line]
    assert "CAP_SYS_ADMIN" in _lines(unit, "CapabilityBoundingSet")[0]
    assert "CAP_SYS_CHROOT" not in _lines(unit, "CapabilityBoundingSet")[0]
    assert _lines(unit, "SystemCallFilter")[0] == "@system-service @mount"
    # Only the storage device among the host's block devices (here UUID=0d6c1b7e-...).
    assert _lines(unit, "DevicePolicy") == ["closed"]
    assert "/dev/disk/by-uuid/0d6c1b7e-9f7d-4a55-8d0e-2f4b5f1a9c33 rw" in _lines(
        unit, "DeviceAllow")
    assert not any(line.startswith("block-") for line in _lines(unit, "DeviceAllow"))


def test_sandbox_override_and_channels() -> None:
    command = _service(NAS, "sync-nuhc")
    assert _lines(command, "RestrictAddressFamilies") == ["AF_INET AF_INET6"]
    plain = _service(PLAIN, "a.b_c-d")
    # A command gets no network unless [systemd.sandbox.NAME] says so; but the local MTA
    # (warnings are mailed from the job) needs its spool, setgid and sockets.
    assert _lines(plain, "NoNewPrivileges") == ["no"]
    assert "-/var/spool/postfix" in _lines(plain, "ReadWritePaths")[0]
    assert _lines(plain, "ProtectHome") == ["read-only"]  # cwd is in /home


def test_failure_mail_is_left_to_the_hook() -> None:
    files = render(_config(NAS), TARGET)
    assert _lines(files["phobos-job-check.service"], "PrivateNetwork") == ["yes"]
    hook = files["phobos-failure@.service"]
    assert "AF_INET" in _lines(hook, "RestrictAddressFamilies")[0]


def test_required_directories() -> None:
    assert required_directories(_config(PLAIN)) == [
        Path("/srv/phobos/borg"), Path("/srv/phobos/log"), Path("/srv/phobos/run"),
        Path("/srv/phobos/state")]
    nas = required_directories(_config(NAS))
    assert Path("/root/.cache/borg") in nas
    assert Path("/backup") in nas  # the units mount the hidden storage there themselves


def test_bad_schedule_and_uuid_are_refused() -> None:
    # The config loader refuses these already; rendering checks again because a
    # newline in OnCalendar= or a quote in a udev rule would change their meaning.
    config = _config(NAS)
    job = dataclasses.replace(config.jobs["check"], schedule="Sun 07:00\nExecStart=/x")
    broken = dataclasses.replace(config, jobs={**config.jobs, "check": job})
    with pytest.raises(SystemdError, match=r"jobs\.check\.schedule"):
        render(broken, TARGET)
    job = dataclasses.replace(config.jobs["check"], schedule="Sun 25:00")
    broken = dataclasses.replace(config, jobs={**config.jobs, "check": job})
    with pytest.raises(CalendarError, match=r"hour 25 is outside 0\.\.23"):
        render(broken, TARGET)
    drive = dataclasses.replace(config.drives["ext-a"], luks_uuid='x", RUN+="/bin/sh')
    broken = dataclasses.replace(config, drives={**config.drives, "ext-a": drive})
    with pytest.raises(SystemdError, match=r"drives\.ext-a\.luks_uuid"):
        render(broken, TARGET)


def test_sandbox_for_an_unknown_job_is_refused() -> None:
    text = NAS.replace("[systemd.sandbox.sync-nuhc]", "[systemd.sandbox.sync-nuch]")
    with pytest.raises(ConfigError, match=r"systemd\.sandbox\.sync-nuch: no job named "
                       r"'sync-nuch' \(did you mean 'sync-nuhc'\?\)"):
        _config(text)


# Who started a job's unit: what `systemctl show` says of its service and timer, as
# systemd 252 printed it in the booted-container test, run by run.
def _shown(previous_end: int, last_trigger: str) -> str:
    return (f"InactiveEnterTimestampMonotonic={previous_end}\n\n"
            f"InactiveEnterTimestampMonotonic=8830000000\n"
            f"LastTriggerUSecMonotonic={last_trigger}\n")


@pytest.mark.parametrize(("previous_end", "last_trigger", "trigger"), [
    (0, "2h 27min 14.282922s", Trigger.TIMER),  # the first run since boot, by the timer
    (8835339287, "2h 27min 19.282998s", Trigger.TIMER),  # the next elapse
    (8840320506, "2h 27min 19.282998s", Trigger.MANUAL),  # systemctl start after it
    (8843767630, "2h 27min 19.282998s", Trigger.MANUAL),  # and again
    (8844807023, "2h 27min 24.818666s", Trigger.TIMER),  # timer restarted: elapsed at once
    (8844818666, "2h 27min 24.818666s", Trigger.TIMER),  # elapsed as the last run ended
    (0, "0", Trigger.MANUAL),  # the timer never elapsed since boot (or was unloaded)
    (8858265421, "0", Trigger.MANUAL),
])
def test_trigger_from_systemctl_show(previous_end: int, last_trigger: str,
                                     trigger: Trigger) -> None:
    assert trigger_from_show(_shown(previous_end, last_trigger)) is trigger


@pytest.mark.parametrize(("text", "micros"), [
    ("0", 0), ("2h 27min 14.282922s", 8834282922), ("1month 2w 3d", 2629800000000
     + 2 * 604800000000 + 3 * 86400000000), ("1y 5min 500ms", 31557600000000 + 300500000),
    ("7us", 7), ("3.5s", 3500000)])
def test_parse_timespan(text: str, micros: int) -> None:
    assert parse_timespan(text) == micros


@pytest.mark.parametrize("text", ["soon", "5 min", "1h later", "h", "1x"])
def test_parse_timespan_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timespan(text)


def test_trigger_from_show_refuses_what_it_cannot_read() -> None:
    for text in ("", "InactiveEnterTimestampMonotonic=1\n",
                 "A=1\n\nB=2\n", "InactiveEnterTimestampMonotonic=1\n\n"
                 "LastTriggerUSecMonotonic=whenever\n"):
        with pytest.raises(ValueError):
            trigger_from_show(text)


def test_trigger_note_is_for_one_activation(tmp_path: Path) -> None:
    write_note(tmp_path, "nightly", "abc", Trigger.TIMER)
    assert take_note(tmp_path, "nightly", "other") is Trigger.MANUAL  # another activation's
    assert take_note(tmp_path, "nightly", "abc") is Trigger.MANUAL  # taken: gone
    write_note(tmp_path, "nightly", "abc", Trigger.TIMER)
    assert take_note(tmp_path, "nightly", "abc") is Trigger.TIMER
    assert take_note(tmp_path, "nightly", None) is Trigger.MANUAL
    (tmp_path / "unit-triggers" / "nightly.json").write_text("{not json")
    assert take_note(tmp_path, "nightly", "abc") is Trigger.MANUAL


def test_scheduled_units_ask_what_started_them() -> None:
    files = render(_config(NAS), TARGET)
    assert _lines(files["phobos-job-nightly.service"], "ExecStartPre") == [
        "-+/usr/bin/phobos -c /etc/phobos/phobos.toml systemd trigger nightly"]
    assert not [line for line in _lines(files["phobos-job-offsite.service"], "ExecStartPre")
                if "systemd trigger" in line]  # no timer: every start is by hand
