"""`heps run` and `heps plan` end to end: the real Docker engine and a real registry."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as ET
import docker
import pytest

from heps.core.credentials import Credentials, Secret
from heps.core.settings import RegistrySettings
from heps.systems.registry import Registry
from tests.conftest import (
    BUSYBOX,
    Env,
    internal_from,
    read_json,
    simple_recipe,
    site_ca_text,
    write_recipe,
)

BASE_DOCKERFILE = f"FROM {BUSYBOX}\nRUN echo base > /hello\n"
CHILD_DOCKERFILE = internal_from("base") + "RUN echo child > /hello\n"


def registry_of(env: Env) -> Registry:
    creds = Credentials(env.registry.username, Secret(env.registry.password), "test")
    return Registry(RegistrySettings(env.registry.address, env.namespace), creds)


def two_level_tree(env: Env) -> None:
    write_recipe(env.repo, "base", simple_recipe("base"), Dockerfile=BASE_DOCKERFILE)
    write_recipe(env.repo, "child", simple_recipe("child"), Dockerfile=CHILD_DOCKERFILE)


def no_secret(env: Env, *texts: str) -> None:
    for text in texts:
        assert env.registry.password not in text


def test_run_builds_smoke_tests_pushes_and_reports(
    heps: Any, env: Env, docker_client: docker.DockerClient
) -> None:
    two_level_tree(env)
    report_file, junit_file = env.repo / "out/report.json", env.repo / "out/junit.xml"
    result = heps(
        env.repo, "run", "--all", "--report", str(report_file), "--junit", str(junit_file)
    )
    assert result.code == 0, result.text
    report = read_json(report_file)
    by_name = {r["name"]: r for r in report["recipes"]}
    assert [r["name"] for r in report["recipes"]] == ["base", "child"]
    registry = registry_of(env)
    for name in ("base", "child"):
        entry = by_name[name]
        assert (
            entry["status"] == "built" and entry["pushed"] and entry["reason"] == "not in registry"
        )
        assert entry["image"] == f"{env.repository(name)}:1.0.0"
        assert entry["digest"] == registry.digest(name, "1.0.0")
        assert entry["references"][1].startswith(f"{env.repository(name)}:1.0.0-fp")
        assert entry["digest"] == registry.digest(name, entry["references"][1].split(":")[-1])
        assert entry["smoke"][0]["passed"] and set(entry["seconds"]) == {
            "lint",
            "build",
            "smoke",
            "push",
        }
    remote = registry.image("child", "1.0.0")
    assert remote is not None
    assert remote.labels["org.opencontainers.image.version"] == "1.0.0"
    assert remote.labels["org.opencontainers.image.created"].endswith("Z")
    assert remote.labels["io.heps.fingerprint"] == by_name["child"]["fingerprint"]
    base_id = docker_client.images.get(f"{env.repository('base')}:1.0.0").id
    assert remote.labels["io.heps.bases"] == f'{{"base": "{base_id}"}}'
    junit = ET.parse(junit_file).getroot()
    assert junit.get("failures") == "0"
    assert int(junit.get("tests", "0")) == 8  # (lint, build, smoke, push) x 2
    assert "2 built, 0 skipped, 0 failed" in result.out
    timings = read_json(env.repo.parent / "state" / "build-seconds.json")  # next run's order
    assert timings == {n: round(sum(by_name[n]["seconds"].values()), 3) for n in ("base", "child")}
    assert "[build] child: Step" in result.err and "[push] base: verified sha256:" in result.err
    no_secret(env, result.text, report_file.read_text(), junit_file.read_text())


def test_unchanged_tree_is_skipped_even_with_an_empty_docker_cache(
    heps: Any, env: Env, docker_client: docker.DockerClient
) -> None:
    two_level_tree(env)
    assert heps(env.repo, "run", "--all").code == 0
    for name in ("child", "base"):  # children first: the engine keeps images with children
        for image in docker_client.images.list(name=env.repository(name)):
            docker_client.images.remove(image.id, force=True)
    again = heps(env.repo, "run", "--all", "--report", str(env.repo / "r.json"))
    assert again.code == 0, again.text
    assert "[build]" not in again.err and "nothing to do" in again.err
    statuses = {
        r["name"]: (r["status"], r["reason"]) for r in read_json(env.repo / "r.json")["recipes"]
    }
    assert statuses == {"base": ("skipped", "unchanged"), "child": ("skipped", "unchanged")}


def test_own_change_without_bump_is_refused_and_a_base_change_is_not(
    heps: Any, env: Env, docker_client: docker.DockerClient
) -> None:
    two_level_tree(env)
    commit_all(env.repo)
    assert heps(env.repo, "run", "--all").code == 0
    registry = registry_of(env)
    old_child = registry.digest("child", "1.0.0")
    base_dir = env.repo / "app-recipes/base"
    (base_dir / "Dockerfile").write_text(BASE_DOCKERFILE + "RUN echo v2 > /version\n")
    plan = heps(env.repo, "plan", "--json")
    reasons = {e["name"]: (e["reason"], e["version_taken"]) for e in json.loads(plan.out)}
    assert reasons == {"base": ("changed", True), "child": ("base changed", False)}
    refused = heps(env.repo, "run", "--all", "--report", str(env.repo / "r.json"))
    assert refused.code == 1
    entries = {r["name"]: r for r in read_json(env.repo / "r.json")["recipes"]}
    assert entries["base"]["failed_stage"] == "version"
    assert (
        "own sources changed since without a version bump (app-recipes/base/Dockerfile); "
        "bump `version` in app-recipes/base/recipe.yaml" in entries["base"]["error"]
    )
    assert entries["child"]["error"] == "not built: its base base failed"
    recipe = base_dir / "recipe.yaml"
    recipe.write_text(recipe.read_text().replace("1.0.0", "1.1.0"))
    text_plan = heps(env.repo, "plan")
    child_tag = text_plan.out.split("(base base changed; as ")[1].split(")")[0]
    assert "build base 1.1.0: not in registry" in text_plan.out
    assert "build child 1.0.0: base changed  on base  (base base changed; as 1.0.0-fp" in (
        text_plan.out
    )
    bumped = heps(env.repo, "run", "--all", "--report", str(env.repo / "r.json"))
    assert bumped.code == 0, bumped.text
    child = {r["name"]: r for r in read_json(env.repo / "r.json")["recipes"]}["child"]
    assert child["references"] == [f"{env.repository('child')}:{child_tag}"]
    assert child["detail"] == "base base changed"
    assert registry.digest("child", "1.0.0") == old_child  # the version tag never moves
    assert registry.digest("child", child_tag) == child["digest"] != old_child
    new_base = docker_client.images.get(f"{env.repository('base')}:1.1.0").id
    history = {layer["Id"] for layer in docker_client.api.history(child["references"][0])}
    assert new_base in history  # built on the exact new base


def test_failing_smoke_test_is_never_pushed(heps: Any, env: Env) -> None:
    recipe = simple_recipe("app")
    recipe["smoke"]["commands"][0]["expect_output"] = "something else"
    write_recipe(env.repo, "app", recipe, Dockerfile=BASE_DOCKERFILE)
    result = heps(env.repo, "run", "--all", "--report", str(env.repo / "r.json"))
    assert result.code == 1
    (entry,) = read_json(env.repo / "r.json")["recipes"]
    assert entry["status"] == "failed" and entry["failed_stage"] == "smoke" and not entry["pushed"]
    assert "output does not match /something else/" in entry["error"]
    assert registry_of(env).digest("app", "1.0.0") is None


def test_error_inside_the_build_stream_fails_the_recipe_and_its_children(
    heps: Any, env: Env
) -> None:
    write_recipe(
        env.repo,
        "base",
        simple_recipe("base"),
        Dockerfile=f"FROM {BUSYBOX}\nRUN echo about to fail && exit 3\n",
    )
    write_recipe(env.repo, "child", simple_recipe("child"), Dockerfile=CHILD_DOCKERFILE)
    result = heps(env.repo, "run", "--all", "--junit", str(env.repo / "j.xml"))
    assert result.code == 1
    assert (
        "[build] base: FAILED: The command '/bin/sh -c echo about to fail && exit 3' "
        "returned a non-zero code: 3" in result.err
    )
    assert "[build] child: not built: its base base failed" in result.err
    junit = ET.parse(env.repo / "j.xml").getroot()
    assert junit.get("failures") == "2"
    assert registry_of(env).digest("base", "1.0.0") is None


def test_hanging_command_is_killed_at_its_timeout(heps: Any, env: Env) -> None:
    recipe = simple_recipe("app")
    recipe["smoke"]["commands"] = [{"name": "hangs", "run": ["sleep", "600"], "timeout": 2}]
    write_recipe(env.repo, "app", recipe, Dockerfile=BASE_DOCKERFILE)
    result = heps(env.repo, "run", "--all", "--report", str(env.repo / "r.json"))
    assert result.code == 1
    (entry,) = read_json(env.repo / "r.json")["recipes"]
    assert entry["smoke"][0]["detail"] == "killed after 2s timeout"


def test_http_probe_and_structure_test(heps: Any, env: Env) -> None:
    web = (
        f"FROM {BUSYBOX}\nRUN echo ok > /www/index.html\nEXPOSE 8080\n"
        'CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]\n'
    )
    structure = (
        "schemaVersion: 2.0.0\nfileExistenceTests:\n"
        "  - {name: page, path: /www/index.html, shouldExist: true}\n"
    )
    write_recipe(
        env.repo,
        "web",
        {
            "name": "web",
            "version": "1.0.0",
            "description": "d",
            "smoke": {
                "structure": "structure.yaml",
                "http": {"port": 8080, "path": "/index.html", "timeout": 20},
            },
        },
        Dockerfile=web,
        **{"structure.yaml": structure},
    )
    write_recipe(
        env.repo,
        "silent",
        {
            "name": "silent",
            "version": "1.0.0",
            "description": "d",
            "smoke": {"structure": "structure.yaml", "http": {"port": 8080, "timeout": 3}},
        },
        Dockerfile=f'FROM {BUSYBOX}\nCMD ["sleep", "600"]\n',
        **{"structure.yaml": structure},
    )
    result = heps(env.repo, "run", "--all", "--report", str(env.repo / "r.json"))
    assert result.code == 1
    smoke = {r["name"]: r["smoke"] for r in read_json(env.repo / "r.json")["recipes"]}
    assert [(s["kind"], s["passed"]) for s in smoke["web"]] == [("structure", True), ("http", True)]
    assert smoke["web"][1]["detail"] == "200 from /index.html"
    assert [(s["kind"], s["passed"]) for s in smoke["silent"]] == [
        ("structure", False),
        ("http", False),
    ]
    assert "File Existence Test: page" in smoke["silent"][0]["detail"]
    assert smoke["silent"][1]["detail"].startswith("no 2xx within 3s")


def test_refused_password_exits_2_names_the_fix_and_pushes_nothing(
    heps: Any, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_level_tree(env)
    monkeypatch.setenv("HEPS_REGISTRY_PASSWORD", "not-the-password-4711")
    result = heps(env.repo, "run", "--all")
    assert result.code == 2
    assert (
        f"registry {env.registry.address}: refused the credentials from "
        "HEPS_REGISTRY_USERNAME/PASSWORD (401)" in result.err
    )
    assert "not-the-password-4711" not in result.text
    assert "[build]" not in result.err
    assert registry_of(env).digest("base", "1.0.0") is None


def test_unreachable_docker_engine_exits_2(
    heps: Any, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_level_tree(env)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = heps(env.repo, "run", "--all")
    assert result.code == 2
    assert (
        "heps: error: Docker engine at unix:///nonexistent/docker.sock: not reachable" in result.err
    )
    assert "point DOCKER_HOST at a running engine" in result.err


def test_unreachable_registry_exits_2(heps: Any, env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    two_level_tree(env)
    result = heps(env.repo, "--registry", "127.0.0.1:9", "plan")
    assert result.code == 2
    assert "registry 127.0.0.1:9: cannot connect" in result.err


def test_site_ca_bundle_reaches_every_build_and_no_secret_reaches_the_image(
    heps: Any, env: Env, monkeypatch: pytest.MonkeyPatch, docker_client: docker.DockerClient
) -> None:
    bundle = env.repo.parent / "site-ca.pem"
    bundle.write_text(site_ca_text("SITE-CA-MARKER"))
    monkeypatch.setenv("HEPS_CA_BUNDLE", str(bundle))
    recipe = simple_recipe("app")
    recipe["smoke"]["commands"] = [
        {"name": "ca", "run": ["cat", "/etc/site-ca.crt"], "expect_output": "SITE-CA-MARKER"}
    ]
    write_recipe(
        env.repo,
        "app",
        recipe,
        Dockerfile=f"FROM {BUSYBOX}\nCOPY heps-site-ca.crt /etc/site-ca.crt\n",
    )
    result = heps(env.repo, "run", "--all")
    assert result.code == 0, result.text
    image = docker_client.images.get(f"{env.repository('app')}:1.0.0")
    history = str(image.history()) + str(image.attrs)
    assert env.registry.password not in history and env.registry.username + ":" not in history


def test_no_push_builds_and_tests_only(heps: Any, env: Env) -> None:
    two_level_tree(env)
    result = heps(env.repo, "run", "--all", "--no-push", "--report", str(env.repo / "r.json"))
    assert result.code == 0, result.text
    entries = read_json(env.repo / "r.json")["recipes"]
    assert [(e["status"], e["pushed"]) for e in entries] == [("built", False), ("built", False)]
    assert registry_of(env).digest("base", "1.0.0") is None


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def commit_all(repo: Path, message: str = "one") -> str:
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


def test_revision_tag_and_since_selection(heps: Any, env: Env) -> None:
    two_level_tree(env)
    write_recipe(
        env.repo,
        "other",
        simple_recipe("other"),
        Dockerfile=f"FROM {BUSYBOX}\nRUN echo other > /hello\n",
    )
    git(env.repo, "init", "-q")
    git(env.repo, "add", "-A")
    git(env.repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    first = git(env.repo, "rev-parse", "HEAD")
    result = heps(env.repo, "run", "--all", "--report", str(env.repo.parent / "r.json"))
    assert result.code == 0, result.text
    refs = {r["name"]: r["references"] for r in read_json(env.repo.parent / "r.json")["recipes"]}
    assert refs["base"][1] == f"{env.repository('base')}:1.0.0-g{first[:12]}"
    image = registry_of(env).image("base", "1.0.0")
    assert image is not None and image.labels["org.opencontainers.image.revision"] == first
    (env.repo / "app-recipes/base/Dockerfile").write_text(BASE_DOCKERFILE + "RUN true\n")
    since = heps(env.repo, "plan", "--since", "HEAD", "--json")
    assert [e["name"] for e in json.loads(since.out)] == ["base", "child"]
    bad = heps(env.repo, "plan", "--since", "no-such-rev")
    assert bad.code == 2 and "--since no-such-rev: git does not know this revision" in bad.err


def test_push_error_inside_the_stream_fails_and_nothing_is_pinned(
    heps: Any, env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A registry in read-only maintenance mode answers the push with an error that the
    engine reports inside an otherwise successful (HTTP 200) stream."""
    from heps.systems.services import RegistryService
    from tests.conftest import free_port

    readonly = RegistryService(
        tmp_path / "ro", f"127.0.0.1:{free_port()}", "tester", env.registry.password
    )
    config = readonly.config().replace(
        "delete: {enabled: true}",
        "delete: {enabled: true}, maintenance: {readonly: {enabled: true}}",
    )
    readonly.root.mkdir(parents=True)
    process = readonly.start(config_text=config)
    try:
        monkeypatch.setenv("HEPS_REGISTRY", readonly.address)
        write_recipe(
            env.repo, "app", simple_recipe("app"), Dockerfile=BASE_DOCKERFILE.replace("base", "app")
        )
        result = heps(env.repo, "run", "--all", "--report", str(env.repo / "r.json"))
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert result.code == 1, result.text
    (entry,) = read_json(env.repo / "r.json")["recipes"]
    assert entry["failed_stage"] == "push" and entry["digest"] is None and not entry["pushed"]
    # the immutable tag is pushed first (an interrupted push leaves the version tag missing)
    assert entry["error"].startswith(f"{readonly.address}/{env.namespace}/app:1.0.0-fp")
    assert "405" in entry["error"] and "Method not allowed" in entry["error"]
    assert env.registry.password not in result.text


def test_dirty_context_outside_the_recipe_folder_marks_the_tag(heps: Any, env: Env) -> None:
    """A recipe whose context lives elsewhere (like heps-scheduler's scheduler/) is dirty
    when that context has uncommitted changes, not only when its recipe folder has."""
    (env.repo / "src").mkdir()
    (env.repo / "src" / "data.txt").write_text("one\n")
    recipe = simple_recipe("app", build={"context": "../../src", "dockerfile": "Dockerfile"})
    write_recipe(
        env.repo,
        "app",
        recipe,
        Dockerfile=f"FROM {BUSYBOX}\nCOPY data.txt /data.txt\nRUN echo app > /hello\n",
    )
    git(env.repo, "init", "-q")
    git(env.repo, "add", "-A")
    git(env.repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    (env.repo / "src" / "data.txt").write_text("two\n")
    result = heps(
        env.repo, "run", "--all", "--no-push", "--report", str(env.repo.parent / "r.json")
    )
    assert result.code == 0, result.text
    (entry,) = read_json(env.repo.parent / "r.json")["recipes"]
    assert ".dirty." in entry["references"][1]


GLOBALS = "ARG REGISTRY\nARG OWNER\n"
FORMS = {
    "argref": "ARG REGISTRY=x\nARG OWNER=y\nARG BASE=${REGISTRY}/${OWNER}/base\nFROM ${BASE}\n",
    "default": GLOBALS + "ARG NAME\nFROM ${REGISTRY}/${OWNER}/${NAME:-base}\n",
    "scope": GLOBALS + "ARG V=base\nFROM ${REGISTRY}/${OWNER}/${V} AS one\nARG V=nothing\n"
    "RUN true\nFROM ${REGISTRY}/${OWNER}/${V}\n",
    "platform": GLOBALS + "FROM --platform=linux/amd64 ${REGISTRY}/${OWNER}/base AS build\n"
    "RUN true\nFROM build\n",
    "escape": "# escape=`\n" + GLOBALS + "FROM `\n  ${REGISTRY}/${OWNER}/base `\n  AS b\n",
    "tagged": GLOBALS + "FROM ${REGISTRY}/${OWNER}/base:1.0.0\n",
    "stageonly": GLOBALS + f"FROM ${{REGISTRY}}/${{OWNER}}/base AS src\nFROM {BUSYBOX}\n"
    "COPY --from=src /hello /from-base\n",
}


def test_each_dockerfile_form_builds_on_the_base_the_builder_would_use(
    heps: Any, env: Env, docker_client: docker.DockerClient
) -> None:
    """What graph and fingerprint read from each FROM form is what the engine built on:
    the base image built in this run is in each child's history."""
    write_recipe(env.repo, "base", simple_recipe("base"), Dockerfile=BASE_DOCKERFILE)
    for name, text in FORMS.items():
        recipe = simple_recipe(name)
        if name == "stageonly":  # the base's file, copied from the build stage
            check = {"name": "base", "run": ["cat", "/from-base"], "expect_output": "base"}
            recipe["smoke"]["commands"].append(check)
        write_recipe(env.repo, name, recipe, Dockerfile=text + f"RUN echo {name} > /hello\n")
    plan = json.loads(heps(env.repo, "plan", "--json").out)
    assert {e["name"]: e["bases"] for e in plan} == {"base": [], **{n: ["base"] for n in FORMS}}
    result = heps(env.repo, "run", "--all", "--report", str(env.repo.parent / "r.json"))
    assert result.code == 0, result.text
    base_id = docker_client.images.get(f"{env.repository('base')}:1.0.0").id
    for name in FORMS:
        image = docker_client.images.get(f"{env.repository(name)}:1.0.0")
        history = {layer["Id"] for layer in docker_client.api.history(image.id)}
        assert (base_id in history) == (name != "stageonly"), name
        assert json.loads(image.labels["io.heps.bases"]) == {"base": base_id}
