"""`heps promote`, `status` and `rollback` with real git, a real registry and kustomize."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from heps.core import tools
from heps.core.errors import ConfigError, StageError
from heps.gitops.overlay import yaml_files
from heps.gitops.pin import Pin
from heps.gitops.promote import _refuse_conflicts, production_branch, write_all
from heps.systems.git import Repository, scrub
from heps.systems.services import RegistryService
from tests.conftest import (
    BUSYBOX,
    Env,
    Result,
    isolated,
    read_json,
    remove_images,
    simple_recipe,
    write_recipe,
)

APPS = [f"app{i}" for i in range(8)]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def pushed_and_committed(heps: Any, env: Env, apps: list[str], report: Path) -> Path:
    """Tiny apps built and pushed, overlays using them, everything committed; the report."""
    for app in apps:
        write_recipe(
            env.repo,
            app,
            simple_recipe(app),
            Dockerfile=f"FROM {BUSYBOX}\nRUN echo {app} > /hello\n",
        )
    overlays(env.repo, apps)
    git(env.repo, "init", "-q", "-b", "main")
    git(env.repo, "add", "-A")
    git(env.repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "initial")
    result = heps(env.repo, "run", "--all", "--report", str(report))
    assert result.code == 0, result.text
    return report


def overlays(repo: Path, apps: list[str]) -> None:
    """A base using every app by recipe name, and testbed/production overlays."""
    base = repo / "k8s-overlays" / "base"
    base.mkdir(parents=True)
    (base / "kustomization.yaml").write_text("resources:\n  - apps.yaml\n")
    docs = [
        f"# {app}, pinned by the overlays\napiVersion: apps/v1\nkind: Deployment\n"
        f"metadata: {{name: {app}}}\nspec:\n  selector: {{matchLabels: {{app: {app}}}}}\n"
        f"  template:\n    metadata: {{labels: {{app: {app}}}}}\n    spec:\n      containers:\n"
        f"        - name: main\n          image: {app}\n"
        for app in apps
    ]
    (base / "apps.yaml").write_text("---\n".join(docs))
    for env in ("testbed", "production"):
        folder = repo / "k8s-overlays" / "overlays" / env
        folder.mkdir(parents=True)
        (folder / "kustomization.yaml").write_text(f"# {env}\nresources:\n  - ../../base\n")


@dataclass(frozen=True)
class Pushed:
    repo: Path
    report: Path
    namespace: str


def push_once(registry: RegistryService, tmp: Path, apps: list[str], namespace: str) -> Pushed:
    """`apps` built, smoke-tested and pushed into `namespace` from a committed repository
    under `tmp`: once per module, each test then works on a copy (`copy_of`)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in isolated(registry, namespace, tmp).items():
            mp.setenv(key, value)
        found = Env(tmp / "repo", registry, namespace)
        (found.repo / "app-recipes").mkdir(parents=True)

        def heps(repo: Path, *args: str) -> Result:
            command = [sys.executable, "-m", "heps.cli", "--repo", str(repo), *args]
            done = subprocess.run(command, capture_output=True, text=True)
            return Result(done.returncode, done.stdout, done.stderr)

        report = pushed_and_committed(heps, found, apps, tmp / "report.json")
    return Pushed(found.repo, report, namespace)


def copy_of(pushed: Pushed, env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The module's repository copied into the test's, its namespace the test's; the
    report's copy."""
    monkeypatch.setenv("HEPS_NAMESPACE", pushed.namespace)
    shutil.copytree(pushed.repo, env.repo, symlinks=True, dirs_exist_ok=True)
    report = tmp_path / "report.json"
    shutil.copyfile(pushed.report, report)
    return report


@pytest.fixture(scope="module")
def pushed(
    registry: RegistryService,
    busybox: str,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pushed]:
    """The eight apps pushed once per module (a build each test would cost 11 s)."""
    namespace = f"p{uuid.uuid4().hex[:10]}"
    yield push_once(registry, tmp_path_factory.mktemp("promote"), APPS, namespace)
    remove_images(docker_client, namespace)


@pytest.fixture
def gitops_env(
    pushed: Pushed, env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Eight tiny apps pushed to the registry, a repo with overlays (a copy of the
    module's, its namespace the test's), and a bare remote."""
    report = copy_of(pushed, env, tmp_path, monkeypatch)
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(env.repo), str(bare))
    git(env.repo, "remote", "add", "origin", str(bare))
    return {"report": report, "bare": bare, "entries": read_json(report)["recipes"]}


def one_app_report(report: Path, app: str, out: Path) -> Path:
    data = read_json(report)
    data["recipes"] = [r for r in data["recipes"] if r["name"] == app]
    out.write_text(json.dumps(data))
    return out


def test_promote_commits_only_pinned_lines_once(
    heps: Any, env: Env, gitops_env: dict[str, Any]
) -> None:
    result = heps(
        env.repo, "promote", "--overlay", "testbed", "--report", str(gitops_env["report"])
    )
    assert result.code == 0, result.text
    assert "testbed: committed" in result.out
    message = git(env.repo, "log", "-1", "--format=%B")
    digests = {e["name"]: e["digest"] for e in gitops_env["entries"]}
    assert message.startswith("promote testbed: app0 1.0.0, app1 1.0.0")
    assert f"- app3 1.0.0 {digests['app3']} (not in registry)" in message
    assert (
        git(env.repo, "log", "-1", "--format=%an <%ae>") == "HEPS delivery <delivery@heps.invalid>"
    )
    numstat = git(env.repo, "show", "--numstat", "--format=", "HEAD")
    assert numstat.split() == ["33", "0", "k8s-overlays/overlays/testbed/kustomization.yaml"]
    rendered = subprocess.run(
        [
            tools.find("kubectl") or "kubectl",
            "kustomize",
            str(env.repo / "k8s-overlays/overlays/testbed"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for entry in gitops_env["entries"]:
        assert f"image: {entry['references'][1]}@{entry['digest']}" in rendered
    again = heps(env.repo, "promote", "--overlay", "testbed", "--report", str(gitops_env["report"]))
    assert again.code == 0 and "nothing to commit" in again.out
    assert git(env.repo, "rev-list", "--count", "HEAD") == "2"


def test_image_not_in_registry_changes_nothing(
    heps: Any, env: Env, gitops_env: dict[str, Any], tmp_path: Path
) -> None:
    data = read_json(gitops_env["report"])
    data["recipes"][0]["digest"] = "sha256:" + "e" * 64
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(data))
    result = heps(env.repo, "promote", "--overlay", "testbed", "--report", str(forged))
    assert result.code == 1
    assert f"not in registry {env.registry.address}: app0@sha256:{'e' * 64}" in result.err
    assert (
        git(env.repo, "status", "--porcelain") == ""
        and git(env.repo, "rev-list", "--count", "HEAD") == "1"
    )


def test_unused_app_is_reported_not_added(heps: Any, env: Env, gitops_env: dict[str, Any]) -> None:
    write_recipe(
        env.repo,
        "orphan",
        simple_recipe("orphan"),
        Dockerfile=f"FROM {BUSYBOX}\nRUN echo orphan > /hello\n",
    )
    report = env.repo.parent / "orphan.json"
    assert heps(env.repo, "run", "orphan", "--report", str(report)).code == 0
    result = heps(env.repo, "promote", "--overlay", "testbed", "--report", str(report))
    assert result.code == 0
    assert "heps: orphan: not used by overlay testbed (nor its bases); not pinned" in result.out
    assert "nothing to commit" in result.out


def test_eight_racing_promotions_all_land(
    env: Env, gitops_env: dict[str, Any], tmp_path: Path
) -> None:
    def promote(app: str) -> subprocess.CompletedProcess[str]:
        clone = tmp_path / f"clone-{app}"
        git(tmp_path, "clone", "-q", str(gitops_env["bare"]), str(clone))
        report = one_app_report(gitops_env["report"], app, tmp_path / f"{app}.json")
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "heps.cli",
                "--repo",
                str(clone),
                "promote",
                "--overlay",
                "testbed",
                "--report",
                str(report),
                "--push",
            ],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(promote, APPS))
    assert all(r.returncode == 0 for r in results), [r.stderr[-500:] for r in results]
    log = git(gitops_env["bare"], "log", "--format=%s", "main").splitlines()
    assert len(log) == 9 and sorted(log[:8]) == [f"promote testbed: {a} 1.0.0" for a in APPS]
    final = git(gitops_env["bare"], "show", "main:k8s-overlays/overlays/testbed/kustomization.yaml")
    for entry in gitops_env["entries"]:
        assert f"digest: {entry['digest']}" in final
    assert any("after" in r.stdout and "attempts" in r.stdout for r in results)  # races happened


def test_rejected_push_fails_with_the_hook_text(
    heps: Any, env: Env, gitops_env: dict[str, Any]
) -> None:
    hook = gitops_env["bare"] / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected: open a merge request' >&2\nexit 1\n")
    hook.chmod(0o755)
    result = heps(
        env.repo, "promote", "--overlay", "testbed", "--report", str(gitops_env["report"]), "--push"
    )
    assert result.code == 1
    assert (
        "the remote refused the push to main: main is protected: open a merge request" in result.err
    )
    assert git(gitops_env["bare"], "rev-list", "--count", "main") == "1"


def test_production_from_testbed_on_a_review_branch(
    heps: Any, env: Env, gitops_env: dict[str, Any]
) -> None:
    assert (
        heps(
            env.repo,
            "promote",
            "--overlay",
            "testbed",
            "--report",
            str(gitops_env["report"]),
            "--push",
        ).code
        == 0
    )
    git(env.repo, "pull", "-q", "origin", "main")
    result = heps(env.repo, "promote", "--overlay", "production", "--from", "testbed", "--push")
    assert result.code == 0, result.text
    branch = production_branch(APPS)
    assert f"on {branch}" in result.out
    testbed = git(
        gitops_env["bare"], "show", "main:k8s-overlays/overlays/testbed/kustomization.yaml"
    )
    production = git(
        gitops_env["bare"], "show", f"{branch}:k8s-overlays/overlays/production/kustomization.yaml"
    )
    digests = sorted(line.split()[-1] for line in testbed.splitlines() if "digest:" in line)
    assert digests == sorted(
        line.split()[-1] for line in production.splitlines() if "digest:" in line
    )
    assert len(digests) == 8
    main_production = git(
        gitops_env["bare"], "show", "main:k8s-overlays/overlays/production/kustomization.yaml"
    )
    assert "digest" not in main_production  # production changes only through review


def test_status_and_rollback(heps: Any, env: Env, gitops_env: dict[str, Any]) -> None:
    assert (
        heps(
            env.repo, "promote", "--overlay", "testbed", "--report", str(gitops_env["report"])
        ).code
        == 0
    )
    first = {e["name"]: e["digest"] for e in gitops_env["entries"]}["app0"]
    recipe = env.repo / "app-recipes/app0"
    (recipe / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN echo app0 > /hello && echo v2 > /v\n")
    (recipe / "recipe.yaml").write_text(
        (recipe / "recipe.yaml").read_text().replace("1.0.0", "1.1.0")
    )
    report = env.repo.parent / "v2.json"
    assert heps(env.repo, "run", "app0", "--report", str(report)).code == 0
    assert heps(env.repo, "promote", "--overlay", "testbed", "--report", str(report)).code == 0
    status = heps(env.repo, "status", "--overlay", "testbed")
    assert status.code == 0
    row = next(line for line in status.out.splitlines() if " app0 " in line)
    assert "1.1.0-" in row and " yes " in row and first not in row
    commits = int(git(env.repo, "rev-list", "--count", "HEAD"))
    back = heps(env.repo, "rollback", "--overlay", "testbed", "app0")
    assert back.code == 0, back.text
    assert int(git(env.repo, "rev-list", "--count", "HEAD")) == commits + 1  # history kept
    assert (
        f"digest: {first}"
        in (env.repo / "k8s-overlays/overlays/testbed/kustomization.yaml").read_text()
    )
    to = heps(env.repo, "rollback", "--overlay", "testbed", "app0", "--to", "1.1.0")
    assert to.code == 0 and "committed" in to.out


def test_conflicting_pins_fail_loudly() -> None:
    ours = Pin("app0", "r/ns/app0", "1.1.0", "sha256:" + "1" * 64)
    before = {"app0": {"r/ns/app0:1.0.0@sha256:" + "0" * 64}}
    theirs = {"app0": {"r/ns/app0:1.2.0@sha256:" + "2" * 64}}
    with pytest.raises(
        StageError, match=r"conflicting pins for app0: the remote now has r/ns/app0:1\.2\.0"
    ):
        _refuse_conflicts(before, theirs, [ours])
    _refuse_conflicts(before, {"app0": {ours.reference}}, [ours])  # same pin: no conflict
    _refuse_conflicts(before, before, [ours])  # untouched: no conflict


def test_credentials_are_scrubbed_from_urls() -> None:
    assert scrub("fatal: https://ci:s3cret@git.example/heps.git refused") == (
        "fatal: https://***@git.example/heps.git refused"
    )


def test_run_promote_pins_what_the_run_just_pushed(
    heps: Any, env: Env, gitops_env: dict[str, Any]
) -> None:
    refused = heps(env.repo, "run", "app1", "--no-push", "--promote", "testbed")
    assert refused.code == 2 and "drop --no-push" in refused.err
    recipe = env.repo / "app-recipes/app1"
    (recipe / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN echo app1 > /hello && echo 2 > /v\n")
    (recipe / "recipe.yaml").write_text(
        (recipe / "recipe.yaml").read_text().replace("1.0.0", "1.0.1")
    )
    result = heps(env.repo, "run", "app1", "--promote", "testbed")
    assert result.code == 0, result.text
    message = git(env.repo, "log", "-1", "--format=%B")
    assert message.startswith("promote testbed: app1 1.0.1\n")
    pinned = (env.repo / "k8s-overlays/overlays/testbed/kustomization.yaml").read_text()
    digest = next(line.split()[3] for line in message.splitlines() if line.startswith("- app1"))
    assert "newTag: 1.0.1-g" in pinned and f"digest: {digest}" in pinned


def test_write_all_writes_every_file_or_none(tmp_path: Path) -> None:
    """One file that cannot be written (its folder is gone) leaves every file as it was,
    the ones written before it too (their old text put back), and nothing else in the
    folder; written, each file keeps its inode and mode and holds exactly its new text,
    longer or shorter than the old one."""
    files = {tmp_path / f"f{i:03d}.yaml": f"new {i}\n" * (i % 3) for i in range(100)}
    old = {path: f"old text {path.name}\n" for path in files}
    for path, text in old.items():
        path.write_text(text)
        path.chmod(0o640)
    inodes = {path: path.stat().st_ino for path in files}
    broken = dict(files)
    broken[tmp_path / "gone" / "x.yaml"] = "new\n"
    with pytest.raises(FileNotFoundError):
        write_all(broken, old)
    assert sorted(tmp_path.iterdir()) == sorted(files)
    assert {path: path.read_text() for path in files} == old
    write_all(files, old)
    assert {path: path.read_text() for path in files} == files
    assert {path: path.stat().st_ino for path in files} == inodes
    assert {path.stat().st_mode & 0o777 for path in files} == {0o640}
    assert len(list(tmp_path.iterdir())) == 100


def test_uncommitted_names_every_changed_file_of_the_folder(tmp_path: Path) -> None:
    """What a promotion must not sweep in: modified, staged and untracked files of the
    folder by their names from the top of the working tree (odd names unquoted), and
    nothing outside the folder or unchanged."""
    names = ["clean.yaml", "edited.yaml", "staged.yaml", 'caf\u00e9 "x".yaml']
    folder = tmp_path / "k8s" / "testbed"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text("a: 1\n")
    (tmp_path / "outside.yaml").write_text("a: 1\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    for name in names[1:]:
        (folder / name).write_text("a: 2\n")
    git(tmp_path, "add", str(folder / "staged.yaml"))
    (folder / "new.yaml").write_text("a: 3\n")
    (tmp_path / "outside.yaml").write_text("a: 2\n")
    found = Repository(tmp_path).uncommitted(folder)
    assert found == {f"k8s/testbed/{n}" for n in [*names[1:], "new.yaml"]}


def test_a_failed_write_puts_back_the_files_written_before(tmp_path: Path) -> None:
    """A target that cannot be written (a folder, a FIFO took its name) fails the write
    without blocking, and every file written before it gets its old text back."""
    files = {tmp_path / f"f{i}.yaml": f"new {i}\n" for i in range(10)}
    old = {path: "old\n" for path in files}
    for path in files:
        path.write_text("old\n")
    blocked = tmp_path / "f5.yaml"
    blocked.unlink()
    blocked.mkdir()
    with pytest.raises(IsADirectoryError):
        write_all(files, old)
    blocked.rmdir()
    os.mkfifo(blocked)
    with pytest.raises(OSError) as raised:  # no reader: refused at once, not waited for
        write_all(files, old)
    assert raised.value.errno == errno.ENXIO
    assert sorted(tmp_path.iterdir()) == sorted(files)
    assert [p.read_text() for p in files if p != blocked] == ["old\n"] * 9


def test_a_target_swapped_for_a_link_or_device_is_not_written_through(tmp_path: Path) -> None:
    """A symlink or a device node put in a target's place after it was read is refused
    (the overlay's symlinks were resolved when read), and what it points to is untouched."""
    elsewhere, target = tmp_path / "elsewhere.yaml", tmp_path / "t.yaml"
    elsewhere.write_text("theirs\n")
    target.symlink_to(elsewhere)
    with pytest.raises(OSError) as raised:
        write_all({target: "new\n"}, {target: "old\n"})
    assert raised.value.errno == errno.ELOOP
    assert elsewhere.read_text() == "theirs\n"
    target.unlink()
    try:  # /dev/null's numbers
        os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs root (the symlink case ran)")
    with pytest.raises(ConfigError, match=r"t\.yaml: no longer a regular file"):
        write_all({target: "new\n"}, {target: "old\n"})


def test_a_hard_linked_file_is_replaced_not_written_through(tmp_path: Path) -> None:
    """A file with another name (a hard link from outside the overlay) is replaced by a
    new file with its mode: its other name keeps the old text."""
    overlay, outside = tmp_path / "overlay", tmp_path / "elsewhere.yaml"
    overlay.mkdir()
    outside.write_text("old\n")
    outside.chmod(0o600)
    linked = overlay / "linked.yaml"
    os.link(outside, linked)
    write_all({linked: "new\n"}, {linked: "old\n"})
    assert linked.read_text() == "new\n" and outside.read_text() == "old\n"
    assert linked.stat().st_mode & 0o777 == 0o600
    assert sorted(overlay.iterdir()) == [linked]


def test_overlay_files_are_what_rglob_finds(tmp_path: Path) -> None:
    """The overlay's files come from directory entries, not `rglob` and `resolve()` each:
    the same files in the same order, a symlink within the folder resolved, no folder
    reached through a symlink, and a link out of the folder still refused."""
    folder = tmp_path / "overlay"
    for name in ["a.yaml", "B.YAML", "c.yml", "a.b.yaml", "x.yaml.bak", "sub/d.yaml"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}\n")
    for name in [".hidden/e.yaml", "a.b/z.yaml", "dir.yaml/f.yaml", "../elsewhere/o.yaml"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}\n")
    (folder / "linked").symlink_to("../elsewhere")
    (folder / "link.yaml").symlink_to("sub/d.yaml")
    (folder / "broken.yaml").symlink_to("nowhere.yaml")
    (folder / "folder.yaml").symlink_to("sub")
    found = sorted(p for p in folder.rglob("*.y*ml") if p.is_file())
    assert yaml_files(tmp_path, folder) == [p.resolve() for p in found]
    assert folder / "sub" / "d.yaml" in yaml_files(tmp_path, folder)
    (folder / "out.yaml").symlink_to("../elsewhere/o.yaml")
    with pytest.raises(ConfigError, match=r"out\.yaml: .*outside"):
        yaml_files(tmp_path, folder)
    (folder / "out.yaml").unlink()
    (folder / "sub" / ".git").mkdir()
    (folder / "sub" / ".git" / "config.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match=r"reaches into \.git"):
        yaml_files(tmp_path, folder)
