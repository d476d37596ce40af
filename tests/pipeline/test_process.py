"""The process seam with real programs: time limit, bounded output, stop, one-line failures."""

from __future__ import annotations

import threading
import time

import pytest

from heps.core import process
from heps.core.errors import ConfigError


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


def test_run_on_config_words_a_timeout_and_a_failure_as_the_callers_one_line() -> None:
    """The time-out's line is asked for once the program is killed (it may name what the
    program printed last); a failure to run gets the program's own line; an exit code is
    the caller's to read, not an error."""
    seen: list[str] = []
    with pytest.raises(ConfigError, match=r"^t\.j2: over 0 s after step 2; bound it$"):
        process.run_on_config(
            ["sh", "-c", "echo step 1; echo step 2; exec sleep 30"],
            timeout=0.5,
            slow=lambda: f"t.j2: over 0 s after {seen[-1]}; bound it",
            failed=lambda why: f"unexpected: {why}",
            on_line=seen.append,
        )
    with pytest.raises(ConfigError, match=r"^x: kustomize: no-such-tool-x: cannot start"):
        process.run_on_config(
            ["no-such-tool-x"],
            timeout=5,
            slow=lambda: "unexpected",
            failed=lambda why: f"x: kustomize: {why}",
        )
    done = process.run_on_config(
        ["sh", "-c", "exit 3"], timeout=5, slow=lambda: "", failed=lambda why: why
    )
    assert done.returncode == 3
