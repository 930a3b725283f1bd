"""Entry point: parse the command line, run one verb, map errors to exit codes.

This is the only place where PhobosError becomes an exit code and a message;
no traceback reaches the user for bad input. Anything else is a bug (exit 70).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from phobos.errors import ExitCode, Interrupted, PhobosError


def main(argv: Sequence[str] | None = None) -> int:
    from phobos.cli.parser import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.handler(args))
    except PhobosError as exc:
        print(f"phobos: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"phobos: hint: {exc.hint}", file=sys.stderr)
        return int(exc.exit_code)
    except Interrupted as exc:  # a stop signal outside a run's own handling
        print(f"phobos: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("phobos: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return int(ExitCode.OK)  # output piped into `head`: not an error
    except Exception as exc:
        import sqlite3
        import traceback

        if isinstance(exc, sqlite3.DatabaseError):  # only the history is SQLite: damaged
            print(f"phobos: the history database cannot be used: {exc}", file=sys.stderr)
            print("phobos: hint: `phobos doctor` checks it; the next `phobos run` moves a "
                  "damaged one aside (keeping it) and starts a fresh one", file=sys.stderr)
            return int(ExitCode.FAILED)
        traceback.print_exc()
        print("phobos: internal error (a bug): please report it with the lines above",
              file=sys.stderr)
        return int(ExitCode.INTERNAL)
    return code


if __name__ == "__main__":
    sys.exit(main())
