"""Merge-request code never runs with the pipeline's credentials (issue 23).

Each hostile merge request is a real git checkout in a temporary folder, run through
`heps ci merge-request` as a subprocess of this installation's `heps` (the trusted
pipeline), with a canary registry password bound in the environment as Jenkins binds
the pull-only credential. The registry is a real one whose pull-only account has that
password. After each run: no marker file the merge request's code would write exists,
the canary is in no file under --out and in no output, and the review flags the change.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from heps.ci import review
from heps.core.errors import ConfigError
from heps.systems.services import RegistryService
from tests.conftest import (
    BUSYBOX,
    REPO_ROOT,
    free_port,
    remove_images,
    remove_references,
    simple_recipe,
    write_recipe,
)
from tests.pipeline.test_review import git

CANARY = "c4n\"ary'\\ü密码-" + uuid.uuid4().hex[:8]
"""Quotes, a backslash and non-ASCII: what naive quoting or encoding would spill."""
HEPS = Path(sys.executable).parent / "heps"


@pytest.fixture(scope="module")
def pull_registry(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient
) -> Iterator[RegistryService]:
    """A real registry as the embedded one runs: token auth, a push account and a pull-only
    account, the job's credential, whose password is the canary."""
    service = RegistryService(
        tmp_path_factory.mktemp("mr-registry"),
        f"127.0.0.1:{free_port()}",
        "heps",
        secrets.token_urlsafe(18),
        "heps-pull",
        CANARY,
        f"127.0.0.1:{free_port()}",
    )
    processes = [service.start_token_service(), service.start()]
    yield service
    for process in processes:
        process.terminate()
        process.wait(timeout=10)
    remove_references(docker_client, service.address)


@dataclass
class Checkout:
    path: Path
    base: str
    marker: Path


def _base(path: Path, marker: Path) -> str:
    """main: one recipe, the pipeline's files, the job definitions; committed."""
    write_recipe(
        path,
        "lab",
        simple_recipe("lab"),
        Dockerfile=f"FROM {BUSYBOX}\nRUN echo lab > /hello\n",
    )
    shutil.copytree(REPO_ROOT / "jenkins", path / "jenkins")
    (path / "scripts").mkdir()
    (path / "scripts/bootstrap.sh").write_text("#!/bin/sh\necho bootstrap\n")
    (path / "Makefile").write_text("all:\n\techo make\n")
    (path / "pipeline/heps").mkdir(parents=True)
    (path / "pipeline/heps/__init__.py").write_text('"""heps"""\n')
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "main")
    return git(path, "rev-parse", "HEAD")


def _writes_env(marker: Path) -> str:
    return f"env > '{marker}'"


def recipe_only(c: Checkout) -> list[str]:
    """The control: a merge request that changes only its image is not flagged."""
    return []


def structure_test_host_options(c: Checkout) -> list[str]:
    """container-structure-test would pass the host's variables in (`envVars` names them),
    mount host folders and run privileged, as the merge request's config asks."""
    folder = c.path / "app-recipes/lab"
    (folder / "structure.yaml").write_text(
        "schemaVersion: 2.0.0\n"
        "containerRunOptions:\n"
        "  envVars: [HEPS_REGISTRY_PASSWORD, HEPS_REGISTRY_USERNAME]\n"
        f"  bindMounts: ['{c.marker.parent}:/out']\n"
        "commandTests:\n"
        "  - name: leak\n"
        "    command: sh\n"
        "    args: ['-c', 'env > /out/marker']\n"
    )
    return []


def pipeline_code(c: Checkout) -> list[str]:
    (c.path / "pipeline/heps/__init__.py").write_text(
        f"import os\nopen({str(c.marker)!r}, 'w').write(repr(dict(os.environ)))\n"
    )
    return ["pipeline/heps/__init__.py"]


def bootstrap_and_makefile(c: Checkout) -> list[str]:
    (c.path / "scripts/bootstrap.sh").write_text(f"#!/bin/sh\n{_writes_env(c.marker)}\n")
    (c.path / "Makefile").write_text(f"all test lint:\n\t{_writes_env(c.marker)}\n")
    (c.path / "tox.ini").write_text(f'[testenv]\ncommands = sh -c "{_writes_env(c.marker)}"\n')
    return ["Makefile", "scripts/bootstrap.sh", "tox.ini"]


def jenkinsfile_binding_git_write(c: Checkout) -> list[str]:
    path = c.path / "jenkins/Jenkinsfile.merge-request"
    text = path.read_text().replace("'heps-registry-pull'", "'heps-delivery-git'")
    path.write_text(text.replace("ci merge-request", f"ci merge-request; {_writes_env(c.marker)}"))
    return ["jenkins/Jenkinsfile.merge-request"]


def git_hooks_and_filters(c: Checkout) -> list[str]:
    """Hooks, a clean filter, a textconv and an fsmonitor, wired in the checkout's own
    .git/config as a careless `git config core.hooksPath .githooks` would."""
    hooks = c.path / ".githooks"
    hooks.mkdir()
    for hook in ("post-checkout", "pre-commit", "post-merge", "reference-transaction"):
        (hooks / hook).write_text(f"#!/bin/sh\n{_writes_env(c.marker)}\n")
        (hooks / hook).chmod(0o755)
    (c.path / ".gitattributes").write_text("* filter=evil diff=evil\n")
    return [".gitattributes", ".githooks/post-checkout"]


def wire_git_config(c: Checkout) -> None:
    """After the merge request's commit (our own git commands must not run them)."""
    command = f'sh -c "{_writes_env(c.marker)}; cat"'
    for key, value in (
        ("core.hooksPath", ".githooks"),
        ("core.fsmonitor", f'sh -c "{_writes_env(c.marker)}" #'),
        ("filter.evil.clean", command),
        ("filter.evil.smudge", command),
        ("filter.evil.required", "true"),
        ("diff.evil.textconv", command),
        ("diff.external", command),
        ("credential.helper", f"!{_writes_env(c.marker)}; echo"),
    ):
        git(c.path, "config", key, value)


@dataclass
class Run:
    code: int
    output: str
    out: Path


def run_merge_request(c: Checkout, registry: RegistryService, tmp: Path, ns: str) -> Run:
    out = tmp / "reports"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEPS_", "DOCKER_CONFIG"))}
    env.update(
        HEPS_REGISTRY=registry.address,
        HEPS_NAMESPACE=ns,
        HEPS_REGISTRY_USERNAME=registry.pull_username,
        HEPS_REGISTRY_PASSWORD=CANARY,
        HEPS_STATE_DIR=str(tmp / "state"),
        HEPS_CA_BUNDLE="",
        DOCKER_CONFIG=str(tmp / "docker-config"),
    )
    command = [str(HEPS), "--repo", str(REPO_ROOT), "ci", "merge-request"]
    command += ["--checkout", str(c.path), "--base", c.base, "--out", str(out)]
    done = subprocess.run(command, env=env, cwd=tmp, capture_output=True, timeout=300)
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    return Run(done.returncode, output, out)


def canary_forms() -> list[bytes]:
    """The canary as bytes in any encoding a file or a log would hold it."""
    return [
        CANARY.encode(),
        json.dumps(CANARY).encode(),
        json.dumps(CANARY, ensure_ascii=False).encode(),
        CANARY.encode("unicode_escape"),
        CANARY.split("'")[0].encode(),  # the part before the first quote alone
    ]


@pytest.mark.parametrize(
    "hostile",
    [
        recipe_only,
        structure_test_host_options,
        pipeline_code,
        bootstrap_and_makefile,
        jenkinsfile_binding_git_write,
        git_hooks_and_filters,
    ],
)
def test_merge_request_code_never_runs_and_never_sees_the_credential(
    tmp_path: Path,
    pull_registry: RegistryService,
    busybox: str,
    docker_client: docker.DockerClient,
    hostile: Callable[[Checkout], list[str]],
) -> None:
    ns = f"mr{uuid.uuid4().hex[:10]}"
    path = tmp_path / "mr"
    path.mkdir()
    marker = tmp_path / "marker"
    checkout = Checkout(path, _base(path, marker), marker)
    flagged = hostile(checkout)
    # the merge request also changes its image: its RUN steps run, in a build container
    recipe = simple_recipe("lab", "1.0.1")
    if (path / "app-recipes/lab/structure.yaml").exists():
        recipe["smoke"]["structure"] = "structure.yaml"
    write_recipe(
        path,
        "lab",
        recipe,
        Dockerfile=f"FROM {BUSYBOX}\nRUN env > /build-env && echo lab > /hello\n",
    )
    git(path, "add", "-A")
    git(path, "commit", "-qm", "merge request")
    if hostile is git_hooks_and_filters:
        wire_git_config(checkout)
    for changed in path.rglob("*"):  # stat-dirty: git would re-read them through filters
        if ".git" not in changed.parts and changed.is_file():
            os.utime(changed, (1, 1))
    try:
        run = run_merge_request(checkout, pull_registry, tmp_path, ns)
        built = docker_client.images.list(name=f"{pull_registry.address}/{ns}/lab")
        # what the RUN step saw, read from the image itself (reports would be masked)
        seen = [
            docker_client.containers.run(i.id, ["cat", "/build-env"], remove=True) for i in built
        ]
    finally:
        remove_images(docker_client, ns)
    assert seen and all(b"HOSTNAME=" in env for env in seen)
    assert not any(form in env for form in canary_forms() for env in seen)

    assert not marker.exists(), f"merge-request code ran: {marker.read_text()[:200]}"
    assert run.code in (0, 1), run.output
    written = sorted(p for p in run.out.rglob("*") if p.is_file())
    assert [p.name for p in written] == ["junit.xml", "review.json", "review.md", "run.json"]
    for form in canary_forms():
        assert form not in run.output.encode(), "canary in the output"
        for file in written:
            assert form not in file.read_bytes(), f"canary in {file.name}"
    entries = {e["name"]: e for e in json.loads((run.out / "run.json").read_text())["recipes"]}
    review = (run.out / "review.md").read_text()
    if hostile is structure_test_host_options:  # refused before the tool starts
        assert run.code == 1 and entries["lab"]["failed_stage"] == "smoke"
        refusal = "containerRunOptions: bindMounts, envVars: not allowed; smoke containers run"
        assert refusal in entries["lab"]["error"] and refusal in review
        return
    assert entries["lab"]["status"] == "built", json.dumps(entries["lab"], indent=1)[-1500:]
    assert entries["lab"]["pushed"] is False
    first = review.splitlines()[0]
    if not flagged:
        assert run.code == 0, run.output
        assert first.startswith("# Review") and "changes the pipeline" not in review
        return
    assert first.startswith("**This merge request changes the pipeline**"), review
    assert "its code did not run with any credential; a maintainer must read it" in first
    for name in flagged:
        assert name in first
    data = json.loads((run.out / "review.json").read_text())
    assert set(flagged) <= set(data["pipeline"])
    if hostile is jenkinsfile_binding_git_write:
        assert run.code == 1
        assert "binds heps-delivery-git, which no store in the reach of heps-mr/merge-request" in (
            review
        )


def test_host_side_settings_come_from_the_operator_never_the_checkout(tmp_path: Path) -> None:
    """The checkout's heps.yaml names a registry, a CA bundle and a mirror of its own: the
    merge-request run uses the operator's, so the pull credential goes nowhere else and
    no host file is read for the build."""
    from heps.ci import merge_request
    from heps.core import settings

    checkout = tmp_path / "mr"
    (checkout / "app-recipes").mkdir(parents=True)
    hostile = (
        "registry: {host: 'evil.example:443', namespace: stolen}\n"
        "build: {ca_bundle: /etc/hostname, debian_mirror: 'http://evil.example/debian', "
        "parallel: 16}\n"
        "smoke: {timeout: 12}\n"
    )
    (checkout / "heps.yaml").write_text(hostile)
    trusted_repo = tmp_path / "main"
    (trusted_repo / "app-recipes").mkdir(parents=True)
    env = {"HEPS_STATE_DIR": str(tmp_path / "state"), "HEPS_CA_BUNDLE": ""}
    trusted = settings.load(trusted_repo, registry="127.0.0.1:5999", env=env)
    # A host file named in the repository is refused outright (issue 17's confinement)...
    with pytest.raises(ConfigError, match=r"heps.yaml: build.ca_bundle: /etc/hostname .*outside"):
        merge_request.checkout_settings(trusted, checkout)
    # ...and every other host-side setting of the checkout is replaced by the operator's.
    (checkout / "heps.yaml").write_text(hostile.replace("ca_bundle: /etc/hostname, ", ""))
    mine = merge_request.checkout_settings(trusted, checkout)
    assert mine.repo == checkout.resolve()
    assert mine.registry == trusted.registry and mine.registry.namespace == "heps"
    assert mine.build == trusted.build and mine.build.ca_bundle is None
    assert mine.state_dir == trusted.state_dir
    assert mine.smoke.timeout == 12  # recipe-level settings stay the checkout's


@pytest.fixture
def committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Checkout:
    """A checkout of main alone, for `heps ci merge-request` run in this process."""
    monkeypatch.setenv("HEPS_CA_BUNDLE", "")
    monkeypatch.setenv("HEPS_STATE_DIR", str(tmp_path / "state"))
    checkout = tmp_path / "mr"
    checkout.mkdir()
    return Checkout(checkout, _base(checkout, tmp_path / "marker"), tmp_path / "marker")


def test_bad_checkout_base_or_out_is_one_line_and_exit_2(
    heps: Any, tmp_path: Path, committed: Checkout
) -> None:
    checkout, base = committed.path, committed.base
    (tmp_path / "file").write_text("")
    cases = [
        (["--checkout", str(tmp_path / "nowhere"), "--base", base], "not a folder"),
        (["--checkout", str(checkout / "app-recipes"), "--base", base], "not the top of a git"),
        (["--checkout", str(checkout), "--base", "no-such-rev"], "--base no-such-rev: not a rev"),
        (["--checkout", str(checkout), "--base=--output=x"], "not a git revision or name"),
    ]
    for args, message in cases:
        result = heps(REPO_ROOT, "ci", "merge-request", *args, "--out", str(tmp_path / "out"))
        assert result.code == 2 and message in result.err, (args, result.err)
        assert len(result.err.splitlines()) == 1 and "Traceback" not in result.err
    result = heps(
        REPO_ROOT,
        "ci",
        "merge-request",
        "--checkout",
        str(checkout),
        "--base",
        base,
        "--out",
        str(tmp_path / "file"),
    )
    assert result.code == 2 and "--out" in result.err and "not a folder" in result.err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand a checkout to another user")
def test_a_checkout_another_user_owns_is_refused(
    heps: Any, tmp_path: Path, committed: Checkout
) -> None:
    os.chown(committed.path / ".git", 65534, 65534)
    out = tmp_path / "out"
    args = ["--checkout", str(committed.path), "--base", committed.base, "--out", str(out)]
    result = heps(REPO_ROOT, "ci", "merge-request", *args)
    assert result.code == 2 and "belongs to uid 65534, not to this user" in result.err
    assert len(result.err.splitlines()) == 1 and not out.exists()


def test_a_bootstrap_recipe_may_not_name_its_own_mirror(
    heps: Any,
    tmp_path: Path,
    committed: Checkout,
    pull_registry: RegistryService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """debootstrap runs the packages' scripts on the host: the mirror is the operator's."""
    assert pull_registry.pull_username
    monkeypatch.setenv("HEPS_REGISTRY", pull_registry.address)
    monkeypatch.setenv("HEPS_NAMESPACE", f"mr{uuid.uuid4().hex[:10]}")
    monkeypatch.setenv("HEPS_REGISTRY_USERNAME", pull_registry.pull_username)
    monkeypatch.setenv("HEPS_REGISTRY_PASSWORD", CANARY)
    evil = "http://127.0.0.1:9/debian"
    recipe = simple_recipe("rootfs")
    write_recipe(
        committed.path, "rootfs", {**recipe, "bootstrap": {"suite": "bookworm", "mirror": evil}}
    )
    git(committed.path, "add", "-A")
    git(committed.path, "commit", "-qm", "own mirror")
    out = tmp_path / "out"
    args = ["--checkout", str(committed.path), "--base", committed.base, "--out", str(out)]
    result = heps(REPO_ROOT, "ci", "merge-request", *args)
    assert result.code == 2, result.text
    assert result.err == (
        f"heps: error: app-recipes/rootfs/recipe.yaml: bootstrap.mirror: {evil} is not the "
        "operator's mirror; a merge request builds from build.debian_mirror of the trusted "
        "settings (drop the field)\n"
    )
    assert "[build]" not in result.text
    # the job had started on the merge request: its reports name the refusal, none built
    assert json.loads((out / "run.json").read_text())["recipes"] == []
    assert f"bootstrap.mirror: {evil} is not the operator's mirror" in (
        (out / "review.md").read_text()
    )


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("app-recipes/app/.gitattributes", True),  # git reads it for the files below it
        ("tests/conftest.py", True),  # the pipeline's tests: `make test` runs them
        ("conftest.py", True),
        ("setup.py", True),
        ("sitecustomize.py", True),
        ("bench/run.py", True),
        ("pipeline/heps/cli.py", True),
        ("app-recipes/app/Dockerfile", False),
        ("app-recipes/app/tests/conftest.py", False),  # image content, never run here
        ("k8s-overlays/overlays/testbed/kustomization.yaml", False),
    ],
)
def test_what_runs_as_code_is_flagged_as_a_pipeline_change(path: str, code: bool) -> None:
    assert review.is_pipeline(path) is code
