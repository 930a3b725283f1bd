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


# The restore on a machine that never saw the NAS, as the sheet prints it and as
# docs/recovery.md writes it (a test keeps the two the same): {luks_uuid}, {fs_uuid} and
# {repo_dir} are the drive's values on the sheet and shell variables in the guide.
UNLOCK_LUKS = ('cryptsetup open --readonly "$(blkid -U {luks_uuid})" extbackup',
               "mkdir -p /mnt/extbackup",
               "mount -o ro /dev/mapper/extbackup /mnt/extbackup")
MOUNT_PLAIN = ("mkdir -p /mnt/extbackup",
               "mount -o ro -U {fs_uuid} /mnt/extbackup")
BORG_SETTINGS = ("export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes",
                 "export BORG_BASE_DIR=~/borg-restore",
                 "REPO=/mnt/extbackup/{repo_dir}")
PASSPHRASE = "read -rsp 'Borg passphrase: ' BORG_PASSPHRASE && export BORG_PASSPHRASE"
UNENCRYPTED = "export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes"
KEY_IMPORT = 'borg --bypass-lock key import "$REPO" {repo}-key.txt'
FIND = ('borg --bypass-lock list --last 3 "$REPO"',
        'ARCHIVE=$(borg --bypass-lock list --last 1 --short "$REPO")',
        "WANTED=etc/fstab",
        'FILE=$(borg --bypass-lock list --short "$REPO::$ARCHIVE" | grep -m1 -- "$WANTED\\$")')
EXTRACT = ("mkdir -p ~/restore-drive && cd ~/restore-drive",
           'borg --bypass-lock extract "$REPO::$ARCHIVE" "$FILE"')
DONE = ("cd / && umount /mnt/extbackup",)
DONE_LUKS = "cryptsetup close extbackup"


def _commands(lines: tuple[str, ...], **values: str) -> list[str]:
    return [f"       {line.format(**values)}" for line in lines]


def _restore_steps(config: Config, drive: Drive) -> list[str]:
    jobs = list(copiers_of(config, drive.name).values())
    repo_name = jobs[0].repo if jobs else None
    repo = config.repos[repo_name] if repo_name else None
    target = repo_target(jobs[0], config) if jobs else "borg"
    luks = drive.unlock == "luks"
    tools = "cryptsetup borgbackup" if luks else "borgbackup"
    steps = [f"  (Debian: apt install {tools}; run as root, in one bash shell)"]
    if luks:
        steps += ["  1. Plug the drive in. Unlock it (type the recovery passphrase) and mount "
                  "it read-only:", *_commands(UNLOCK_LUKS, luks_uuid=drive.uuid),
                  "     with a copy of the keyfile instead of the passphrase: add "
                  f"--key-file {drive.name}.key after --readonly;",
                  "     a damaged header: use the header backup, naming the drive's device "
                  "(sdX):",
                  f"       cryptsetup open --readonly --header {drive.name}.luks-header "
                  "/dev/sdX extbackup",
                  "     mount says the journal needs recovery: mount -o ro,noload ..."]
    else:
        steps += ["  1. Plug the drive in and mount it read-only (phobos did not encrypt it):",
                  *_commands(MOUNT_PLAIN, fs_uuid=drive.uuid)]
    steps += ["  2. Tell Borg where the copy is, and the passphrase (Borg reads the copy "
              "where it is, without a lock):", *_commands(BORG_SETTINGS, repo_dir=target)]
    if repo is not None and repo.encryption == "none":
        steps += _commands((UNENCRYPTED,))
    else:
        steps += _commands((PASSPHRASE,))
    if repo is not None and "keyfile" in repo.encryption:
        steps += ["     keyfile mode: import the exported key first "
                  "(phobos repo key-export made it):",
                  *_commands((KEY_IMPORT,), repo=repo_name or "")]
    holding = str(config.storage.holding).strip("/")
    host = min(config.hosts, default="HOST")
    steps += ["  3. The archives (newest last), the newest, and the file (WANTED: the end of "
              "its path):", *_commands(FIND),
              f"     paths have no leading /; host {host}'s /etc is {holding}/{host}/etc; "
              f"a directory works too (WANTED={holding}/{host})",
              "  4. Extract it into an empty directory, never over a running system's /:",
              *_commands(EXTRACT),
              "     (the whole archive: leave out \"$FILE\")",
              "  5. When done:", *_commands(DONE)]
    if luks:
        steps += _commands((DONE_LUKS,))
    steps += ["  Never keep writing to both the NAS's repository and a restored copy: once a",
              "  restored copy takes new backups, retire the other (Borg would reuse nonces)."]
    return steps
