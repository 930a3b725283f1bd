"""The recovery sheet of a drive (``phobos drive sheet``, and printed by ``drive init``):
plain text saying what is on the drive, where its keys are, and how to restore from it on
a machine that never saw the NAS; optionally with ``borg key export --paper`` of each
encrypted repository copied to it."""

from __future__ import annotations

import socket
import time

from phobos import namespace
from phobos.config.model import Config
from phobos.core import proc
from phobos.core.proc import Log, direct_runner
from phobos.drives.contents import HOLDING_DIR, copiers_of, repo_target
from phobos.drives.identity import Drive
from phobos.drives.state import load_state
from phobos.tools import borg as borgtool


def borg_key_exports(config: Config, drive: Drive, log: Log) -> dict[str, str]:
    """``borg key export --paper`` of every encrypted repo copied to ``drive``, for the
    recovery sheet (the export is itself encrypted by the Borg passphrase)."""
    if config.storage.device is not None:  # the repo lives on the hidden storage
        namespace.enter(config, direct_runner(log))
    exports = {}
    for job in copiers_of(config, drive.name).values():
        repo = config.repos[job.repo]
        if repo.encryption == "none" or job.repo in exports:
            continue
        result = proc.run(("borg", "key", "export", "--paper", str(repo.path)),
                          env=borgtool.base_env(repo.base_dir), capture=True, check=False)
        exports[job.repo] = (result.stdout if result.returncode == 0 else
                             f"(borg key export failed: {proc.describe_exit(result.returncode)})")
    return exports


def render_sheet(config: Config, drive: Drive, *, fs_uuid: str | None = None,
                 borg_keys: dict[str, str] | None = None) -> str:
    """The plain-text recovery sheet: what is where, and how to restore without the NAS."""
    facts = load_state(config).get("drives", {}).get(drive.name, {})
    fs_uuid = (fs_uuid or facts.get("fs_uuid") or
               (drive.uuid if drive.unlock == "none" else "(see `blkid` once unlocked)"))
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    lines = [f"PHOBOS RECOVERY SHEET: drive {drive.name}",
             f"printed {when} on {socket.gethostname()}. Keep one copy away from the NAS.", "",
             "THE DRIVE",
             f"  name:                 {drive.name}",
             f"  {'LUKS header UUID' if drive.unlock == 'luks' else 'filesystem UUID'}:"
             f"{' ' * (5 if drive.unlock == 'luks' else 6)}{drive.uuid}",
             f"  filesystem inside:    ext4, label {drive.label!r}, UUID {fs_uuid}",
             f"  last verified copy:   {_date(facts.get('last_sync'))}"]
    lines += ["", "WHAT IS ON IT", *_contents(config, drive)]
    lines += ["", "KEYS (all of these live on the NAS: keep copies elsewhere too)",
              *_key_lines(config, drive, borg_keys or {})]
    lines += ["", "RESTORE ON A MACHINE THAT NEVER SAW THE NAS", *_restore_steps(config, drive)]
    return "\n".join(lines)


def _date(ts: float | None) -> str:
    return "never" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _contents(config: Config, drive: Drive) -> list[str]:
    lines = []
    for name, job in copiers_of(config, drive.name).items():
        repo = config.repos[job.repo]
        lines.append(f"  /{repo_target(job, config)}: Borg repository {job.repo!r} "
                     f"(copy of {repo.path}, job {name})")
        if job.holding:
            lines.append(f"  /{HOLDING_DIR}: the holding area (copy of "
                         f"{config.storage.holding})")
    return lines or ["  nothing yet: no drive-sync job lists this drive"]


def _key_lines(config: Config, drive: Drive, borg_keys: dict[str, str]) -> list[str]:
    lines = []
    if drive.unlock == "luks":
        lines += [f"  keyfile (slot 0):     {drive.keyfile}",
                  f"  LUKS header backup:   {drive.header_backup}",
                  "  recovery passphrase:  slot 1; not printed: the one typed at "
                  "`phobos drive init`"]
    else:
        lines.append("  phobos did not encrypt this drive (unlock = \"none\")")
    repos = sorted({job.repo for job in copiers_of(config, drive.name).values()})
    for name in repos:
        repo = config.repos[name]
        where = ("inside the repository (so on this drive too), protected by the Borg "
                 "passphrase" if "repokey" in repo.encryption else
                 f"in {repo.base_dir or '~'}/.config/borg/keys on the NAS only: without an "
                 "export the copy cannot be read")
        lines += [f"  Borg repo {name!r}: encryption {repo.encryption}; key {where}.",
                  f"    export it: borg key export --paper {repo.path} {name}-key.txt",
                  "    and keep the Borg passphrase with it."]
        if name in borg_keys:
            lines += ["    export:", *(f"      {line}" for line in borg_keys[name].splitlines())]
    return lines


def _restore_steps(config: Config, drive: Drive) -> list[str]:
    dev = f"/dev/disk/by-uuid/{drive.uuid}"
    jobs = list(copiers_of(config, drive.name).values())
    target = repo_target(jobs[0], config) if jobs else "borg"
    steps = ["  (Debian: apt install cryptsetup borgbackup rsync)",
             "  1. Plug the drive in and find it:", f"       blkid -U {drive.uuid}"]
    if drive.unlock == "luks":
        steps += ["  2. Unlock it; type the recovery passphrase:",
                  f"       cryptsetup open {dev} extbackup",
                  "     or with a copy of the keyfile:",
                  f"       cryptsetup open --key-file {drive.name}.key {dev} extbackup",
                  "     if the header is damaged, with the header backup (sdX: the drive):",
                  f"       cryptsetup open --header {drive.name}.luks-header /dev/sdX extbackup",
                  "  3. Mount it read-only:",
                  "       mkdir -p /mnt/extbackup",
                  "       mount -o ro /dev/mapper/extbackup /mnt/extbackup"]
    else:
        steps += ["  2. Unlock it the way it was encrypted (phobos did not), then",
                  "  3. Mount it read-only:", "       mkdir -p /mnt/extbackup",
                  f"       mount -o ro {dev} /mnt/extbackup"]
    steps += ["  4. Look without writing to the drive:",
              f"       borg --bypass-lock list /mnt/extbackup/{target}",
              "     then copy the repository off the drive (leave the drive's copy as it is):",
              "       mkdir -p /restore",
              f"       rsync -a /mnt/extbackup/{target}/ /restore/borg/",
              "  5. List and extract archives (keyfile mode: borg key import first):",
              "       borg list /restore/borg",
              "       mkdir -p /restore/files && cd /restore/files",
              "       borg extract /restore/borg::ARCHIVE [PATH...]",
              "     an unencrypted repo asks to confirm first; to allow it:",
              "       export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes",
              "  6. When done:", "       umount /mnt/extbackup"
              + ("; cryptsetup close extbackup" if drive.unlock == "luks" else ""),
              "  Never keep writing to both the NAS's repository and a restored copy: once a",
              "  restored copy takes new backups, retire the other (Borg would reuse nonces)."]
    return steps
