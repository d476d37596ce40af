"""The command's error boundary: an unexpected exception is one line and exit code 1.

The full traceback goes to a file under the state folder (HEPS_STATE_DIR, else
$XDG_STATE_HOME/heps, else ~/.local/state/heps, as the `heps` command keeps its state),
named in the line, so a terminal or a pod log never shows a traceback and nothing is lost.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import unicodedata
from collections.abc import Callable
from pathlib import Path

FAILURE = 1


def state_dir() -> Path:
    env = os.environ.get("HEPS_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "heps"


def save_traceback(exc: BaseException, program: str) -> str:
    """Write the traceback to a new file; its path, or why it could not be written."""
    folder = state_dir() / "tracebacks"
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = folder / f"{program}-{stamp}-{os.getpid()}.txt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(exc)))
    except OSError as error:
        return f"traceback not saved: {folder}: {error.strerror}"
    return f"traceback in {path}"


def printable(text: str) -> str:
    """`text` with control and format characters (ESC, CR, NUL, bidi overrides, line
    separators) as escapes: file names and trace cells reach a terminal as text only."""
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
        else c
        for c in text
    )


def say(program: str, message: str) -> None:
    """One line on stderr: `program: message`, printable."""
    print(f"{program}: {printable(message)}", file=sys.stderr)


def guarded(program: str, command: Callable[[], int]) -> int:
    """Run `command`; an exception it did not expect becomes one line on stderr and exit 1."""
    try:
        return command()
    except KeyboardInterrupt:
        say(program, "interrupted")
        return 130
    except Exception as exc:  # the boundary: anything a command did not turn into a message
        where = save_traceback(exc, program)
        line = f"internal error: {type(exc).__name__}: {exc}".splitlines()[0]
        say(program, f"{line} ({where}); please report it")
        return FAILURE
