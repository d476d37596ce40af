"""Paths the tool reads and writes, resolved and kept inside the repository.

Every file heps writes is resolved (symlinks followed) and must stay under the folder it
belongs to; an overlay is named by its folder name, never by a path.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from heps.core.errors import ConfigError
from heps.core.settings import Settings

_OVERLAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def inside(root: Path, path: Path, what: str) -> Path:
    """`path` resolved; a ConfigError when it (or a symlink on the way) leaves `root`."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ConfigError(
            f"{what}: {path} resolves to {resolved}, outside {root}; "
            "replace the symlink by a real folder or file inside the repository"
        )
    return resolved


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
    return inside(root, base / overlay, f"--overlay {overlay}")


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
