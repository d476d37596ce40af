"""What git says about the source: the revision to stamp, and what changed since a revision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from heps.core.errors import ConfigError
from heps.systems.git import Repository


@dataclass(frozen=True)
class Revision:
    commit: str
    """Full commit id, or "unknown" outside a git checkout."""
    dirty: bool


def revision(repo: Path, paths: list[Path]) -> Revision:
    """HEAD, and whether any of `paths` differs from it (tracked changes or new files)."""
    try:
        git = Repository(repo)
    except ConfigError:
        return Revision("unknown", True)
    head = git.head()
    if head is None:
        return Revision("unknown", True)
    return Revision(head, git.is_dirty(paths))


def changed_since(repo: Path, rev: str) -> list[Path]:
    """Absolute paths changed between `rev` and the working tree, untracked files included."""
    return Repository(repo).changed_since(rev)
