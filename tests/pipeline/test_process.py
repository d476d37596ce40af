"""The process seam with real programs: time limit, bounded output, stop, one-line failures."""

from __future__ import annotations

import threading
import time

import pytest

from heps.core import process


def test_captures_both_streams_and_the_exit_code() -> None:
    done = process.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert done.failure() == "sh exited 3: err"


def test_a_program_past_its_time_limit_is_killed() -> None:
    started = time.monotonic()
    with pytest.raises(process.ProcessTimeout, match="sleep: no result within 0 s; killed"):
        process.run(["sleep", "30"], timeout=0.2)
    assert time.monotonic() - started < 10  # killed, not waited for


def test_a_stop_event_kills_the_program() -> None:
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(process.ProcessStopped):
        process.run(["sleep", "30"], timeout=60, stop=stop)


def test_output_beyond_the_limit_fails_without_keeping_it() -> None:
    with pytest.raises(process.ProcessError, match="printed more than"):
        process.run(["sh", "-c", "yes | head -c 3000000"], timeout=30, limit=1 << 20)


def test_lines_reach_the_callback_as_they_come() -> None:
    seen: list[str] = []
    done = process.run(
        ["sh", "-c", "echo a; echo b >&2"], timeout=10, merge=True, on_line=seen.append
    )
    assert sorted(seen) == ["a", "b"] and done.stderr == ""


def test_a_missing_program_is_one_line() -> None:
    with pytest.raises(process.ProcessError, match=r"^no-such-tool: cannot start \("):
        process.run(["/nonexistent/no-such-tool"], timeout=5)


def test_a_failure_line_masks_url_passwords() -> None:
    """The line names no URL password; the run's own secrets are masked where it is shown
    (the command's Masker on stdout and stderr)."""
    url = "https://ci:hunter2-secret@git.example/x"
    done = process.run(["sh", "-c", f"echo 'denied for {url}' >&2; exit 1"], timeout=5)
    assert "hunter2-secret" not in done.failure()
    assert done.failure() == "sh exited 1: denied for https://***@git.example/x"
    with pytest.raises(process.ProcessError) as caught:
        process.run(["sh", "-c", f"echo 'pw {url}' >&2; exit 1"], timeout=5, check=True)
    assert "hunter2-secret" not in str(caught.value)
