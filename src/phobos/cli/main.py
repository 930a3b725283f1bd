"""Command-line verbs and their output (text tables or --json). No business logic here:
each verb loads what it needs, calls the library, and prints."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from phobos import __version__
from phobos.cli import doctor as cli_doctor
from phobos.cli import drive as cli_drive
from phobos.cli import host as cli_host
from phobos.cli import notify as cli_notify
from phobos.cli import repo as cli_repo
from phobos.cli import systemd as cli_systemd
from phobos.cli import web as cli_web
from phobos.cli.common import json_flag, load_config, no_action, print_json, verb
from phobos.cli.common import when as when

Handler = Callable[[argparse.Namespace], int]

# The names the verb modules import from here (kept for them; defined in cli_common).
_verb, _json_flag, _load, _print_json = verb, json_flag, load_config, print_json
cmd_config_help = no_action

EXIT_CODES_HELP = """exit codes:
  0   success (also a job that finished with warnings)
  1   a job or operation failed
  2   bad command line or configuration; nothing was run
  3   skipped: a resource was busy or a drive/host was absent
  4   interrupted by a signal; cleanup ran
  70  internal error in phobos (a bug: please report it)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phobos", description="Backup orchestrator for a home NAS: pulls hosts with "
        "rsync, archives with Borg, syncs off-site LUKS drives.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="config file (default: $PHOBOS_CONFIG or /etc/phobos/phobos.toml)")
    parser.add_argument("--version", action="version", version=f"phobos {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    _add_run(verbs)
    _add_status(verbs)
    _add_history(verbs)
    _add_log(verbs)
    _add_locks(verbs)
    _add_config(verbs)
    _add_schedule(verbs)
    _add_overdue(verbs)
    _add_daemon(verbs)
    _add_calendar(verbs)
    _add_demo(verbs)
    _add_completion(verbs)
    cli_host.register(verbs)
    cli_drive.register(verbs)
    cli_repo.register(verbs)
    cli_notify.register(verbs)
    cli_systemd.register(verbs)
    cli_web.register(verbs)
    cli_doctor.register(verbs)
    return parser


def _add_run(verbs: Any) -> None:
    sub = _verb(verbs, "run", "run one job now (every trigger ends here)", cmd_run)
    sub.add_argument("job", help="job name from the config")
    sub.add_argument("--trigger", default="manual",
                     choices=["manual", "timer", "device", "daemon"],
                     help="what started the run (recorded in history; default manual)")
    sub.add_argument("-q", "--quiet", action="store_true", help="do not echo the job's log")
    _json_flag(sub)


def _add_status(verbs: Any) -> None:
    sub = _verb(verbs, "status", "last outcome of every job", cmd_status)
    _json_flag(sub)


def _add_history(verbs: Any) -> None:
    sub = _verb(verbs, "history", "past runs, newest first", cmd_history)
    sub.add_argument("job", nargs="?", help="only this job")
    sub.add_argument("--limit", type=_positive_int, default=20, help="how many (default 20)")
    _json_flag(sub)


def _add_log(verbs: Any) -> None:
    sub = _verb(verbs, "log", "the full (redacted) log of one run", cmd_log)
    sub.add_argument("run_id", type=_positive_int, help="run id from `phobos history`")
    _json_flag(sub)


def _add_locks(verbs: Any) -> None:
    sub = _verb(verbs, "locks", "resource locks held right now, and by whom", cmd_locks)
    _json_flag(sub)


def _add_config(verbs: Any) -> None:
    sub = _verb(verbs, "config", "check or show the configuration", cmd_config_help)
    actions = sub.add_subparsers(dest="action", metavar="ACTION", required=True)
    check: argparse.ArgumentParser = actions.add_parser(
        "check", help="validate the config; exit 0 or 2")
    check.set_defaults(handler=cmd_config_check)
    show: argparse.ArgumentParser = actions.add_parser(
        "show", help="the validated config with defaults, secrets masked")
    show.set_defaults(handler=cmd_config_show)
    _json_flag(show)
    reference: argparse.ArgumentParser = actions.add_parser(
        "reference", help="every config key with type, default and meaning (Markdown)")
    reference.set_defaults(handler=cmd_config_reference)


def _add_schedule(verbs: Any) -> None:
    sub = _verb(verbs, "schedule", "when jobs run, how long they take, where they would "
                "overlap", cmd_schedule)
    sub.add_argument("--days", type=_positive_int, default=1, help="window length (default 1)")
    sub.add_argument("--svg", type=Path, metavar="FILE", help="also write the picture as SVG")
    _json_flag(sub)


def _add_overdue(verbs: Any) -> None:
    sub = _verb(verbs, "overdue", "jobs that missed their slot and drives past their "
                "max_age (exit 1 if any)", cmd_overdue)
    sub.add_argument("--notify", action="store_true",
                     help="tell the notifiers, once per episode (for an hourly timer)")
    _json_flag(sub)


def _add_daemon(verbs: Any) -> None:
    _verb(verbs, "daemon", "run jobs on schedule and watch for drives (without systemd)",
          cmd_daemon)


def _add_calendar(verbs: Any) -> None:
    sub = _verb(verbs, "calendar", "normalize an OnCalendar expression and show its next "
                "elapses, laid out like `systemd-analyze calendar`", cmd_calendar)
    sub.add_argument("expression", nargs="+", help="e.g. 'Sun *-*-* 07:00'")
    sub.add_argument("--iterations", type=_positive_int, default=1,
                     help="how many elapses to show (default 1)")
    sub.add_argument("--base-time", metavar="TIME",
                     help="compute from this time ('YYYY-MM-DD HH:MM:SS [UTC]'), not now")


def _add_completion(verbs: Any) -> None:
    sub = _verb(verbs, "completion", "print the shell completion script "
                "(bash: `source <(phobos completion bash)`)", cmd_completion)
    sub.add_argument("shell", choices=["bash"], help="the shell")


def _add_demo(verbs: Any) -> None:
    sub = _verb(verbs, "demo", "run the whole flow in a throw-away sandbox", cmd_demo)
    sub.add_argument("--dir", type=Path, help="sandbox directory to use and keep")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


# --- helpers -----------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table, columns padded to their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)


def _open_history(config: Any) -> Any:
    from phobos.core.history import History

    history = History.open(config.paths.state)
    history.recover()
    return history


# --- verbs -------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from phobos.core.model import Trigger, format_duration
    from phobos.core.runner import echo_stderr, run_job

    config = _load(args)
    report = run_job(config, args.job, Trigger(args.trigger),
                     echo=None if args.quiet else echo_stderr)
    if args.json:
        _print_json({"run_id": report.run_id, "job": report.job,
                     "outcome": str(report.outcome), "exit_code": int(report.exit_code),
                     "message": report.message, "duration": report.duration})
    else:
        tail = f": {report.message}" if report.message else ""
        print(f"{report.job}: {report.outcome} in {format_duration(report.duration)} "
              f"(run {report.run_id}){tail}")
    return int(report.exit_code)


def status_entries(config: Any, history: Any, now: datetime) -> list[dict[str, Any]]:
    """Per job: last run, next run, overdue — the data behind `phobos status`."""
    from phobos.schedule.plan import job_timing, typical_duration

    latest = history.latest_per_job()
    successes = history.last_success_per_job()
    firsts = history.first_runs()
    entries = []
    for name, job in sorted(config.jobs.items()):
        run = latest.get(name)
        timing = job_timing(job, now, successes.get(name), firsts.get(name),
                            typical_duration(history, name, job))
        entries.append({"job": name, "kind": str(job.kind), "schedule": job.schedule,
                        "last": None if run is None else run.as_json(),
                        **timing.as_json()})
    return entries


def cmd_status(args: argparse.Namespace) -> int:
    from phobos.core.model import format_duration
    from phobos.schedule.summaries import summary

    config = _load(args)
    history = _open_history(config)
    entries = status_entries(config, history, datetime.now().astimezone())
    history.close()
    if args.json:
        _print_json({"jobs": entries})
        return 0
    rows = []
    for entry in entries:
        last = entry["last"] or {}
        outcome = last.get("outcome", "never run")
        rows.append([entry["job"], entry["kind"], outcome + (" (OVERDUE)" if entry["overdue"]
                                                             else ""),
                     when(last.get("started")), format_duration(last.get("duration")),
                     when(entry["next_run"]) if entry["schedule"] else "on trigger",
                     summary(entry["kind"], last.get("stats"))[:60]])
    print(table(["JOB", "KIND", "LAST", "WHEN", "TOOK", "NEXT", "DETAIL"], rows))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from phobos.core.model import format_duration

    config = _load(args)
    if args.job is not None:
        config.job(args.job)  # a clear error for an unknown name
    history = _open_history(config)
    runs = history.runs(args.job, args.limit)
    history.close()
    if args.json:
        _print_json({"runs": [r.as_json() for r in runs]})
        return 0
    rows = [[str(r.id), r.job, r.trigger, when(r.started), format_duration(r.duration),
             str(r.outcome), (r.message or "")[:60]] for r in runs]
    print(table(["RUN", "JOB", "TRIGGER", "STARTED", "TOOK", "OUTCOME", "MESSAGE"], rows))
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    config = _load(args)
    history = _open_history(config)
    run = history.run(args.run_id)
    lines = list(history.log_lines(args.run_id))
    steps = history.steps(args.run_id)
    history.close()
    if args.json:
        _print_json({"run": run.as_json(), "steps": steps,
                     "log": [{"ts": x.ts, "stream": x.stream, "line": x.line} for x in lines]})
        return 0
    print(f"run {run.id}: job {run.job} ({run.kind}, {run.trigger}) {run.outcome}")
    for line in lines:
        stamp = time.strftime("%H:%M:%S", time.localtime(line.ts))
        marker = {"stderr": "!", "phobos": "#"}.get(line.stream, " ")
        print(f"{stamp} {marker} {line.line}")
    return 0


def cmd_locks(args: argparse.Namespace) -> int:
    from phobos.core.locks import holders

    config = _load(args)
    found = holders(config.paths.run / "locks")
    if args.json:
        _print_json({"locks": [{"resource": h.resource, "job": h.job, "run_id": h.run_id,
                                "pid": h.pid, "since": h.since,
                                "mode": "write" if h.write else "read"} for h in found]})
        return 0
    if not found:
        print("no locks held")
        return 0
    rows = [[h.resource, "write" if h.write else "read", h.job, str(h.run_id), str(h.pid),
             when(h.since)] for h in found]
    print(table(["RESOURCE", "MODE", "JOB", "RUN", "PID", "SINCE"], rows))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _load(args)
    kinds: dict[str, int] = {}
    for job in config.jobs.values():
        kinds[str(job.kind)] = kinds.get(str(job.kind), 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no jobs"
    print(f"{config.source}: ok ({summary}; {len(config.hosts)} hosts, "
          f"{len(config.repos)} repos, {len(config.drives)} drives)")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from phobos.config.model import to_plain

    config = _load(args)
    plain = to_plain(config)
    if args.json:
        _print_json(plain)
    else:
        _print_toml_like(plain)
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    from phobos.config.reference import render

    print(render(), end="")
    return 0


def _print_toml_like(plain: dict[str, Any], prefix: str = "") -> None:
    scalars = {k: v for k, v in plain.items() if not isinstance(v, dict)}
    for key, value in scalars.items():
        print(f"{key} = {json.dumps(value)}")
    for key, value in plain.items():
        if isinstance(value, dict):
            print(f"\n[{prefix}{key}]")
            _print_toml_like(value, f"{prefix}{key}.")


def cmd_schedule(args: argparse.Namespace) -> int:
    from phobos.schedule.plan import plan_window
    from phobos.schedule.timeline import plan_json, render_svg, render_text

    config = _load(args)
    history = _open_history(config)
    start = datetime.now().astimezone().replace(minute=0, second=0, microsecond=0)
    plan = plan_window(config, history, start, start + timedelta(days=args.days))
    history.close()
    if args.svg is not None:
        args.svg.write_text(render_svg(plan, config))
    if args.json:
        _print_json(plan_json(plan))
    else:
        print(render_text(plan, config), end="")
    return 0


def cmd_overdue(args: argparse.Namespace) -> int:
    from phobos.schedule.overdue import notify_new_episodes, overdue_drives, overdue_jobs

    config = _load(args)
    history = _open_history(config)
    now = datetime.now().astimezone()
    found = {**overdue_jobs(config, history, now), **overdue_drives(config, now)}
    history.close()
    notified: list[str] = []
    if args.notify:
        notified = notify_new_episodes(
            config, found, warn=lambda text: print(f"phobos: warning: {text}", file=sys.stderr))
    if args.json:
        _print_json({"overdue": [{"job": n, "due_since": d, "notified": n in notified}
                                 for n, d in sorted(found.items())]})
    elif not found:
        print("nothing overdue")
    for name, due in sorted(found.items()):
        if not args.json:
            since = f"overdue since {when(due)}" if due else "never synced"
            print(f"{name}: {since}" + (" (notified)" if name in notified else ""))
    return 1 if found else 0


def cmd_daemon(args: argparse.Namespace) -> int:
    from phobos.config.model import config_path
    from phobos.schedule.daemon import run_daemon

    config = _load(args)
    return run_daemon(config, config_path(args.config).resolve())


def cmd_calendar(args: argparse.Namespace) -> int:
    from phobos.errors import UsageError
    from phobos.oncalendar.spec import CalendarError, format_like_systemd_analyze, system_timezone

    zone = system_timezone()
    base = _parse_base_time(args.base_time, zone)
    failed = False
    for index, text in enumerate(args.expression):
        if index:
            print()
        try:
            print(format_like_systemd_analyze(text, args.iterations, base, zone), end="")
        except CalendarError as exc:
            print(f"phobos: {text!r}: {exc.message}", file=sys.stderr)
            failed = True
    if failed:
        raise UsageError("not every expression is valid (systemd would refuse the same)")
    return 0


def _parse_base_time(text: str | None, zone: Any) -> datetime:
    from phobos.errors import UsageError

    if text is None:
        return datetime.now(zone)
    value, utc, _ = text.strip().partition(" UTC")
    for layout in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            moment = datetime.strptime(value.strip(), layout)
        except ValueError:
            continue
        return moment.replace(tzinfo=UTC if utc else zone)
    raise UsageError(f"--base-time {text!r}: use 'YYYY-MM-DD HH:MM:SS', optionally + ' UTC'")


def cmd_completion(args: argparse.Namespace) -> int:
    from phobos.cli.completion import bash_script

    print(bash_script(build_parser()), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from phobos.dev.demo import run_demo

    return run_demo(args.dir)
