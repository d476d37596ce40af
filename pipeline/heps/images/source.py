"""What git says about the source: the revision to stamp, and what changed since a revision."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from heps.core.errors import ConfigError


@dataclass(frozen=True)
class Revision:
    commit: str
    """Full commit id, or "unknown" outside a git checkout."""
    dirty: bool


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def revision(repo: Path, paths: list[Path]) -> Revision:
    """HEAD, and whether any of `paths` differs from it (tracked changes or new files)."""
    head = _git(repo, "rev-parse", "HEAD")
    if head.returncode != 0:
        return Revision("unknown", True)
    status = _git(repo, "status", "--porcelain", "--", *[str(p) for p in paths])
    return Revision(head.stdout.strip(), bool(status.stdout.strip()))


def changed_since(repo: Path, rev: str) -> list[Path]:
    """Absolute paths changed between `rev` and the working tree, untracked files included."""
    diff = _git(repo, "diff", "--name-only", rev, "--")
    if diff.returncode != 0:
        raise ConfigError(
            f"--since {rev}: git does not know this revision ({diff.stderr.strip()}); "
            "name a commit, branch or tag of this repository"
        )
    untracked = _git(repo, "ls-files", "--others", "--exclude-standard", "--full-name")
    top = Path(_git(repo, "rev-parse", "--show-toplevel").stdout.strip())
    names = diff.stdout.split("\n") + untracked.stdout.split("\n")
    return [top / n for n in names if n]


def _top(repo: Path) -> Path:
    return Path(_git(repo, "rev-parse", "--show-toplevel").stdout.strip())


def changed_between(repo: Path, rev: str, paths: list[Path]) -> list[Path] | None:
    """Tracked paths under `paths` that differ between `rev` and the working tree
    (absolute); None when git does not know `rev` (or this is no checkout)."""
    diff = _git(repo, "diff", "--name-only", rev, "--", *[str(p) for p in paths])
    if diff.returncode != 0:
        return None
    top = _top(repo)
    return [top / n for n in diff.stdout.split("\n") if n]


def untracked(repo: Path, paths: list[Path]) -> set[Path]:
    """Files under `paths` git does not track, ignored ones included (absolute)."""
    done = _git(repo, "ls-files", "--others", "--full-name", "--", *[str(p) for p in paths])
    if done.returncode != 0:
        return set()
    top = _top(repo)
    return {top / n for n in done.stdout.split("\n") if n}


def show(repo: Path, rev: str, path: Path) -> str | None:
    """The text of `path` at revision `rev`, None when it did not exist there."""
    name = path.relative_to(_top(repo)).as_posix()
    done = _git(repo, "show", f"{rev}:{name}")
    return done.stdout if done.returncode == 0 else None
