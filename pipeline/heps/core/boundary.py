"""What an error becomes at a boundary (one recipe, one command, the hook): one line.

Expected errors (`heps.core.errors`) already are one line. The environment's (a full
disk, a read-only folder) are said in one line naming the file and its folder. Anything
else is a bug: its full traceback is kept, masked, in the state folder's `tracebacks/`
and the line points there; the terminal never shows a traceback.
"""

from __future__ import annotations

import errno
import os
import traceback
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from heps.core.errors import ConfigError, HepsError, TemporaryError
from heps.core.log import Masker

_SPACE = (errno.ENOSPC, errno.EDQUOT)


class Kind(StrEnum):
    """What an error is, permanent or temporary, as kopf sorts them; `heps.cli` maps
    each kind to an exit code."""

    INPUT = "input"
    """Bad usage, settings or recipe (ConfigError): permanent."""
    ENVIRONMENT = "environment"
    """A full disk, a read-only folder (OSError): permanent until someone acts."""
    FAILURE = "failure"
    """A stage failed (StageError and the other HepsErrors)."""
    TEMPORARY = "temporary"
    """Still failing after its retries (TemporaryError)."""
    BUG = "bug"
    """Anything else: its traceback is kept."""


def describe(
    exc: BaseException, where: str, state_dir: Path | None, masker: Masker
) -> tuple[Kind, list[str]]:
    """The kind of `exc` and its lines (one, but a ConfigError's list of problems). A bug's
    traceback goes to `state_dir` (None: the default one, looked up only then)."""
    if isinstance(exc, ConfigError):
        return Kind.INPUT, exc.problems
    if isinstance(exc, TemporaryError):
        return Kind.TEMPORARY, [f"{exc} (temporary; retry later)"]
    if isinstance(exc, HepsError):
        return Kind.FAILURE, [str(exc)]
    if isinstance(exc, OSError):
        return Kind.ENVIRONMENT, [environment_line(exc)]
    if state_dir is None:
        from heps.core.settings import default_state_dir  # settings load YAML: only for bugs

        state_dir = default_state_dir()
    return Kind.BUG, [unexpected_line(exc, where, state_dir, masker)]


def environment_line(exc: OSError) -> str:
    """One line for an OSError the environment caused: what, where, the fix."""
    name = exc.filename if isinstance(exc.filename, str) else ""  # not a descriptor number
    folder = str(Path(name).parent) if name else "the state or output folder"
    if exc.errno in _SPACE:
        what = name or "a file"
        return f"no space left on the device of {folder} (writing {what}); free space there"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{name or folder}: {exc.strerror}; make {folder} writable or choose another"
    what = exc.strerror or type(exc).__name__
    return f"{name + ': ' if name else ''}{what}"


def unexpected_line(exc: BaseException, where: str, state_dir: Path, masker: Masker) -> str:
    """One line for a bug met in `where`, pointing to its traceback kept in `state_dir`."""
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    head = f"{where}: unexpected {type(exc).__name__}" + (f" ({first})" if first else "")
    kept = keep_traceback(exc, where, state_dir, masker)
    if isinstance(kept, Path):
        return masker.redact(
            f"{head}; a bug in heps, please report it with the traceback in {kept}"
        )
    return masker.redact(f"{head}; a bug in heps (its traceback could not be kept: {kept})")


def keep_traceback(exc: BaseException, where: str, state_dir: Path, masker: Masker) -> Path | str:
    """The file the masked traceback went to, or why it could not be written."""
    folder = state_dir / "tracebacks"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = folder / f"{stamp}-{os.getpid()}.txt"
    text = "".join(traceback.format_exception(exc))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # backslashreplace: a name that is not UTF-8 (a surrogate) stays readable
        path.write_text(masker.redact(f"{where}\n{text}"), "utf-8", "backslashreplace")
    except OSError as problem:
        return environment_line(problem)
    return path
