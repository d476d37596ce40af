"""Promotion under attack or mishap: a tampered report, symlinks out of the repository,
uncommitted edits, a failing commit, a second promotion the same day, two promotions at
once. Each with its exit code, its one line, and the proof nothing was written.

Real git, real registry, real images (two tiny busybox apps, pushed once per module).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from heps.gitops.promote import production_branch
from heps.systems.services import RegistryService
from tests.conftest import BUSYBOX, Env, read_json, remove_images
from tests.pipeline.test_promote import Pushed, copy_of, git, push_once

APPS = ["alpha", "beta"]
KUSTOMIZATION = "k8s-overlays/overlays/testbed/kustomization.yaml"


@pytest.fixture(scope="module")
def pushed_once(
    registry: RegistryService,
    busybox: str,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pushed]:
    namespace = f"p{uuid.uuid4().hex[:10]}"
    yield push_once(registry, tmp_path_factory.mktemp("trust"), APPS, namespace)
    remove_images(docker_client, namespace)


@pytest.fixture
def pushed(
    pushed_once: Pushed, env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Two apps built and pushed (once per module), overlays using them, everything
    committed: a copy of the module's repository."""
    report = copy_of(pushed_once, env, tmp_path, monkeypatch)
    return {"report": report, "data": read_json(report)}


def tree_state(repo: Path) -> tuple[str, str, str]:
    """HEAD, `git status`, and the overlay's text: what a refused promotion must not change."""
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "status", "--porcelain"),
        (repo / KUSTOMIZATION).read_text(),
    )


def forged(tmp_path: Path, data: dict[str, Any], edit: Any) -> Path:
    copy = json.loads(json.dumps(data))
    edit(copy["recipes"][0])
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(copy))
    return path


EVIL = "\n  securityContext: {privileged: true}\n- name: x\n  newName: evil.example.com/x"

TAMPERED = {
    "newline-in-reference": (
        lambda e: e.__setitem__("pin", e["pin"] + EVIL),
        "recipes[0].pin: ",
        "is not an image reference",
    ),
    "foreign-registry": (
        lambda e: e.__setitem__("pin", "evil.example.com/heps/alpha:" + e["pin"].rsplit(":", 1)[1]),
        "recipes[0].pin: 'evil.example.com/heps/alpha:",
        "is not a tag of",
    ),
    "unknown-app": (
        lambda e: e.__setitem__("name", "../../x"),
        "recipes[0].name: ",
        "not a recipe",
    ),
    "digest-with-yaml": (
        lambda e: e.__setitem__("digest", e["digest"] + "\nimage: evil"),
        "recipes[0].digest: ",
        "is not a sha256 digest",
    ),
    "reason-with-newline": (
        lambda e: e.__setitem__("reason", "changed\n\nSigned-off-by: someone"),
        "recipes[0].reason: ",
        "not a short line",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_report_changes_nothing(
    heps: Any, env: Env, pushed: dict[str, Any], tmp_path: Path, case: str
) -> None:
    edit, field, problem = TAMPERED[case]
    report = forged(tmp_path, pushed["data"], edit)
    before = tree_state(env.repo)
    result = heps(env.repo, "promote", "--overlay", "testbed", "--report", str(report))
    assert result.code == 2, result.text
    (line,) = [x for x in result.err.splitlines() if x.startswith("heps: error:")]
    assert line.startswith(f"heps: error: --report {report}: {field}") and problem in line
    assert tree_state(env.repo) == before
    assert "evil" not in (env.repo / KUSTOMIZATION).read_text()


def test_report_naming_one_app_twice_is_refused(
    heps: Any, env: Env, pushed: dict[str, Any], tmp_path: Path
) -> None:
    """A second entry for alpha, first in the list, with alpha's real digest and a tag never
    pushed: the registry check kept one digest per app and the overlay got both entries."""
    data = json.loads(json.dumps(pushed["data"]))
    fake = dict(data["recipes"][0], pin=data["recipes"][0]["pin"].rsplit(":", 1)[0] + ":9.9.9")
    data["recipes"].insert(0, fake)
    report = tmp_path / "twice.json"
    report.write_text(json.dumps(data))
    before = tree_state(env.repo)
    result = heps(env.repo, "promote", "--overlay", "testbed", "--report", str(report))
    assert result.code == 2, result.text
    (line,) = [x for x in result.err.splitlines() if x.startswith("heps: error:")]
    assert line.startswith(f"heps: error: --report {report}: recipes[1].name: 'alpha' again")
    assert tree_state(env.repo) == before
    assert "9.9.9" not in (env.repo / KUSTOMIZATION).read_text()


def test_report_tag_naming_another_image_is_refused(
    heps: Any, env: Env, pushed: dict[str, Any], tmp_path: Path
) -> None:
    """alpha's old tag beside the digest of alpha's newer build: both are in the registry,
    but the tag does not hold that digest, so the pin would lie."""
    recipe = env.repo / "app-recipes/alpha"
    (recipe / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN echo alpha > /hello && echo 2 > /v\n")
    (recipe / "recipe.yaml").write_text(
        (recipe / "recipe.yaml").read_text().replace("1.0.0", "1.0.1")
    )
    newer = tmp_path / "newer.json"
    assert heps(env.repo, "run", "alpha", "--report", str(newer)).code == 0
    digest = read_json(newer)["recipes"][0]["digest"]
    git(env.repo, "checkout", "-q", "--", "app-recipes")
    report = forged(tmp_path, pushed["data"], lambda e: e.__setitem__("digest", digest))
    before = tree_state(env.repo)
    result = heps(env.repo, "promote", "--overlay", "testbed", "--report", str(report))
    assert result.code == 1
    old = pushed["data"]["recipes"][0]
    assert f"{old['references'][1]} holds {old['digest']}, not {digest}" in result.err
    assert tree_state(env.repo) == before


def test_overlay_folder_symlinked_out_of_the_repo_is_refused(
    heps: Any, env: Env, pushed: dict[str, Any], tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kustomization.yaml").write_text("resources:\n  - ../../base\n")
    folder = env.repo / "k8s-overlays/overlays/staging"
    folder.symlink_to(outside, target_is_directory=True)
    result = heps(env.repo, "promote", "--overlay", "staging", "--report", str(pushed["report"]))
    assert result.code == 2
    assert f"outside {env.repo}" in result.err
    assert (outside / "kustomization.yaml").read_text() == "resources:\n  - ../../base\n"
    assert sorted(p.name for p in outside.iterdir()) == ["kustomization.yaml"]


def test_overlay_file_symlinked_out_of_the_repo_is_refused(
    heps: Any, env: Env, pushed: dict[str, Any], tmp_path: Path
) -> None:
    outside = tmp_path / "secret-values.yaml"
    outside.write_text("image: alpha\npassword: do-not-commit\n")
    (env.repo / "k8s-overlays/overlays/testbed/values.yaml").symlink_to(outside)
    git(env.repo, "add", "-A")
    git(env.repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "link")
    before = tree_state(env.repo)
    result = heps(env.repo, "promote", "--overlay", "testbed", "--report", str(pushed["report"]))
    assert result.code == 2
    assert "k8s-overlays/overlays/testbed/values.yaml" in result.err and "outside" in result.err
    assert tree_state(env.repo) == before
    assert outside.read_text() == "image: alpha\npassword: do-not-commit\n"
    assert "do-not-commit" not in git(env.repo, "log", "-p", "--all")


def test_uncommitted_overlay_edits_refuse_the_promotion(
    heps: Any, env: Env, pushed: dict[str, Any]
) -> None:
    path = env.repo / KUSTOMIZATION
    edited = path.read_text() + "# work in progress, not for this commit\n"
    path.write_text(edited)
    head = git(env.repo, "rev-parse", "HEAD")
    result = heps(env.repo, "promote", "--overlay", "testbed", "--report", str(pushed["report"]))
    assert result.code == 2
    assert f"heps: error: {KUSTOMIZATION}: uncommitted changes" in result.err
    assert path.read_text() == edited and git(env.repo, "rev-parse", "HEAD") == head
    # the files staged meanwhile are gone: the edit is all that is left
    assert git(env.repo, "status", "--porcelain", "--untracked-files=all") == f"M {KUSTOMIZATION}"


def test_failed_commit_restores_files_and_index(
    heps: Any, env: Env, pushed: dict[str, Any]
) -> None:
    hook = env.repo / ".git/hooks/pre-commit"
    hook.write_text("#!/bin/sh\necho 'policy: no commits today' >&2\nexit 1\n")
    hook.chmod(0o755)
    before = tree_state(env.repo)
    result = heps(env.repo, "promote", "--overlay", "testbed", "--report", str(pushed["report"]))
    assert result.code == 1
    assert "git commit failed: policy: no commits today" in result.err
    assert tree_state(env.repo) == before
    assert git(env.repo, "diff", "--cached", "--name-only") == ""


def test_second_promotion_from_testbed_on_one_day_gets_its_own_branch(
    heps: Any, env: Env, pushed: dict[str, Any]
) -> None:
    assert (
        heps(env.repo, "promote", "--overlay", "testbed", "--report", str(pushed["report"])).code
        == 0
    )
    first = heps(env.repo, "promote", "--overlay", "production", "--from", "testbed")
    assert first.code == 0, first.text
    branch = production_branch(APPS)
    assert f"on {branch}\n" in first.out
    git(env.repo, "switch", "-q", "main")
    second = heps(env.repo, "promote", "--overlay", "production", "--from", "testbed")
    assert second.code == 0, second.text
    assert f"on {branch}-2\n" in second.out
    assert git(env.repo, "branch", "--show-current") == f"{branch}-2"


def test_two_local_promotions_at_once_each_commit_their_own_pins(
    env: Env, pushed: dict[str, Any], tmp_path: Path
) -> None:
    """Two `heps promote` processes in one checkout, one app each, started together: the
    checkout lock serializes them; each commit holds exactly its own app's pin."""
    reports = {}
    for index, app in enumerate(APPS):
        data = dict(pushed["data"], recipes=[pushed["data"]["recipes"][index]])
        reports[app] = tmp_path / f"{app}.json"
        reports[app].write_text(json.dumps(data))
    command = [sys.executable, "-m", "heps.cli", "--repo", str(env.repo), "promote"]
    processes = {
        app: subprocess.Popen(
            [*command, "--overlay", "testbed", "--report", str(reports[app])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for app in APPS
    }
    for app, process in processes.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, (app, out, err)
    assert git(env.repo, "status", "--porcelain") == ""
    for sha in git(env.repo, "rev-list", "--max-count=2", "HEAD").split():
        subject = git(env.repo, "log", "-1", "--format=%s", sha)
        (app,) = [a for a in APPS if a in subject]
        diff = git(env.repo, "show", "--format=", sha)
        digest = next(e["digest"] for e in pushed["data"]["recipes"] if e["name"] == app)
        other = next(e["digest"] for e in pushed["data"]["recipes"] if e["name"] != app)
        added = [line for line in diff.splitlines() if line.startswith("+")]
        assert any(line.endswith(f"digest: {digest}") for line in added), diff
        assert not any(other in line for line in added)
    pinned = (env.repo / KUSTOMIZATION).read_text()
    assert all(e["digest"] in pinned for e in pushed["data"]["recipes"])


@pytest.mark.parametrize("flag", ["--report", "--junit"])
def test_bad_output_paths_stop_the_run_before_anything_is_built(
    heps: Any,
    env: Env,
    pushed: dict[str, Any],
    tmp_path: Path,
    flag: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recipe = env.repo / "app-recipes/alpha"
    (recipe / "recipe.yaml").write_text(
        (recipe / "recipe.yaml").read_text().replace("1.0.0", "1.0.1")
    )
    not_a_folder = heps(env.repo, "run", "alpha", flag, "/etc/passwd/out.xml")
    assert not_a_folder.code == 2
    assert f"heps: error: {flag} /etc/passwd/out.xml: /etc/passwd is not a writable folder" in (
        not_a_folder.err
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (env.repo / "out").symlink_to(outside, target_is_directory=True)
    monkeypatch.chdir(env.repo)
    escaping = heps(env.repo, "run", "alpha", flag, "out/result")
    assert escaping.code == 2
    assert f"{flag}: out/result resolves to {outside / 'result'}, outside" in escaping.err
    assert list(outside.iterdir()) == []
    assert "[build]" not in not_a_folder.err + escaping.err  # nothing ran
