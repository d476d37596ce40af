"""Paths the tool reads and writes, resolved and kept inside the repository.

Every file heps writes is resolved (symlinks followed) and must stay under the folder it
belongs to; an overlay is named by its folder name, never by a path.
"""

from __future__ import annotations

import re
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
