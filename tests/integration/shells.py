"""Interactive shells driven like a person at a terminal, for the completion tests.

bash and zsh run interactively in a pseudo-terminal: the test types a command line and
TAB, the shell's own completion machinery (readline and ``complete -F`` in bash,
``compinit`` and the completion widgets in zsh) runs phobos's script, and a thin
wrapper records what the script offered to a file: ``COMPREPLY`` in bash, what
``compadd`` accepted (``-O``: after zsh's own matching against the typed prefix) in zsh.
fish completes with its own ``complete --do-complete``. All three get the venv's
``phobos`` first on PATH, so the scripts' name look-ups run the phobos under test.
"""

from __future__ import annotations

import fcntl
import os
import select
import shlex
import signal
import struct
import subprocess
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import venv_path

TIMEOUT = 60.0
DONE = "--completion-done--"  # the last line of every record

BASH_SETUP = """\
PS1='$ '; bind 'set bell-style none'
source {script}
_phobos_capture() {{
    _phobos
    printf '%s\\n' "${{COMPREPLY[@]}}" {done} > {capture}.part && mv {capture}.part {capture}
}}
complete -F _phobos_capture phobos
"""

# The script is installed as zsh installs it (autoloaded from fpath by its #compdef
# line); compadd is wrapped to record the matches it accepts, and a completer around
# zsh's own _complete writes the end mark.
ZSH_SETUP = """\
PS1='$ '; LISTMAX=100000; unsetopt beep
fpath=({functions} $fpath); autoload -U compinit; compinit -u -D
compadd() {{
    if (( ${{@[(I)-[OAD]*]}} )); then builtin compadd "$@"; return; fi
    local -a found
    builtin compadd -O found "$@"
    (( $#found )) && print -rl -- "${{found[@]}}" >> {capture}.part
    builtin compadd "$@"
}}
_recorded_complete() {{
    _complete; local ret=$?
    print -r -- {done} >> {capture}.part; mv {capture}.part {capture}
    return ret
}}
zstyle ':completion:*' completer _recorded_complete
"""


def shell_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": venv_path(os.environ.get("PATH")), "HOME": str(home), "TERM": "dumb",
           "LANG": "C.UTF-8"}
    env.update(extra or {})
    return env


@dataclass
class Terminal:
    """One interactive shell on a pseudo-terminal."""

    argv: list[str]
    env: dict[str, str]
    capture: Path
    process: subprocess.Popen[bytes] | None = None
    master: int = -1
    output: bytearray = field(default_factory=bytearray)
    serial: int = 0

    def start(self, setup: str) -> None:
        self.master, slave = os.openpty()
        # Wide enough that no line is scrolled or wrapped: the test reads the echo.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 200, 2000, 0, 0))
        self.process = subprocess.Popen(self.argv, stdin=slave, stdout=slave, stderr=slave,
                                        env=self.env, start_new_session=True,
                                        cwd=self.env["HOME"])
        os.close(slave)
        for line in setup.splitlines():
            self._type(line + "\n")
        self._settle()

    def _type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def _settle(self) -> None:
        """Wait until the shell has handled everything typed so far: it echoes a marker
        computed by arithmetic, so the typed line itself never matches."""
        self.serial += 1
        self._type(f"echo settled-$(( {self.serial} * 1000 + 7 ))\n")
        self._wait_for(f"settled-{self.serial * 1000 + 7}")

    def _wait_for(self, marker: str, *, keep: bool = False) -> None:
        """Read the terminal until ``marker`` shows; then forget what was read, unless
        ``keep``."""
        deadline = time.monotonic() + TIMEOUT
        while marker.encode() not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.argv[0]} did not answer; it printed:\n"
                                     + self.output.decode(errors="replace")[-2000:])
            self._drain(remaining)
        if not keep:
            del self.output[:]

    def _drain(self, seconds: float) -> None:
        ready, _, _ = select.select([self.master], [], [], seconds)
        if ready:
            try:
                self.output += os.read(self.master, 65536)
            except OSError:  # the shell exited
                raise AssertionError("the shell exited:\n" + self.output.decode(
                    errors="replace")[-2000:]) from None

    def complete(self, line: str) -> list[str]:
        """What completion offered for ``line`` (TAB at its end), sorted.

        TAB is typed once the shell has echoed the line (typed ahead in one burst, bash's
        readline sometimes took the TAB for text), and the line is dropped (Ctrl-U) once
        the completion has written its record."""
        self.capture.unlink(missing_ok=True)
        self._type(line)
        self._wait_for(line.rsplit(" ", 1)[-1] or line.rstrip().rsplit(" ", 1)[-1],
                       keep=True)
        self._type("\t")
        deadline = time.monotonic() + TIMEOUT
        while not self.capture.exists():
            assert time.monotonic() < deadline, f"no completion for {line!r}: " + \
                self.output.decode(errors="replace")[-2000:]
            self._drain(0.02)
        self._type("\x15")
        self._settle()
        return sorted(set(self.capture.read_text().split("\n")) - {"", DONE})

    def close(self) -> None:
        if self.process is not None:
            self._type("exit\n")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.master >= 0:
            os.close(self.master)


def bash(script: Path, home: Path, env: dict[str, str] | None = None) -> Terminal:
    terminal = Terminal(["bash", "--norc", "--noprofile", "-i"], shell_env(home, env),
                        home / "bash-offered")
    terminal.start(BASH_SETUP.format(script=shlex.quote(str(script)), done=DONE,
                                     capture=shlex.quote(str(terminal.capture))))
    return terminal


def zsh(script: Path, home: Path, env: dict[str, str] | None = None) -> Terminal:
    functions = home / "zsh-functions"
    functions.mkdir(exist_ok=True)
    (functions / "_phobos").write_text(script.read_text())
    terminal = Terminal(["zsh", "-f", "-i"], shell_env(home, env), home / "zsh-offered")
    terminal.start(ZSH_SETUP.format(functions=shlex.quote(str(functions)), done=DONE,
                                    capture=shlex.quote(str(terminal.capture))))
    return terminal


def fish(script: Path, home: Path, line: str, env: dict[str, str] | None = None) -> list[str]:
    """fish's completions of ``line`` (the words, without descriptions), sorted; the
    script is found where fish looks for completions (``$fish_complete_path``)."""
    completions = home / "fish-completions"
    completions.mkdir(exist_ok=True)
    (completions / "phobos.fish").write_text(script.read_text())
    command = (f"set -p fish_complete_path {shlex.quote(str(completions))}; "
               f"complete --do-complete {shlex.quote(line)}")
    done = subprocess.run(["fish", "--no-config", "-c", command], capture_output=True,
                          text=True, env=shell_env(home, env), timeout=TIMEOUT,
                          cwd=home, check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return sorted({entry.split("\t", 1)[0] for entry in done.stdout.splitlines()})
