"""The dependency graph: build order, unknown internal bases, cycles, dependents."""

from __future__ import annotations

from pathlib import Path

import pytest

from heps.core import settings
from heps.core.errors import ConfigError
from heps.core.settings import RegistrySettings
from heps.images import graph, recipes
from tests.conftest import internal_from, simple_recipe, write_recipe

REGISTRY = RegistrySettings(host="reg.example:5000", namespace="heps")


def tree(repo: Path) -> graph.Graph:
    return graph.resolve(recipes.discover(settings.load(repo, env={})), REGISTRY)


def test_order_puts_bases_first_and_ties_by_name(tmp_path: Path) -> None:
    write_recipe(tmp_path, "zbase", simple_recipe("zbase"), Dockerfile="FROM debian:12\n")
    write_recipe(tmp_path, "mid", simple_recipe("mid"), Dockerfile=internal_from("zbase"))
    write_recipe(tmp_path, "leaf", simple_recipe("leaf"), Dockerfile=internal_from("mid"))
    write_recipe(tmp_path, "alone", simple_recipe("alone"), Dockerfile="FROM debian:12\n")
    built = tree(tmp_path)
    assert built.order == ("alone", "zbase", "mid", "leaf")
    assert built.nodes["leaf"].bases == (graph.BaseRef("mid", 3),)
    assert built.nodes["zbase"].external == ("debian:12",)
    assert built.nodes["mid"].build_args == {"REGISTRY": "reg.example:5000", "OWNER": "heps"}
    assert built.dependents({"zbase"}) == {"zbase", "mid", "leaf"}
    assert built.dependents({"alone"}) == {"alone"}


def test_unknown_internal_base_is_named(tmp_path: Path) -> None:
    write_recipe(tmp_path, "app", simple_recipe("app"), Dockerfile=internal_from("nothere"))
    with pytest.raises(ConfigError) as caught:
        tree(tmp_path)
    assert caught.value.problems == [
        "app-recipes/app/Dockerfile:3: FROM: 'reg.example:5000/heps/nothere' names no recipe "
        "in the tree; add app-recipes/nothere or fix the name"
    ]


def test_cycle_is_named(tmp_path: Path) -> None:
    write_recipe(tmp_path, "a", simple_recipe("a"), Dockerfile=internal_from("b"))
    write_recipe(tmp_path, "b", simple_recipe("b"), Dockerfile=internal_from("c"))
    write_recipe(tmp_path, "c", simple_recipe("c"), Dockerfile=internal_from("a"))
    with pytest.raises(ConfigError) as caught:
        tree(tmp_path)
    assert "cycle (a -> b -> c -> a); break the cycle" in str(caught.value)


def test_tag_on_internal_base_is_refused(tmp_path: Path) -> None:
    write_recipe(tmp_path, "base", simple_recipe("base"), Dockerfile="FROM debian:12\n")
    write_recipe(
        tmp_path,
        "app",
        simple_recipe("app"),
        Dockerfile="ARG REGISTRY\nARG OWNER\nFROM ${REGISTRY}/${OWNER}/base:0.9\n",
    )
    with pytest.raises(ConfigError) as caught:
        tree(tmp_path)
    assert "Dockerfile:3: FROM: tag ':0.9' on an internal base; drop it" in str(caught.value)
