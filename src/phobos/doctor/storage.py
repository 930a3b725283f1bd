"""Doctor check area ``storage``: what the config says holds or feeds the backups is
there. The ``[storage] device`` is present (asked from blkid, which needs no udev), every
repository exists and is a Borg repository, every archive source exists (an archive job
that allows it says ``missing_ok = true``), and borgmatic accepts the configs of
borgmatic jobs. Paths on a storage device that only the backup namespace shows are left
to `phobos repo info` and the runs themselves."""

from __future__ import annotations

from pathlib import Path

from phobos.config.layout import inside, local_repos
from phobos.config.model import Config
from phobos.core import proc
from phobos.doctor.findings import Finding, error, ok, warning
from phobos.tools import borgmatic
from phobos.tools import mount as mnt

AREA = "storage"
BORGMATIC_TIMEOUT_SECONDS = 60.0


def storage_findings(config: Config) -> list[Finding]:
    findings = _device_findings(config)
    for name, path in local_repos(config):  # a server's: `phobos repo info NAME`
        findings.append(_repo_finding(config, name, path))
    from phobos.jobs.archive import ArchiveJob

    for name, job in sorted(config.jobs.items()):
        if not isinstance(job, ArchiveJob):
            continue
        for source in job.sources:
            found = _source_finding(config, name, source, job.missing_ok)
            if found is not None:
                findings.append(found)
    return findings + _borgmatic_findings(config)


def _hidden(config: Config, path: Path) -> bool:
    """On the storage device, which only the backup namespace mounts."""
    return config.storage.device is not None and inside(path, config.storage.root)


def _device_findings(config: Config) -> list[Finding]:
    device = config.storage.device
    if device is None:
        return []
    result = proc.run(mnt.find_device(device), capture=True, check=False, timeout=30)
    found = result.stdout.strip().splitlines()
    if result.returncode == 0 and found:
        return [ok(AREA, "device", f"[storage] device {device} is {found[0]}")]
    return [error(AREA, "device", f"[storage] device {device} is not attached: blkid "
                  "finds no such device, so no job can reach the storage",
                  "plug it in or fix [storage] device (`blkid` lists the devices)")]


def _repo_finding(config: Config, name: str, path: Path) -> Finding:
    check = f"repo {name}"
    if _hidden(config, path):
        return ok(AREA, check, f"{path} is on [storage] device (seen only in the backup "
                  f"namespace): `phobos repo info {name}` looks at it")
    if (path / "config").is_file() and (path / "data").is_dir():
        return ok(AREA, check, f"{path} is a Borg repository")
    if path.exists():
        return error(AREA, check, f"{path} exists but is no Borg repository",
                     f"point [repos.{name}] path at the repository, or move this away and "
                     f"run `phobos repo init {name}`")
    return error(AREA, check, f"{path} does not exist: every job of repository {name} "
                 "would fail", f"`phobos repo init {name}` creates it (or fix the path)")


def _source_finding(config: Config, job: str, source: Path, missing_ok: bool
                    ) -> Finding | None:
    if _hidden(config, source) or source.exists() or source.is_symlink():
        return None
    if missing_ok:
        return warning(AREA, f"job {job} source", f"{source} does not exist (missing_ok: "
                       "the job leaves it out)")
    return error(AREA, f"job {job} source", f"{source} does not exist: job {job} would "
                 "fail", f"fix [jobs.{job}] sources, or set missing_ok = true if it may "
                 "be absent")


def _borgmatic_findings(config: Config) -> list[Finding]:
    from phobos.jobs.borgmatic import BorgmaticJob

    findings = []
    for name, job in sorted(config.jobs.items()):
        if isinstance(job, BorgmaticJob):
            findings.append(_validate(name, job.program, list(job.configs)))
    return findings


def _validate(job: str, program: str, configs: list[Path]) -> Finding:
    check = f"job {job} borgmatic configs"
    result = proc.run(borgmatic.validate_argv(program, configs), check=False,
                      ok_codes=range(256), timeout=BORGMATIC_TIMEOUT_SECONDS)
    if result.returncode == borgmatic.USAGE_ERROR:  # borgmatic before 1.7.15
        result = proc.run(borgmatic.legacy_validate_argv(configs), check=False,
                          ok_codes=range(256), timeout=BORGMATIC_TIMEOUT_SECONDS)
    if result.returncode == 0:
        return ok(AREA, check, f"borgmatic accepts {', '.join(map(str, configs))}")
    said = borgmatic.validation_problems(result.tail)
    return error(AREA, check, f"borgmatic refuses its configs: {' / '.join(said[-3:])}"
                 if said else f"borgmatic refuses its configs (exit {result.returncode})",
                 f"fix them; `{program} -c FILE config validate` says the same")
