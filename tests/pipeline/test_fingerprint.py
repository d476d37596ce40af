"""Fingerprints change exactly when what reaches the image changes."""

from __future__ import annotations

import json
from pathlib import Path

from heps.core import settings
from heps.images import fingerprint, graph, recipes
from tests.conftest import internal_from, simple_recipe, write_recipe
from tests.pipeline.test_graph import REGISTRY


def fps(repo: Path, ca: Path | None = None) -> dict[str, fingerprint.Fingerprint]:
    tree = graph.resolve(recipes.discover(settings.load(repo, env={})), REGISTRY)
    return fingerprint.compute(tree, ca)


def setup_tree(repo: Path) -> None:
    write_recipe(
        repo,
        "base",
        simple_recipe("base"),
        Dockerfile="FROM debian:12\nCOPY . /src\n",
        **{"data.txt": "one", "notes.md": "x", ".dockerignore": "*.md\n"},
    )
    write_recipe(repo, "app", simple_recipe("app"), Dockerfile=internal_from("base"))


def test_stable_when_nothing_changes(tmp_path: Path) -> None:
    setup_tree(tmp_path)
    assert fps(tmp_path) == fps(tmp_path)


def test_ignored_files_and_recipe_metadata_do_not_count(tmp_path: Path) -> None:
    setup_tree(tmp_path)
    before = fps(tmp_path)
    (tmp_path / "app-recipes/base/notes.md").write_text("edited")
    recipe = tmp_path / "app-recipes/base/recipe.yaml"
    recipe.write_text(recipe.read_text().replace("test image base", "a new description"))
    assert fps(tmp_path) == before


def test_context_change_ripples_to_children_through_full_only(tmp_path: Path) -> None:
    setup_tree(tmp_path)
    before = fps(tmp_path)
    (tmp_path / "app-recipes/base/data.txt").write_text("two")
    after = fps(tmp_path)
    assert after["base"].inputs != before["base"].inputs
    assert after["app"].inputs == before["app"].inputs
    assert after["app"].full != before["app"].full


def test_exec_bit_build_args_and_version_count(tmp_path: Path) -> None:
    setup_tree(tmp_path)
    seen = {fps(tmp_path)["base"].inputs}
    (tmp_path / "app-recipes/base/data.txt").chmod(0o755)
    seen.add(fps(tmp_path)["base"].inputs)
    recipe = tmp_path / "app-recipes/base/recipe.yaml"
    recipe.write_text(recipe.read_text().replace("1.0.0", "1.0.1"))
    seen.add(fps(tmp_path)["base"].inputs)
    recipe.write_text(recipe.read_text() + "build: {args: {X: '1'}}\n")
    seen.add(fps(tmp_path)["base"].inputs)
    assert len(seen) == 4


def test_ca_bundle_is_a_part_not_an_own_input(tmp_path: Path) -> None:
    """A new site CA bundle rebuilds every recipe without asking any owner for a bump."""
    setup_tree(tmp_path)
    before = fps(tmp_path)
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    after = fps(tmp_path, ca)
    for name in ("base", "app"):
        assert after[name].inputs == before[name].inputs
        assert after[name].full != before[name].full
    labels = {fingerprint.LABEL_PARTS: json.dumps(before["app"].parts)}
    assert after["app"].changed_parts(labels) == ["base base", fingerprint.CA_PART]
    assert after["app"].changed_parts({}) == ["parts"]


def test_registry_location_does_not_count(tmp_path: Path) -> None:
    setup_tree(tmp_path)
    tree = graph.resolve(
        recipes.discover(settings.load(tmp_path, env={})),
        settings.RegistrySettings(host="elsewhere:443", namespace="heps"),
    )
    assert fingerprint.compute(tree, None) == fps(tmp_path)
