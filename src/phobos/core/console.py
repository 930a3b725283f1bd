"""What phobos tells a person while it works: one line at a time on stderr (stdout may
carry --json). Each line is one write, so lines of parallel steps (pulls of several hosts)
never interleave."""

from __future__ import annotations

import sys


def say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
