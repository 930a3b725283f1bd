"""Config snippets for the schedule's tests: a command job in one line, and the seed's
nine borgmatic configurations as a chain of `after` (9 × 8 minutes from 03:00)."""

from __future__ import annotations

ARCHIVES = ("etc", "home", "root", "srv", "var-lib", "var-mail", "holding-luv",
            "holding-chew", "holding-nuhc")


def job(name: str, schedule: str | None = None, *, reads: tuple[str, ...] = (),
        writes: tuple[str, ...] = (), estimate: str | None = None, **extra: str) -> str:
    lines = [f"[jobs.{name}]", 'kind = "command"', 'argv = ["true"]']
    if schedule:
        lines.append(f'schedule = "{schedule} UTC"')
    if reads:
        lines.append(f"reads = {list(reads)!r}".replace("'", '"'))
    if writes:
        lines.append(f"writes = {list(writes)!r}".replace("'", '"'))
    if estimate:
        lines.append(f'estimate = "{estimate}"')
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def nine_archives(first: str = "", last: str = "") -> str:
    """The seed's nine borgmatic configurations as a chain of 8-minute jobs at 03:00."""
    text = first
    for index, name in enumerate(ARCHIVES):
        after = {} if index == 0 else {"after": f'["arc-{ARCHIVES[index - 1]}"]'}
        reads = ("holding:luv",) if name == "holding-luv" else ()
        text += job(f"arc-{name}", "*-*-* 03:00", reads=reads, writes=("repo:main",),
                    estimate="8m", **after)
    return text + last


HEAD = """
[repos.main]
path = "/backup/borg"

[hosts.luv]
address = "luv.example.org"
"""
