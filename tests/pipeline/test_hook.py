"""The post-receive hook (jenkins/hooks/post-receive) in a real bare repository, set off
by a real `git push`: it triggers the Jenkins main job (FakeJenkins, a test double) or,
with no Jenkins configured, builds and pushes right there."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from heps.ci import jenkins_jobs
from heps.core.credentials import Credentials, Secret
from heps.core.settings import RegistrySettings
from heps.systems.registry import Registry
from tests.conftest import BUSYBOX, REPO_ROOT, Env, simple_recipe, write_recipe
from tests.pipeline.fake_jenkins import FakeJenkins


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=dev", "-c", "user.email=dev@ihep.ac.cn", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def shared(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A bare repository with the hook installed, and a developer's clone of it."""
    write_recipe(
        env.repo,
        "app0",
        simple_recipe("app0"),
        Dockerfile=f"FROM {BUSYBOX}\nRUN echo app0 > /hello\n",
    )
    (env.repo / "README.md").write_text("platform\n")
    git(env.repo, "init", "-q", "-b", "main")
    git(env.repo, "add", "-A")
    git(env.repo, "commit", "-qm", "start")
    bare = tmp_path / "shared.git"
    git(tmp_path, "clone", "-q", "--bare", str(env.repo), str(bare))
    shutil.copy(REPO_ROOT / "jenkins/hooks/post-receive", bare / "hooks/post-receive")
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    monkeypatch.setenv("HEPS", str(Path(sys.executable).parent / "heps"))
    return {"bare": bare, "work": work}


def push(work: Path, change: str, ref: str = "main") -> str:
    """Commit a change and push it; what the remote (the hook) printed."""
    if change == "recipe":
        (work / "app-recipes/app0/Dockerfile").write_text(
            f"FROM {BUSYBOX}\nRUN echo app0 > /hello && echo {uuid.uuid4().hex} > /v\n"
        )
    else:
        (work / "README.md").write_text(f"platform {uuid.uuid4().hex}\n")
    git(work, "commit", "-qam", f"change {change}")
    done = subprocess.run(
        ["git", "push", "-q", "origin", f"HEAD:refs/heads/{ref}"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return "\n".join(
        line.removeprefix("remote: ")
        for line in done.stderr.splitlines()
        if line.startswith("remote:")
    )


def test_without_jenkins_the_hook_builds_and_pushes(env: Env, shared: dict[str, Path]) -> None:
    said = push(shared["work"], "recipe")
    assert "heps: no Jenkins configured; running heps run --since" in said, said
    assert "1 built, 0 skipped, 0 failed" in said, said
    registry = Registry(
        RegistrySettings(env.registry.address, env.namespace),
        Credentials(env.registry.username, Secret(env.registry.password), "test"),
    )
    assert registry.digest("app0", "1.0.0") is not None
    assert "changes no recipe; nothing to build" in push(shared["work"], "readme")


def test_with_jenkins_a_recipe_push_triggers_the_main_job(
    shared: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeJenkins("git-hook", f"tok-{uuid.uuid4().hex}")
    try:
        for name, xml in jenkins_jobs.render(REPO_ROOT).items():
            fake.configs[name] = fake.stored(xml)
        git(shared["bare"], "config", "heps.jenkins-url", fake.url)
        monkeypatch.setenv("JENKINS_USER", fake.user)
        monkeypatch.setenv("JENKINS_API_TOKEN", fake.token)
        said = push(shared["work"], "recipe")
        (item,) = fake.queue
        assert f"heps: triggered Jenkins job heps/main: {fake.url}queue/item/{item.id}/" in said
        assert item.job == "heps/main" and fake.builds == []  # queued; the hook does not wait
        assert "changes no recipe" in push(shared["work"], "readme")
        assert "refs/heads/feature: not main; nothing to do here" in push(
            shared["work"], "recipe", ref="feature"
        )
        assert fake.queue == [item]  # nothing more was started
        assert fake.token not in said
    finally:
        fake.stop()


def test_hook_command_reads_the_pushed_refs(heps: Any, shared: dict[str, Path]) -> None:
    """The same entry point by hand: stdin is `old new ref` lines, as git gives them."""
    head = git(shared["bare"], "rev-parse", "main").strip()
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "heps.cli",
            "hook",
            "post-receive",
            "--git-dir",
            str(shared["bare"]),
        ],
        input=f"{head} {head} refs/heads/main\n",
        capture_output=True,
        text=True,
    )
    assert process.returncode == 0, process.stderr
    assert "changes no recipe; nothing to build" in process.stdout
