"""`heps review` on a real git history: a base image change, a new recipe, an overlay
edit and a job definition edit, with builds in the real engine and registry."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from heps import cli
from heps.core.errors import ConfigError
from heps.systems.git import Repository
from heps.systems.services import RegistryService
from tests.conftest import (
    BUSYBOX,
    REPO_ROOT,
    Env,
    internal_from,
    isolated,
    remove_images,
    simple_recipe,
    write_recipe,
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=dev", "-c", "user.email=dev@ihep.ac.cn", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture(scope="module")
def made(
    registry: RegistryService,
    busybox: str,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, str, str]]:
    """A repository whose testbed runs `lab` and `child` (promoted), committed, made once
    per module (a run and a promotion per test cost 4.5 s): the repository, its registry
    namespace and the base commit. Each test works on a copy (`history`)."""
    tmp = tmp_path_factory.mktemp("review")
    repo, namespace = tmp / "repo", f"r{uuid.uuid4().hex[:10]}"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in isolated(registry, namespace, tmp).items():
            mp.setenv(key, value)
        write_recipe(
            repo, "lab", simple_recipe("lab"), Dockerfile=f"FROM {BUSYBOX}\nRUN echo lab > /hello\n"
        )
        write_recipe(
            repo,
            "child",
            simple_recipe("child"),
            Dockerfile=internal_from("lab") + "RUN echo child > /hello\n",
        )
        base = repo / "k8s-overlays" / "base"
        base.mkdir(parents=True)
        (base / "kustomization.yaml").write_text("resources: [apps.yaml]\n")
        (base / "apps.yaml").write_text(
            "\n---\n".join(
                f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {app}}}\n"
                f"spec:\n  selector: {{matchLabels: {{app: {app}}}}}\n  template:\n"
                f"    metadata: {{labels: {{app: {app}}}}}\n    spec:\n      containers:\n"
                f"        - {{name: main, image: {app}}}\n"
                for app in ("lab", "child")
            )
        )
        testbed = repo / "k8s-overlays" / "overlays" / "testbed"
        testbed.mkdir(parents=True)
        (testbed / "kustomization.yaml").write_text("resources: [../../base]\n")
        shutil.copytree(REPO_ROOT / "jenkins", repo / "jenkins")
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "start")
        report = tmp / "first.json"
        assert cli.main(["--repo", str(repo), "run", "--all", "--report", str(report)]) == 0
        promote = ["--repo", str(repo), "promote", "--overlay", "testbed", "--report", str(report)]
        assert cli.main(promote) == 0
        yield repo, namespace, git(repo, "rev-parse", "HEAD")
    remove_images(docker_client, namespace)


@pytest.fixture
def history(made: tuple[Path, str, str], env: Env, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module's repository copied into the test's, its namespace the module's: the
    base commit."""
    repo, namespace, commit = made
    monkeypatch.setenv("HEPS_NAMESPACE", namespace)
    shutil.copytree(repo, env.repo, symlinks=True, dirs_exist_ok=True)
    return commit


def test_review_of_a_base_change_a_new_recipe_and_an_overlay_edit(
    heps: Any, env: Env, history: str, tmp_path: Path
) -> None:
    lab = env.repo / "app-recipes" / "lab"
    (lab / "Dockerfile").write_text(
        f"FROM {BUSYBOX}\nRUN echo lab > /hello && head -c 300000 /dev/zero > /pad\n"
    )
    (lab / "recipe.yaml").write_text((lab / "recipe.yaml").read_text().replace("1.0.0", "1.1.0"))
    write_recipe(
        env.repo,
        "newapp",
        simple_recipe("newapp"),
        Dockerfile=f"FROM {BUSYBOX}\nRUN echo newapp > /hello\n",
    )
    kustomization = env.repo / "k8s-overlays/overlays/testbed/kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "namePrefix: tb-\n")
    jobs_file = env.repo / "jenkins/jobs.yaml"
    jobs_file.write_text(jobs_file.read_text().replace("hourly, drift is corrected", "every hour"))
    git(env.repo, "add", "-A")
    git(env.repo, "commit", "-qm", "change")
    report = tmp_path / "run.json"
    run = heps(env.repo, "run", "--since", history, "--no-push", "--report", str(report))
    assert run.code == 0, run.text
    out, data = tmp_path / "review.md", tmp_path / "review.json"
    result = heps(
        env.repo,
        "review",
        "--base",
        history,
        "--report",
        str(report),
        "--out",
        str(out),
        "--json",
        str(data),
    )
    assert result.code == 0, result.err
    text = out.read_text()
    rows = {
        line.split(" | ")[0].strip("| "): line
        for line in text.splitlines()
        if line.startswith("| ")
    }
    assert "| lab | 1.1.0 | changed | clean | built (1/1 smoke) | +" in rows["lab"]
    assert "kB (" in rows["lab"] and " to " in rows["lab"]  # bigger by the 300 kB padding
    assert "| child | 1.0.0 | base changed | clean | built (1/1 smoke) |" in rows["child"]
    assert "| newapp | 1.0.0 | new | clean | built (1/1 smoke) |" in rows["newapp"]
    assert text.splitlines()[0] == (  # made here, not by the merge-request job: no claim
        "**This merge request changes the pipeline** (jenkins/jobs.yaml): a maintainer must "
        "read it."
    )
    assert "## Overlay testbed" in text and "+  name: tb-lab" in text
    assert "## Jenkins jobs" in text and "-  <description>Apply an overlay" in text
    assert (
        "+  <description>Apply an overlay to its cluster and check the rollout (every hour)" in text
    )
    parsed = json.loads(data.read_text())
    assert {a["name"]: a["why"] for a in parsed["apps"]} == {
        "lab": "changed",
        "child": "base changed",
        "newapp": "new",
    }
    assert parsed["base"] == history
    assert env.registry.password not in text + data.read_text()


def test_review_is_short_when_nothing_changed(heps: Any, env: Env, history: str) -> None:
    result = heps(env.repo, "review", "--base", "HEAD")
    assert result.code == 0
    assert "Nothing to review: no recipe, overlay or job changed." in result.out
    assert len(result.out.splitlines()) == 3


def test_unknown_base_is_a_usage_error(heps: Any, env: Env, history: str) -> None:
    result = heps(env.repo, "review", "--base", "no-such-branch")
    assert result.code == 2 and "--base no-such-branch: not a commit" in result.err


def test_secrets_are_masked_in_the_report(heps: Any, env: Env, history: str) -> None:
    """A Secret's data, and the registry password wherever the overlay carries it."""
    secret = env.registry.password
    kustomization = env.repo / "k8s-overlays/overlays/testbed/kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text()
        + f"secretGenerator:\n  - name: oauth\n    literals: [client-secret={secret}]\n"
        + "configMapGenerator:\n  - name: plain\n    literals: [note="
        + secret
        + "]\n"
    )
    result = heps(env.repo, "review", "--base", history)
    assert result.code == 0, result.err
    assert "+kind: Secret" in result.out and "client-secret: '***'" in result.out
    assert secret not in result.out


def test_old_trees_are_read_through_git_objects_regular_files_only(tmp_path: Path) -> None:
    """review reads the base's tree through git's object model (no tar, so no
    TarFile.extractall filter=, which Python 3.11.2 lacks): regular files keep their
    executable bit, symlinks (which could point outside) are not written."""
    repo = tmp_path / "repo"
    (repo / "a").mkdir(parents=True)
    (repo / "a/run.sh").write_text("x")
    (repo / "a/run.sh").chmod(0o755)
    (repo / "a/plain.txt").write_text("y")
    (repo / "a/link").symlink_to("/etc/passwd")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "tree"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True
        )
    out = tmp_path / "out"
    assert Repository(repo).export("HEAD", ["a", "missing"], out)
    assert (out / "a/run.sh").read_text() == "x"
    assert (out / "a/run.sh").stat().st_mode & 0o777 == 0o755
    assert (out / "a/plain.txt").stat().st_mode & 0o777 == 0o644
    assert not (out / "a/link").exists() and not (out / "a/link").is_symlink()
    assert not Repository(repo).export("HEAD", ["missing"], tmp_path / "none")
    with pytest.raises(ConfigError, match="not a git revision"):
        Repository(repo).export("--output=/tmp/x", ["a"], out)
