"""The only module that starts processes.

Contract of :func:`run`:

- argv lists only, never a shell;
- the child's environment is an allow-list of the parent's (PATH, locale, TZ) plus
  explicit additions; values of additions whose name looks secret are redacted;
- stdout and stderr are streamed line by line to a sink, redacted; with a progress
  reader, lines also end at a carriage return, and the reader decides what of each line
  is kept (progress lines are reported, not logged);
- a secret found in argv is refused before anything starts;
- exit codes are classified by the caller's ok/warn sets;
- on timeout or interruption (any exception while waiting, e.g. SIGTERM turned into
  :class:`~phobos.errors.Interrupted`) the child's process group gets SIGTERM, then
  SIGKILL after a grace period; the child is always reaped, and what else of its group
  lingers (a program it started) is waited for;
- the child gets SIGKILL if phobos itself dies (PR_SET_PDEATHSIG), so a SIGKILLed
  run leaves no orphan behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from phobos.core.model import Outcome, format_duration
from phobos.core.processes import group_members
from phobos.core.progress import LineReader, Progress, Reading
from phobos.core.step import Step
from phobos.errors import Interrupted, SecretLeak, StepFailed, ToolMissing

ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM", "HOME", "USER", "LOGNAME",
             "TMPDIR")
SECRET_ENV = re.compile(r"PASSPHRASE|PASSWORD|PASSWD|SECRET|TOKEN|_KEY$", re.IGNORECASE)
REDACTED = "********"
KILL_GRACE_SECONDS = 10.0
KILLED_GROUP_SECONDS = 5.0  # for SIGKILLed members of a child's group to exit
GROUP_POLL_SECONDS = 0.05

_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()

Diagnose = Callable[[Sequence[str]], tuple[str, str] | None]
LineSink = Callable[[str, str], None]
"""Receives (stream, line) for each output line: stream is "stdout" or "stderr"."""


class Redactor:
    """Replaces known secret values in text. Values shorter than 4 characters are
    ignored: redacting "1" everywhere would destroy logs and protect nothing."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        for secret in secrets:
            for value in (secret, secret.strip()):
                if len(value) >= 4:
                    self._secrets.add(value)

    def __call__(self, text: str) -> str:
        # Longest first, so a secret containing another is replaced whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def found_in(self, text: str) -> bool:
        return any(secret in text for secret in self._secrets)

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """What a finished process did. ``stdout`` is kept only when capture was asked for."""

    argv: tuple[str, ...]
    returncode: int
    outcome: Outcome
    duration: float
    stdout: str = ""
    tail: tuple[str, ...] = ()


ProgressSink = Callable[[Progress], None]
_LINE_END = re.compile(rb"[\r\n]")


@dataclass(slots=True, kw_only=True)
class _Streams:
    sink: LineSink | None
    redact: Redactor
    capture: bool
    tail_lines: int
    reader: LineReader | None = None
    on_progress: ProgressSink | None = None
    captured: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    partial: dict[str, bytes] = field(default_factory=dict)
    after_cr: dict[str, bool] = field(default_factory=dict)

    def feed(self, stream: str, data: bytes) -> None:
        buffered = self.partial.get(stream, b"") + data
        if self.reader is not None:
            self.partial[stream] = self._pieces(stream, buffered)
            return
        *lines, rest = buffered.split(b"\n")
        self.partial[stream] = rest
        for raw in lines:
            self._line(stream, raw)

    def _pieces(self, stream: str, buffered: bytes) -> bytes:
        """Hand on every piece ended by a newline or a carriage return (progress output
        redraws one line with CRs and may not end a line for hours); returns the rest.
        Empty pieces around a CR (the CR starting a redraw, CR LF) are not lines."""
        start = 0
        for match in _LINE_END.finditer(buffered):
            piece, cr = buffered[start:match.start()], match.group() == b"\r"
            start = match.end()
            after_cr, self.after_cr[stream] = self.after_cr.get(stream, False), cr
            if piece or not (cr or after_cr):
                self._line(stream, piece)
        return buffered[start:]

    def close(self) -> None:
        for stream, rest in self.partial.items():
            if rest:
                self._line(stream, rest)
        self.partial.clear()

    def _line(self, stream: str, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if self.reader is None:
            self._keep(stream, text)
            return
        reading = self._read(stream, text)
        if reading.progress is not None and self.on_progress is not None:
            self.on_progress(reading.progress)
        if reading.text is not None:
            for part in reading.text.split("\n"):
                self._keep(stream, part)

    def _read(self, stream: str, text: str) -> Reading:
        assert self.reader is not None
        try:
            return self.reader(stream, text)
        except Exception:  # a reader's bug must not stop the step: keep the line as it is
            return Reading(text)

    def _keep(self, stream: str, text: str) -> None:
        if self.capture and stream == "stdout":
            self.captured.append(text)
            return
        text = self.redact(text)
        self.tail.append(f"{stream}: {text}" if stream == "stderr" else text)
        del self.tail[: -self.tail_lines]
        if self.sink is not None:
            self.sink(stream, text)


def child_env(additions: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed part of our environment plus explicit additions."""
    env = {key: os.environ[key] for key in ENV_ALLOW if key in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    # Tools installed next to phobos (Borg 1.4 pip-installed into phobos's venv) are
    # found even when that venv is not on PATH: `.venv/bin/phobos demo` just works.
    own_bin = os.path.dirname(sys.executable)
    if own_bin not in env["PATH"].split(os.pathsep):
        env["PATH"] += os.pathsep + own_bin
    env.setdefault("LANG", "C.UTF-8")
    env.update(additions or {})
    return env


def secret_env_values(env: Mapping[str, str]) -> list[str]:
    """Values of variables whose names say they hold secrets."""
    return [value for key, value in env.items() if SECRET_ENV.search(key)]


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL it if phobos dies, and take stop
    signals again (the parent held them while starting it)."""
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold stop signals while a child is being started. A handler raising in the middle
    of ``subprocess.Popen`` (after the fork) would leave a started child nobody knows:
    never stopped, never reaped, still writing (a ``mount`` completing after the drive's
    cleanup looked). Python runs handlers in the main thread only: other threads need
    nothing held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    ok_codes: Iterable[int] = (0,),
    warn_codes: Iterable[int] = (),
    timeout: float | None = None,
    sink: LineSink | None = None,
    capture: bool = False,
    cwd: str | Path | None = None,
    stdin_data: bytes | None = None,
    pass_fds: Sequence[int] = (),
    check: bool = True,
    explain: Callable[[int], str] | None = None,
    diagnose: Diagnose | None = None,
    on_start: Callable[[int], None] | None = None,
    tail_lines: int = 40,
    reader: LineReader | None = None,
    on_progress: ProgressSink | None = None,
) -> Result:
    """Run ``argv`` to completion and classify its exit code.

    With ``check`` (the default) a failing exit code raises :class:`StepFailed` whose
    message names the program, the code, ``explain(code)`` if given, and the last
    stderr lines. ``capture`` keeps stdout in the result instead of streaming it (for
    JSON output). ``on_start`` receives the child's PID (= its process group).
    ``reader`` reads the program's progress output (see :mod:`phobos.core.progress`);
    ``on_progress`` receives what it reports.
    """
    full_env = child_env(env)
    redact = Redactor(secrets)
    redact.add(*secret_env_values(env or {}))
    _refuse_secrets_in_argv(argv, redact)
    streams = _Streams(sink=sink, redact=redact, capture=capture, tail_lines=tail_lines,
                       reader=reader, on_progress=on_progress)
    started = time.monotonic()
    proc = _supervise(argv, full_env, cwd, pass_fds, stdin_data, streams, timeout, on_start)
    result = _classify(argv, proc.returncode, started, streams, set(ok_codes), set(warn_codes))
    if check and result.outcome is Outcome.FAILED:
        raise failure(result, explain, diagnose)
    return result


def _supervise(argv: Sequence[str], env: dict[str, str], cwd: str | Path | None,
               pass_fds: Sequence[int], stdin_data: bytes | None, streams: _Streams,
               timeout: float | None, on_start: Callable[[int], None] | None
               ) -> subprocess.Popen[bytes]:
    """Start the child and pump its output until it ends; on a timeout or any exception
    (a stop signal) stop its process group and reap it. Returns the reaped child."""
    deadline = None if timeout is None else time.monotonic() + timeout
    proc: subprocess.Popen[bytes] | None = None
    try:
        # A stop signal that comes while the child is being started is raised once it is
        # known (as the block ends): then it is stopped and reaped like any other.
        with _stop_signals_held():
            proc = _spawn(argv, env, cwd, pass_fds, stdin_data is not None)
            with _live_lock:
                _live.add(proc)
        if on_start is not None:
            on_start(proc.pid)
        _pump(proc, streams, stdin_data, deadline)
    except TimeoutError:
        assert proc is not None
        _terminate_group(proc)
        raise StepFailed(f"{os.path.basename(argv[0])} did not finish within "
                         f"{format_duration(timeout)} and was stopped",
                         "raise the job's `timeout` if the work really takes this long"
                         ) from None
    except BaseException:
        if proc is not None:
            _terminate_group(proc)
        raise
    finally:
        streams.close()
        if proc is not None:
            with _live_lock:
                _live.discard(proc)
    return proc


def failure(result: Result, explain: Callable[[int], str] | None = None,
            diagnose: Diagnose | None = None) -> StepFailed:
    """The error for a failed result: program, exit code, its meaning, last stderr lines;
    or what ``diagnose`` makes of the output, when it recognises the failure."""
    found = diagnose(result.tail) if diagnose is not None else None
    if found is not None:
        return StepFailed(*found)
    return StepFailed(_failure_message(result, explain),
                      "see the whole output with `phobos log RUN_ID` "
                      "(run ids are in `phobos history`)")


def terminate_all() -> None:
    """Stop every child started by any thread of this process (used on interruption:
    the signal reaches the main thread only, children of worker threads must stop too).
    """
    with _live_lock:
        children = list(_live)
    workers = [threading.Thread(target=_terminate_group, args=(child,)) for child in children]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


class Child:
    """A long-running child started by :func:`start` (the daemon's job runs).

    Its output is streamed to the sink by a background thread; :meth:`stop` sends
    SIGTERM to its process group, then SIGKILL after the grace period, and reaps it.
    """

    def __init__(self, popen: subprocess.Popen[bytes], streams: _Streams) -> None:
        self._popen = popen
        self._pump = threading.Thread(target=self._drain, args=(streams,), daemon=True)
        self._pump.start()

    def _drain(self, streams: _Streams) -> None:
        try:
            _pump(self._popen, streams, None, None)
        finally:
            streams.close()
            with _live_lock:
                _live.discard(self._popen)

    @property
    def pid(self) -> int:
        return self._popen.pid

    def poll(self) -> int | None:
        """The exit code once the child has exited and its output is drained."""
        if self._pump.is_alive():
            return None
        return self._popen.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        self._pump.join(timeout)
        return self.poll()

    def stop(self) -> int | None:
        """Ask the child to stop (it records itself as interrupted), wait, reap."""
        _terminate_group(self._popen)
        return self.wait(5)


def start(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
          sink: LineSink | None = None) -> Child:
    """Start ``argv`` without waiting; see :class:`Child`. Same environment rules as run."""
    redact = Redactor(secret_env_values(env or {}))
    _refuse_secrets_in_argv(argv, redact)
    streams = _Streams(sink=sink, redact=redact, capture=False, tail_lines=40)
    popen = _spawn(argv, child_env(env), None, (), False)
    with _live_lock:
        _live.add(popen)
    return Child(popen, streams)


def _refuse_secrets_in_argv(argv: Sequence[str], redact: Redactor) -> None:
    if any(redact.found_in(arg) for arg in argv):
        raise SecretLeak(f"refusing to run {argv[0]}: a secret would appear in its argv",
                         "pass secrets through a file descriptor or the environment")


def _spawn(argv: Sequence[str], env: dict[str, str], cwd: str | Path | None,
           pass_fds: Sequence[int], with_stdin: bool) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            list(argv), env=env, cwd=cwd, pass_fds=tuple(pass_fds),
            stdin=subprocess.PIPE if with_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    except FileNotFoundError as exc:
        raise ToolMissing(f"{argv[0]}: program not found",
                          f"install it (see `phobos doctor`) or fix PATH; tried {exc.filename}"
                          ) from None
    except PermissionError:
        raise ToolMissing(f"{argv[0]}: not executable", "check the file's mode") from None


def _pump(proc: subprocess.Popen[bytes], streams: _Streams, stdin_data: bytes | None,
          deadline: float | None) -> None:
    """Read both pipes until EOF, then reap. Raises TimeoutError past the deadline."""
    if proc.stdin is not None:
        _feed_stdin(proc, stdin_data or b"")
    selector = selectors.DefaultSelector()
    assert proc.stdout is not None and proc.stderr is not None
    selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
    selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
    with selector:
        while selector.get_map():
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = selector.select(timeout=None if wait is None else min(wait, 1.0))
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            for key, _ in events:
                data = os.read(key.fd, 65536)
                if data:
                    streams.feed(key.data, data)
                else:
                    selector.unregister(key.fileobj)
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        proc.wait(timeout=remaining)
    except subprocess.TimeoutExpired:
        raise TimeoutError from None


def _feed_stdin(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except BrokenPipeError:
        pass


def _terminate_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL after a grace period, always reap.

    The whole group must be gone, not only the child: a program that runs another
    (``borg with-lock REPO rsync ...``) may exit on SIGTERM at once while the program it
    started lingers, still holding the drive it writes to (rsync on a drive pulled out
    did, for minutes, and the drive could not be unmounted). Interruptions during the
    grace period are deferred: the child must be reaped even if a second Ctrl-C arrives.
    """
    group = proc.pid  # start_new_session: the child leads its own process group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    if _reaped(proc, deadline) and _group_gone(group, deadline):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
    _reaped(proc, None)
    # A SIGKILLed member exits at once, unless the kernel holds it (I/O to a device that
    # is gone): wait a little for the rest of the group, never forever.
    _group_gone(group, time.monotonic() + KILLED_GROUP_SECONDS)


def _reaped(proc: subprocess.Popen[bytes], deadline: float | None) -> bool:
    """Wait for the child to exit and reap it (by ``deadline``; None: however long)."""
    while True:
        try:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            proc.wait(timeout=remaining)
            return True
        except subprocess.TimeoutExpired:
            return False
        except Interrupted:
            continue


def _group_gone(group: int, deadline: float) -> bool:
    """Whether every process of ``group`` has exited by ``deadline``. The group's id stays
    taken while a member lives, so a signal to it cannot reach anyone else."""
    while _live_members(group):
        if time.monotonic() >= deadline:
            return False
        with contextlib.suppress(Interrupted):
            time.sleep(GROUP_POLL_SECONDS)
    return True


def _live_members(group: int) -> bool:
    """Whether ``group`` has a member that has not exited. Zombies do not count: an init
    that does not reap its adopted children (some containers' PID 1) keeps them."""
    try:
        os.killpg(group, 0)
    except (ProcessLookupError, PermissionError):
        return False  # none left (or none of phobos's: it runs as the user it started)
    return any(member.state != "Z" for member in group_members(group))


def _classify(argv: Sequence[str], code: int, started: float, streams: _Streams,
              ok: set[int], warn: set[int]) -> Result:
    if code in ok:
        outcome = Outcome.SUCCESS
    elif code in warn:
        outcome = Outcome.WARNING
    else:
        outcome = Outcome.FAILED
    return Result(argv=tuple(streams.redact(a) for a in argv), returncode=code, outcome=outcome,
                  duration=time.monotonic() - started, stdout="\n".join(streams.captured),
                  tail=tuple(streams.tail))


def describe_exit(code: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL`` for negative (signal) codes."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _failure_message(result: Result, explain: Callable[[int], str] | None) -> str:
    program = os.path.basename(result.argv[0])
    reason = describe_exit(result.returncode)
    meaning = explain(result.returncode) if explain else ""
    errors = [line[len("stderr: "):] for line in result.tail if line.startswith("stderr: ")]
    message = f"{program} failed with {reason}" + (f" ({meaning})" if meaning else "")
    if errors:
        message += ": " + " / ".join(errors[-3:])
    return message


# --- running a step outside a job ---------------------------------------------------------

StepRunner = Callable[[Step], Result]
Log = Callable[[str], None]


def direct_runner(log: Log | None = None, *, announce: bool = True) -> StepRunner:
    """Run steps straight through :func:`run` (CLI verbs, and cleanup that must run even
    after a job's deadline); output lines go to ``log``. With ``announce`` each step is
    logged first ("step NAME: argv") and its failure names it; without, only its output
    is shown (operations whose steps are an implementation detail)."""

    def sink(_stream: str, line: str) -> None:
        if log is not None:
            log(line)

    def run_step(step: Step) -> Result:
        if announce and log is not None:
            log(f"step {step.name}: {' '.join(step.argv)}")
        try:
            return run(step.argv, env=step.env, secrets=step.secrets, ok_codes=step.ok_codes,
                       warn_codes=step.warn_codes, timeout=step.timeout, sink=sink,
                       capture=step.capture, cwd=step.cwd, stdin_data=step.stdin,
                       explain=step.explain, diagnose=step.diagnose,
                       reader=step.progress() if step.progress is not None else None)
        except StepFailed as exc:
            if not announce:
                raise
            raise StepFailed(f"step {step.name}: {exc.message}", exc.hint) from None

    return run_step
