"""Doctor check area ``space``: each repository's filesystem has the room a Borg commit
needs (one segment plus the indexes: see :mod:`phobos.tools.borg_space`), so a nightly
archive does not fail on a full disk."""

from __future__ import annotations

from phobos.config.model import Config
from phobos.doctor.findings import Finding, error, ok, warning
from phobos.tools import borg_space

AREA = "space"


def space_findings(config: Config) -> list[Finding]:
    """Per repository on this machine: free space on its filesystem against what Borg
    needs to commit."""
    findings = []
    for name, repo in sorted(config.repos.items()):
        check = f"repo {name}"
        if repo.path is None:
            continue  # on a server: the room there is the server's to keep
        if not (repo.path / "config").is_file():
            findings.append(ok(AREA, check, f"{repo.path} is not visible here (not created "
                               "yet, or on the storage inside the backup namespace)"))
            continue
        where = borg_space.mount_point(repo.path)
        free = borg_space.free_space(repo.path)
        needs = borg_space.required_free_space(repo.path)
        room = f"{borg_space.human(free)} free on {where}; a Borg commit needs ~" \
               f"{borg_space.human(needs)}"
        if free >= needs:
            findings.append(ok(AREA, check, room))
        elif free >= needs // 4:
            findings.append(warning(AREA, check, room, _fix(name)))
        else:
            findings.append(error(AREA, check, room, _fix(name)))
    return findings


def _fix(name: str) -> str:
    return (f"free space there (prune repo {name}'s archives, then `borg compact`); on a "
            "small filesystem set a smaller max_segment_size in the repository's config")
