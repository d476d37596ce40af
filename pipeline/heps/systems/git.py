"""Git for promotions: clone the target, commit as the configured author, push with retry.

Every push that loses a race is retried on the new head: fetch, reset to it, compute the
pins again from scratch (so two promotions that touch different apps never conflict),
commit, push, a bounded number of times. A rejection that is not a lost race (a hook, a
protected branch) fails at once with the remote's own words, credentials stripped.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from pathlib import Path

from heps.core.errors import StageError
from heps.core.settings import Identity

_CREDENTIALS = re.compile(r"(\w+://)[^/\s]+@")  # greedy: up to the last @, one in a password too
_LOST_RACE = ("fetch first", "non-fast-forward", "cannot lock ref", "but expected", "stale info")


def scrub(text: str) -> str:
    """Remove user:password@ from every URL in `text`."""
    return _CREDENTIALS.sub(r"\1***@", text)


def git(
    cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})},
    )
    if check and done.returncode != 0:
        raise StageError("promote", scrub(f"git {args[0]} failed: {done.stderr.strip()}"))
    return done


def commit(
    cwd: Path, paths: list[Path], message: str, author: Identity, committer: Identity
) -> str:
    """Commit exactly `paths` (nothing else staged sneaks in); the new commit id."""
    env = {
        "GIT_AUTHOR_NAME": author.name,
        "GIT_AUTHOR_EMAIL": author.email,
        "GIT_COMMITTER_NAME": committer.name,
        "GIT_COMMITTER_EMAIL": committer.email,
    }
    rel = [str(p.relative_to(cwd)) for p in paths]
    git(cwd, "add", "--", *rel)
    git(cwd, "commit", "-q", "-m", message, "--", *rel, env=env)
    return git(cwd, "rev-parse", "HEAD").stdout.strip()


def push(cwd: Path, branch: str) -> tuple[bool, str]:
    """(pushed, why not): False with the remote's text when the push lost a race."""
    done = git(cwd, "push", "--porcelain", "origin", f"HEAD:refs/heads/{branch}", check=False)
    if done.returncode == 0:
        return True, ""
    output = scrub(done.stderr + done.stdout)
    if any(marker in output for marker in _LOST_RACE):  # incl. a ref lock lost mid-update
        return False, output
    remote = [
        line[len("remote:") :].strip()
        for line in output.splitlines()
        if line.startswith("remote:") and line[len("remote:") :].strip()
    ]
    reason = re.search(r"\[remote rejected\][^(]*\(([^)]*)\)", output)
    detail = "; ".join(remote) or (reason.group(1) if reason else output.strip().splitlines()[-1])
    raise StageError("promote", f"the remote refused the push to {branch}: {detail}")


def refresh(cwd: Path, branch: str) -> None:
    """Move to the remote's newest head of `branch`, dropping our unpushed commit."""
    git(cwd, "fetch", "-q", "origin", branch)
    git(cwd, "reset", "-q", "--hard", "FETCH_HEAD")


def backoff(attempt: int) -> None:
    """Exponential with full jitter, capped at 4 s, so racing writers spread out."""
    time.sleep(random.uniform(0, min(4.0, 0.2 * 2**attempt)))  # noqa: S311 - jitter, not crypto
