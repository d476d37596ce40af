"""`heps hook post-receive`: what a push to the shared bare repository sets off.

A push to the main branch that touches `app-recipes/` triggers the Jenkins main job;
where no Jenkins is configured, the hook runs `heps run --since OLD` itself in a fresh
clone of the pushed revision, so a site without Jenkins still builds on push. Other
pushes are reported and left alone (merge requests have their own job).

Configured in the bare repository (`git config`), because that is where the hook
lives: `heps.jenkins-url` (or JENKINS_URL), `heps.jenkins-job` (default heps/main),
`heps.branch` (default main). Jenkins credentials: JENKINS_USER / JENKINS_API_TOKEN.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from heps.ci import jenkins_server
from heps.core import process
from heps.core.errors import HepsError, StageError
from heps.systems.git import Repository

ZERO = "0" * 40
RECIPES = "app-recipes/"
RUN_TIMEOUT = 6 * 3600.0
"""Seconds the hook's own `heps run` may take (a first run takes 15 to 30 minutes)."""


_SHA = re.compile(r"[0-9a-f]{40}")


def post_receive(git_dir: Path, updates: Iterable[str], env: dict[str, str]) -> int:
    repo = Repository(git_dir, bare=True)
    branch = repo.config("heps.branch") or "main"
    job = repo.config("heps.jenkins-job") or "heps/main"
    url = env.get("JENKINS_URL") or repo.config("heps.jenkins-url")
    status = 0
    for line in updates:
        fields = line.split()
        if len(fields) != 3 or not all(_SHA.fullmatch(f) for f in fields[:2]):
            print(f"heps: ignoring a malformed update line: {line.strip()[:80]!r}")
            continue
        old, new, ref = fields
        if ref != f"refs/heads/{branch}" or new == ZERO:
            print(f"heps: {ref}: not {branch}; nothing to do here")
            continue
        try:  # each update on its own: one that fails says why, the others go on
            status = max(status, _update(repo, git_dir, old, new, url, job, env))
        except HepsError as exc:
            print(f"heps: error: {new[:12]}: {exc}", file=sys.stderr)
            status = 1
    return status


def _update(
    repo: Repository,
    git_dir: Path,
    old: str,
    new: str,
    url: str | None,
    job: str,
    env: dict[str, str],
) -> int:
    changed = repo.names_changed(None if old == ZERO else old, new)
    touched = [f for f in changed if f.startswith(RECIPES)]
    if not touched:
        print(f"heps: {new[:12]} changes no recipe; nothing to build")
        return 0
    print(f"heps: {new[:12]} changes {len(touched)} file(s) under {RECIPES}")
    if not url:
        return run_locally(git_dir, old, new)
    server = jenkins_server.connect(url, env)
    where, _ = jenkins_server.trigger(server, job, {}, wait=False)
    print(f"heps: triggered Jenkins job {job}: {where}")
    return 0


def run_locally(git_dir: Path, old: str, new: str) -> int:
    """`heps run --since OLD` in a fresh clone of the pushed revision."""
    # git runs hooks with GIT_DIR and friends set to the bare repository; the clone and
    # the run inside it must not inherit them
    for name in [k for k in os.environ if k.startswith("GIT_")]:
        del os.environ[name]
    with tempfile.TemporaryDirectory(prefix="heps-hook-") as tmp:
        work = Path(tmp) / "checkout"
        try:
            Repository.clone(str(git_dir), work).checkout(new)
        except StageError as exc:
            print(f"heps: cannot check out {new[:12]}: {exc}")
            return 1
        since = old if old != ZERO else f"{new}^"
        print(f"heps: no Jenkins configured; running heps run --since {since[:12]} here")
        sys.stdout.flush()
        command = [sys.executable, "-m", "heps.cli", "--repo", str(work), "run"]
        done = process.run(
            [*command, "--since", since], timeout=RUN_TIMEOUT, merge=True, on_line=print
        )
        return done.returncode
