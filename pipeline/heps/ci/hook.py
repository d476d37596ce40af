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
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from heps.ci import jenkins_server

ZERO = "0" * 40
RECIPES = "app-recipes/"


def _git(git_dir: Path, *args: str) -> str:
    done = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def changed_files(git_dir: Path, old: str, new: str) -> list[str]:
    if old == ZERO:  # a new branch: everything in it is new
        return _git(git_dir, "ls-tree", "-r", "--name-only", new).splitlines()
    return _git(git_dir, "diff", "--name-only", old, new).splitlines()


def post_receive(git_dir: Path, updates: Iterable[str], env: dict[str, str]) -> int:
    branch = _git(git_dir, "config", "--get", "heps.branch") or "main"
    job = _git(git_dir, "config", "--get", "heps.jenkins-job") or "heps/main"
    url = env.get("JENKINS_URL") or _git(git_dir, "config", "--get", "heps.jenkins-url")
    status = 0
    for line in updates:
        old, new, ref = line.split()
        if ref != f"refs/heads/{branch}" or new == ZERO:
            print(f"heps: {ref}: not {branch}; nothing to do here")
            continue
        touched = [f for f in changed_files(git_dir, old, new) if f.startswith(RECIPES)]
        if not touched:
            print(f"heps: {new[:12]} changes no recipe; nothing to build")
            continue
        print(f"heps: {new[:12]} changes {len(touched)} file(s) under {RECIPES}")
        if url:
            server = jenkins_server.connect(url, env)
            where, _ = jenkins_server.trigger(server, job, {}, wait=False)
            print(f"heps: triggered Jenkins job {job}: {where}")
        else:
            status = max(status, run_locally(git_dir, old, new))
    return status


def run_locally(git_dir: Path, old: str, new: str) -> int:
    """`heps run --since OLD` in a fresh clone of the pushed revision."""
    # git runs hooks with GIT_DIR and friends set to the bare repository; the clone and
    # the run inside it must not inherit them
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    with tempfile.TemporaryDirectory(prefix="heps-hook-") as tmp:
        work = Path(tmp) / "checkout"
        for command in (
            ["git", "clone", "-q", "--no-checkout", str(git_dir), str(work)],
            ["git", "-C", str(work), "checkout", "-q", new],
        ):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"heps: cannot check out {new[:12]}: {done.stderr.strip()}")
                return 1
        since = old if old != ZERO else f"{new}^"
        print(f"heps: no Jenkins configured; running heps run --since {since[:12]} here")
        sys.stdout.flush()
        command = [sys.executable, "-m", "heps.cli", "--repo", str(work), "run"]
        return subprocess.run(
            [*command, "--since", since], env=env, stderr=subprocess.STDOUT
        ).returncode
