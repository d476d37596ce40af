"""hadolint (the real binary) with the repository's config, and the project's own rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from heps.core import settings
from heps.core.errors import ConfigError
from heps.images import graph, lint, recipes
from tests.conftest import internal_from, simple_recipe, write_recipe
from tests.pipeline.test_graph import REGISTRY

PROFILE = {"display_name": "App"}


def lint_all(repo: Path) -> dict[str, lint.LintResult]:
    cfg = settings.load(repo, env={})
    tree = graph.resolve(recipes.discover(cfg), REGISTRY)
    return {name: lint.lint(tree, name, cfg.lint) for name in tree.order}


def codes(result: lint.LintResult) -> list[tuple[str, int]]:
    return [(f.code, f.line) for f in result.findings]


def test_clean_dockerfile_passes(tmp_path: Path) -> None:
    write_recipe(
        tmp_path,
        "app",
        simple_recipe("app", profile=PROFILE),
        Dockerfile="FROM debian:12.5\nUSER 1000\n",
    )
    result = lint_all(tmp_path)["app"]
    assert not result.failed and result.findings == ()


def test_hadolint_warnings_are_reported_and_pass_by_default(tmp_path: Path) -> None:
    write_recipe(
        tmp_path,
        "app",
        simple_recipe("app"),
        Dockerfile="FROM debian:12.5\nRUN cd /tmp && echo hi\n",
    )
    result = lint_all(tmp_path)["app"]
    assert not result.failed
    assert ("DL3003", 2) in codes(result)
    assert str(result.findings[0]).startswith("app-recipes/app/Dockerfile:2: DL3003 warning:")


def test_hadolint_errors_fail_by_default(tmp_path: Path) -> None:
    write_recipe(
        tmp_path, "app", simple_recipe("app"), Dockerfile="FROM debian:12.5\nWORKDIR relative\n"
    )
    result = lint_all(tmp_path)["app"]
    assert result.failed and ("DL3000", 2) in codes(result)


def test_hadolint_yaml_threshold_and_heps_yaml_override(tmp_path: Path) -> None:
    write_recipe(
        tmp_path,
        "app",
        simple_recipe("app"),
        Dockerfile="FROM debian:12.5\nRUN cd /tmp && echo hi\n",
    )
    (tmp_path / ".hadolint.yaml").write_text("failure-threshold: warning\n")
    assert lint_all(tmp_path)["app"].failed
    (tmp_path / "heps.yaml").write_text("lint: {failure_threshold: error}\n")
    assert not lint_all(tmp_path)["app"].failed
    (tmp_path / ".hadolint.yaml").unlink()
    (tmp_path / "heps.yaml").write_text("lint: {failure_threshold: warning}\n")
    assert lint_all(tmp_path)["app"].failed
    (tmp_path / "heps.yaml").write_text("lint: {failure_threshold: loud}\n")
    with pytest.raises(ConfigError, match=r"heps\.yaml"):
        lint_all(tmp_path)


def test_latest_and_untagged_external_bases(tmp_path: Path) -> None:
    write_recipe(
        tmp_path,
        "app",
        simple_recipe("app"),
        Dockerfile="FROM debian:latest AS a\nFROM ubuntu AS b\nFROM scratch\n"
        "FROM debian@sha256:" + "0" * 64 + "\n",
    )
    result = lint_all(tmp_path)["app"]
    assert result.failed
    assert [c for c in codes(result) if c[0] == "HEPS001"] == [("HEPS001", 1), ("HEPS001", 2)]


def test_user_facing_image_must_not_end_as_root(tmp_path: Path) -> None:
    write_recipe(
        tmp_path,
        "rooted",
        simple_recipe("rooted", profile=PROFILE),
        Dockerfile="FROM debian:12.5\nUSER 1000\nRUN true\nUSER root\n",
    )
    write_recipe(
        tmp_path,
        "implicit",
        simple_recipe("implicit", profile=PROFILE),
        Dockerfile="FROM debian:12.5\n",
    )
    write_recipe(tmp_path, "service", simple_recipe("service"), Dockerfile="FROM debian:12.5\n")
    results = lint_all(tmp_path)
    assert ("HEPS002", 4) in codes(results["rooted"])
    assert ("HEPS002", 1) in codes(results["implicit"])
    assert "HEPS002" not in {c for c, _ in codes(results["service"])}


def test_final_user_is_inherited_from_internal_base(tmp_path: Path) -> None:
    write_recipe(
        tmp_path,
        "base",
        simple_recipe("base"),
        Dockerfile="FROM debian:12.5\nUSER ${NB_UID}\n",
        **{},
    )
    recipe = tmp_path / "app-recipes/base/recipe.yaml"
    recipe.write_text(recipe.read_text() + "build: {args: {NB_UID: '1000'}}\n")
    write_recipe(
        tmp_path,
        "child",
        simple_recipe("child", profile=PROFILE),
        Dockerfile=internal_from("base") + "RUN true\n",
    )
    write_recipe(
        tmp_path, "rootbase", simple_recipe("rootbase"), Dockerfile="FROM debian:12.5\nUSER 0\n"
    )
    write_recipe(
        tmp_path,
        "child2",
        simple_recipe("child2", profile=PROFILE),
        Dockerfile=internal_from("rootbase"),
    )
    results = lint_all(tmp_path)
    assert not results["child"].failed, results["child"].findings
    assert "HEPS002" in {c for c, _ in codes(results["child2"])}


def test_secret_named_args_and_envs(tmp_path: Path) -> None:
    write_recipe(
        tmp_path,
        "app",
        simple_recipe("app"),
        Dockerfile="FROM debian:12.5\nARG GITLAB_TOKEN\nENV DB_PASSWORD=x MODE=1\n"
        "ENV API_KEY abc\nARG PYTHON_VERSION=3.11\n",
    )
    found = [c for c in codes(lint_all(tmp_path)["app"]) if c[0] == "HEPS003"]
    assert found == [("HEPS003", 2), ("HEPS003", 3), ("HEPS003", 4)]
