"""Recipe validation: every bad input is one line naming file, field and fix; exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from heps.core import settings
from heps.core.errors import ConfigError
from heps.images import recipes
from tests.conftest import REPO_ROOT, simple_recipe, write_recipe

DOCKERFILE = "FROM heps-test/busybox:1.35\n"


def problems(repo: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        recipes.discover(settings.load(repo, env={}))
    return caught.value.problems


def test_valid_recipe_loads_as_plain_data(tmp_path: Path) -> None:
    write_recipe(
        tmp_path,
        "app",
        simple_recipe(
            "app", build={"args": {"PY": "3.11"}}, profile={"display_name": "App", "cpu": 2}
        ),
        Dockerfile=DOCKERFILE,
    )
    (found,) = recipes.discover(settings.load(tmp_path, env={}))
    assert found.name == "app"
    assert found.version == "1.0.0"
    assert found.build is not None
    assert found.build.args == {"PY": "3.11"}
    assert found.build.dockerfile == tmp_path / "app-recipes/app/Dockerfile"
    assert found.smoke.commands[0].run == ("cat", "/hello")
    assert found.profile is not None and found.profile.cpu == 2
    assert found.user_facing


BAD = {
    "yaml-syntax": ("name: app\nversion: [1.0\n", ["recipe.yaml:3: YAML syntax error"]),
    "unknown-key": (
        "name: app\nversion: 1.0.0\ndescription: d\nsmoke: {http: {port: 80}}\ncolour: red\n",
        ["recipe.yaml:5: colour: unknown key; remove it or use one of: bootstrap, build,"],
    ),
    "missing-field": (
        "name: app\nversion: 1.0.0\nsmoke: {http: {port: 80}}\n",
        ["(top level): missing field 'description'; add it (one line saying"],
    ),
    "version-not-semver": (
        "name: app\nversion: '1.2'\ndescription: d\nsmoke: {http: {port: 80}}\n",
        ["recipe.yaml:2: version: '1.2' does not match", "bump it whenever"],
    ),
    "version-unquoted-number": (
        "name: app\nversion: 1.2\ndescription: d\nsmoke: {http: {port: 80}}\n",
        ["recipe.yaml:2: version: expected string, got"],
    ),
    "no-smoke-test": (
        "name: app\nversion: 1.0.0\ndescription: d\nsmoke: {}\n",
        ["recipe.yaml:4: smoke: no alternative given; declare at least one of"],
    ),
    "context-escapes": (
        "name: app\nversion: 1.0.0\ndescription: d\nbuild: {context: ../../..}\n"
        "smoke: {http: {port: 80}}\n",
        ["build.context: ../../.. resolves to ", "; use a path inside it (symlinks are followed)"],
    ),
    "dockerfile-escapes": (
        "name: app\nversion: 1.0.0\ndescription: d\nbuild: {dockerfile: /etc/passwd}\n"
        "smoke: {http: {port: 80}}\n",
        ["build.dockerfile: /etc/passwd resolves to /etc/passwd, outside "],
    ),
    "name-differs-from-folder": (
        "name: other\nversion: 1.0.0\ndescription: d\nsmoke: {http: {port: 80}}\n",
        ["name: 'other' differs from the folder name 'app'; rename one"],
    ),
    "bad-name": (
        "name: App_1\nversion: 1.0.0\ndescription: d\nsmoke: {http: {port: 80}}\n",
        ["recipe.yaml:1: name: 'App_1' does not match", "lower-case letters"],
    ),
    "build-and-bootstrap": (
        "name: app\nversion: 1.0.0\ndescription: d\nbuild: {}\nbootstrap: {suite: bookworm}\n"
        "smoke: {http: {port: 80}}\n",
        ["build and bootstrap exclude each other; keep only one"],
    ),
    "bad-expect-output-regex": (
        "name: app\nversion: 1.0.0\ndescription: d\n"
        "smoke: {commands: [{name: a, run: [x], expect_output: 'ok(?s)'}]}\n",
        ["smoke.commands[0].expect_output: not a valid regular expression (global flags"],
    ),
    "structure-file-missing": (
        "name: app\nversion: 1.0.0\ndescription: d\nsmoke: {structure: nope.yaml}\n",
        ["smoke.structure: 'nope.yaml' is not a file; create it or fix the path"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_recipe_is_named_with_field_and_fix(tmp_path: Path, case: str) -> None:
    text, expected = BAD[case]
    write_recipe(tmp_path, "app", text, Dockerfile=DOCKERFILE)
    found = problems(tmp_path)
    joined = "\n".join(found)
    assert all(line.startswith("app-recipes/app/recipe.yaml") for line in found), found
    for fragment in expected:
        assert fragment in joined, joined


def test_name_clash_and_all_problems_reported_at_once(tmp_path: Path) -> None:
    write_recipe(tmp_path, "one", simple_recipe("two"), Dockerfile=DOCKERFILE)
    write_recipe(tmp_path, "two", simple_recipe("two"), Dockerfile=DOCKERFILE)
    write_recipe(tmp_path, "three", "name: three\n", Dockerfile=DOCKERFILE)
    joined = "\n".join(problems(tmp_path))
    assert "app-recipes/one/recipe.yaml: name: 'two' differs from the folder name 'one'" in joined
    assert "app-recipes/three/recipe.yaml" in joined and "missing field 'version'" in joined


def test_folder_without_recipe_yaml(tmp_path: Path) -> None:
    (tmp_path / "app-recipes" / "stray").mkdir(parents=True)
    assert problems(tmp_path) == [
        "app-recipes/stray/recipe.yaml: missing; add a recipe.yaml or remove the folder"
    ]


def test_secret_in_settings_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "app-recipes").mkdir()
    (tmp_path / "heps.yaml").write_text("registry:\n  host: r.example\n  password: hunter2\n")
    with pytest.raises(ConfigError) as caught:
        settings.load(tmp_path, env={})
    (line,) = caught.value.problems
    assert line.startswith("heps.yaml:3: registry.password: unknown key; remove it")
    assert "hunter2" not in line


def test_bad_recipe_stops_run_with_exit_2_and_builds_nothing(heps, env) -> None:  # type: ignore[no-untyped-def]
    write_recipe(env.repo, "app", simple_recipe("app", version="one"), Dockerfile=DOCKERFILE)
    result = heps(env.repo, "run", "--all")
    assert result.code == 2
    assert "heps: error: app-recipes/app/recipe.yaml:2: version: 'one' does not match" in result.err
    assert "[build]" not in result.err


def test_bundled_recipes_are_valid_and_lint_clean(heps) -> None:  # type: ignore[no-untyped-def]
    loaded = recipes.discover(settings.load(REPO_ROOT, env={}))
    assert {
        "debian-base",
        "jupyterlab-base",
        "ct-reconstruction",
        "deep-learning",
        "spark-driver",
    } <= {r.name for r in loaded}
    result = heps(REPO_ROOT, "lint")
    assert result.code == 0, result.text
    assert "0 failed" in result.out
