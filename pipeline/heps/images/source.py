"""What git says about the source: the revision to stamp, and what changed since a revision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from heps.core.errors import ConfigError

if TYPE_CHECKING:
    from heps.systems.git import Repository


def _git(repo: Path) -> Repository:
    from heps.systems.git import Repository  # GitPython: imported by what asks git, not by plan

    return Repository(repo)


@dataclass(frozen=True)
class Revision:
    commit: str
    """Full commit id, or "unknown" outside a git checkout."""
    dirty: bool


def revision(repo: Path, paths: list[Path]) -> Revision:
    """HEAD, and whether any of `paths` differs from it (tracked changes or new files)."""
    try:
        git = _git(repo)
    except ConfigError:
        return Revision("unknown", True)
    head = git.head()
    if head is None:
        return Revision("unknown", True)
    return Revision(head, git.is_dirty(paths))


def changed_since(repo: Path, rev: str) -> list[Path]:
    """Absolute paths changed between `rev` and the working tree, untracked files included."""
    return _git(repo).changed_since(rev)


def changed_between(repo: Path, rev: str, paths: list[Path]) -> list[Path] | None:
    """Tracked paths under `paths` that differ between `rev` and the working tree
    (absolute); None when git does not know `rev` (or this is no checkout)."""
    try:
        git = _git(repo)
    except ConfigError:
        return None
    if git.commit_of(rev, "--since") is None:
        return None
    return [git.toplevel / n for n in git.diff_names(rev, paths)]


def untracked(repo: Path, paths: list[Path]) -> set[Path]:
    """Files under `paths` git does not track, ignored ones included (absolute)."""
    try:
        git = _git(repo)
    except ConfigError:
        return set()
    return {git.toplevel / n for n in git.untracked(paths, ignored=True)}


def show(repo: Path, rev: str, path: Path) -> str | None:
    """The text of `path` at revision `rev`, None when it did not exist there."""
    git = _git(repo)
    data = git.show(rev, path.relative_to(git.toplevel).as_posix())
    return None if data is None else data.decode("utf-8", "replace")
