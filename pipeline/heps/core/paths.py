"""Paths the tool reads and writes, resolved and kept inside the folder they belong to.

`confine` is the one place a path from repository content or the command line is
resolved: symlinks followed, then refused when it leaves its root or reaches into a
`.git` folder (where a clone keeps its remote URL and hooks). Every loader calls it;
an overlay is named by its folder name, never by a path.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from heps.core.errors import ConfigError

if TYPE_CHECKING:
    from heps.core.settings import Settings

_OVERLAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def confine(
    root: Path, path: Path | str, *, file: str, field: str, base: Path | None = None
) -> Path:
    """`path` (relative to `base`, by default `root`) resolved with symlinks followed.

    A ConfigError naming `file`, `field` and `root` when the result is outside `root`
    or inside a `.git` folder under it. `root` is expected resolved (callers resolve it
    once, not per path: plan resolves thousands of paths)."""
    resolved = ((base or root) / path).resolve()
    named = f"{file}: {field}: {path}" if field else f"{file}: {path}"
    try:
        rel = resolved.relative_to(root)
    except ValueError:
        raise ConfigError(
            f"{named} resolves to {resolved}, outside {root}; "
            "use a path inside it (symlinks are followed)"
        ) from None
    if ".git" in rel.parts:
        raise ConfigError(
            f"{named} reaches into .git; git's own files are never inputs or outputs: "
            "name a tracked file instead"
        )
    return resolved


def inside(root: Path, path: Path, what: str) -> Path:
    """`path` resolved; a ConfigError when it (or a symlink on the way) leaves `root`.
    `what` names the file or flag; the same check as `confine`."""
    return confine(root.resolve(), path, file=what, field="")


def overlay_dir(root: Path, settings: Settings, overlay: str) -> Path:
    """The folder of overlay `overlay`: a folder name under overlays/, inside the repository."""
    base = root / settings.gitops.overlays_dir / "overlays"
    known = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    listed = ", ".join(known) or "none"
    if not _OVERLAY_NAME.fullmatch(overlay) or overlay not in known:
        raise ConfigError(
            f"--overlay {overlay}: not an overlay folder under "
            f"{base.relative_to(root)}; known overlays: {listed}"
        )
    folder = inside(root, base / overlay, f"--overlay {overlay}")
    if folder != base.resolve() / overlay:  # a symlink to another overlay edits that one
        raise ConfigError(
            f"--overlay {overlay}: {base.relative_to(root)}/{overlay} is a symlink to "
            f"{folder.relative_to(root.resolve())}; an overlay is a folder of its own"
        )
    return folder


def output_file(path: Path, flag: str) -> Path:
    """Where `flag` (--report, --junit, --out...) may write, checked before anything runs.

    An absolute path names its output folder itself; a relative one must resolve (symlinks
    followed) inside the current folder, so a symlink in a checkout cannot send a report
    elsewhere. The folder must exist (or be creatable) and be writable; the path must not
    be a folder. The resolved path is returned: what is checked is what gets written."""
    resolved = path.resolve() if path.is_absolute() else inside(Path.cwd(), path, flag)
    if resolved.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; name a file in it")
    folder = resolved.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {folder} is not a writable folder; name another path")
    return resolved


def output_dir(repo: Path, path: Path, flag: str) -> Path:
    """A folder heps writes into (`heps jenkins render --out`): relative to the repository,
    or absolute. Inside the repository (relative, or absolute under it) it must resolve
    inside it, so `../x` and a committed symlink to elsewhere are refused; an absolute
    path outside the repository is the operator's choice."""
    absolute = Path(os.path.abspath(repo / path))
    if absolute.is_relative_to(repo) or not path.is_absolute():
        return confine(repo, path, file=flag, field="")
    return absolute


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the file `path` (made if missing) while the block runs; a
    second holder waits. The lock goes with the process, so a killed holder frees it."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write via a temporary file beside `path` and rename: readers (and a run killed
    meanwhile) see the previous file or the new one, never half of one. An OSError names
    `path`, so a full disk says which file it refused."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
