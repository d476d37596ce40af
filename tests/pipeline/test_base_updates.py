"""A base update reaches every app in one run and one promotion commit, without a
version bump; own changes without a bump are refused early, naming the files.

Real Docker engine, real registry, real git, real kustomize overlays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.conftest import (
    BUSYBOX,
    Env,
    internal_from,
    read_json,
    simple_recipe,
    site_ca_text,
    write_recipe,
)
from tests.pipeline.test_promote import git, overlays
from tests.pipeline.test_run import commit_all, registry_of

APPS = ["base", "mid", "leaf"]


def three_generations(env: Env) -> None:
    """base <- mid <- leaf, each user-visible in the overlays."""
    write_recipe(
        env.repo,
        "base",
        simple_recipe("base"),
        Dockerfile=f"FROM {BUSYBOX}\nRUN echo base > /hello\n",
    )
    for name, on in (("mid", "base"), ("leaf", "mid")):
        dockerfile = internal_from(on) + f"RUN echo {name} > /hello\n"
        write_recipe(env.repo, name, simple_recipe(name), Dockerfile=dockerfile)
    overlays(env.repo, APPS)


def entries(path: Path) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in read_json(path)["recipes"]}


def test_base_change_rebuilds_two_generations_and_promotes_all_in_one_commit(
    heps: Any, env: Env, docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    three_generations(env)
    first = commit_all(env.repo)
    assert heps(env.repo, "run", "--all", "--promote", "testbed").code == 0
    registry = registry_of(env)
    version_digests = {n: registry.digest(n, "1.0.0") for n in APPS}
    base = env.repo / "app-recipes/base"
    (base / "Dockerfile").write_text(f"FROM {BUSYBOX}\nRUN echo base > /hello && echo fix > /v\n")
    (base / "recipe.yaml").write_text((base / "recipe.yaml").read_text().replace("1.0.0", "1.0.1"))
    change = commit_all(env.repo, "debian-base security fix")
    report = env.repo.parent / "r.json"
    result = heps(
        env.repo, "run", "--since", first, "--promote", "testbed", "--report", str(report)
    )
    assert result.code == 0, result.text
    done = entries(report)
    assert [done[n]["reason"] for n in APPS] == ["not in registry", "base changed", "base changed"]
    assert (done["mid"]["detail"], done["leaf"]["detail"]) == (
        "base base changed",
        "base mid changed",
    )
    for name in ("mid", "leaf"):
        (reference,) = done[name]["references"]  # the rebuild tag alone
        assert reference.startswith(f"{env.repository(name)}:1.0.0-fp")
        assert registry.digest(name, reference.rsplit(":", 1)[1]) == done[name]["digest"]
        assert registry.digest(name, "1.0.0") == version_digests[name]  # unmoved
    # Each child was built on the exact image just built for its base.
    for child, parent in (("mid", "base"), ("leaf", "mid")):
        parent_id = docker_client.images.get(done[parent]["references"][-1]).id
        history = {layer["Id"] for layer in docker_client.api.history(done[child]["image"])}
        assert parent_id in history
    assert git(env.repo, "rev-list", "--count", f"{change}..HEAD") == "1"
    message = git(env.repo, "log", "-1", "--format=%B")
    for name in APPS:
        line = next(x for x in message.splitlines() if x.startswith(f"- {name} "))
        old = f"; was {version_digests[name]})"
        assert done[name]["digest"] in line and (name == "base" or old in line), line
    assert "base base changed" in message and "base mid changed" in message
    pinned = (env.repo / "k8s-overlays/overlays/testbed/kustomization.yaml").read_text()
    assert done["leaf"]["references"][0].rsplit(":", 1)[1] in pinned
    status = heps(env.repo, "status", "--overlay", "testbed")
    assert f"1.0.0-fp{done['leaf']['fingerprint'][:12]}" in status.out
    again = heps(env.repo, "run", "--all", "--report", str(report))
    assert again.code == 0 and "nothing to do" in again.err, again.text
    assert {n: e["digest"] for n, e in entries(report).items()} == {
        n: done[n]["digest"] for n in APPS
    }
    # A new site CA bundle flows the same way: everything rebuilt, nobody bumps.
    bundle = env.repo.parent / "site-ca.crt"
    bundle.write_text(site_ca_text("a new site CA"))
    monkeypatch.setenv("HEPS_CA_BUNDLE", str(bundle))
    plan = {e["name"]: e for e in json.loads(heps(env.repo, "plan", "--json").out)}
    assert [(plan[n]["reason"], plan[n]["version_taken"]) for n in APPS] == [
        ("base changed", False)
    ] * 3
    assert [plan[n]["detail"] for n in APPS] == [
        "site CA bundle changed",
        "base base, site CA bundle changed",
        "base mid, site CA bundle changed",
    ]


def test_run_promote_with_a_failure_promotes_what_was_pushed(
    heps: Any, env: Env, tmp_path: Path
) -> None:
    write_recipe(
        env.repo,
        "good",
        simple_recipe("good"),
        Dockerfile=f"FROM {BUSYBOX}\nRUN echo good > /hello\n",
    )
    bad = simple_recipe("bad")
    bad["smoke"]["commands"][0]["expect_output"] = "never"
    write_recipe(env.repo, "bad", bad, Dockerfile=f"FROM {BUSYBOX}\nRUN echo bad > /hello\n")
    overlays(env.repo, ["good", "bad"])
    commit_all(env.repo)
    before = (env.repo / "k8s-overlays/overlays/testbed/kustomization.yaml").read_text()
    result = heps(env.repo, "run", "--all", "--promote", "testbed")
    assert result.code == 1
    assert "heps: not promoted to testbed (failed): bad; their pins are unchanged" in result.err
    pinned = (env.repo / "k8s-overlays/overlays/testbed/kustomization.yaml").read_text()
    assert pinned != before and "name: good" in pinned and "name: bad" not in pinned
    assert git(env.repo, "log", "-1", "--format=%s") == "promote testbed: good 1.0.0"


def test_review_refuses_own_change_without_bump_naming_the_files(heps: Any, env: Env) -> None:
    three_generations(env)
    first = commit_all(env.repo)
    (env.repo / "app-recipes/mid/Dockerfile").write_text(
        internal_from("base") + "RUN echo mid2 > /hello\n"
    )
    (env.repo / "app-recipes/mid/notes.txt").write_text("new file in the context\n")
    commit_all(env.repo, "edit mid, forget the bump")
    review = heps(env.repo, "review", "--base", first, "--json", str(env.repo.parent / "r.json"))
    assert review.code == 1
    expected = (
        f"app-recipes/mid: own sources changed since {first} without a version bump "
        "(app-recipes/mid/Dockerfile, app-recipes/mid/notes.txt); "
        "bump `version` in app-recipes/mid/recipe.yaml"
    )
    assert expected in review.err
    # review.md shows it as text: Markdown's backticks escaped
    assert expected.replace("`", "\\`") in review.out
    assert json.loads((env.repo.parent / "r.json").read_text())["problems"] == [expected]
    for verb in ("lint", "plan"):
        early = heps(env.repo, verb, "--since", first)
        assert early.code == 1 and expected in early.err, early.text
    recipe = env.repo / "app-recipes/mid/recipe.yaml"
    recipe.write_text(recipe.read_text().replace("1.0.0", "1.0.1"))
    assert heps(env.repo, "review", "--base", first).code == 0


def test_untracked_cache_files_are_named_never_bump_version(heps: Any, env: Env) -> None:
    write_recipe(
        env.repo,
        "app",
        simple_recipe("app"),
        Dockerfile=f"FROM {BUSYBOX}\nCOPY . /src\nRUN echo app > /hello\n",
        **{"tool.py": "print(1)\n"},
    )
    (env.repo / ".gitignore").write_text("__pycache__/\n")
    first = commit_all(env.repo)
    assert heps(env.repo, "run", "--all").code == 0
    cache = env.repo / "app-recipes/app/__pycache__/tool.cpython-311.pyc"
    cache.parent.mkdir()
    cache.write_bytes(b"\x00cache")
    run = heps(env.repo, "run", "--all", "--report", str(env.repo.parent / "r.json"))
    assert run.code == 1
    (entry,) = read_json(env.repo.parent / "r.json")["recipes"]
    assert entry["failed_stage"] == "version" and "bump" not in entry["error"]
    assert (
        "the build context holds files git does not track: "
        "app-recipes/app/__pycache__/tool.cpython-311.pyc; delete them or add them to "
        "app-recipes/app/.dockerignore" in entry["error"]
    )
    plan = heps(env.repo, "plan", "--since", first)
    assert plan.code == 1 and "__pycache__/tool.cpython-311.pyc" in plan.err
    (env.repo / "app-recipes/app/.dockerignore").write_text("**/__pycache__\n")
    commit_all(env.repo, "ignore caches")
    # The .dockerignore is an own change of the context, so the owner bumps for it once.
    recipe = env.repo / "app-recipes/app/recipe.yaml"
    recipe.write_text(recipe.read_text().replace("1.0.0", "1.0.1"))
    assert heps(env.repo, "run", "--all").code == 0
