"""The dependency graph: build order, unknown internal bases, cycles, dependents."""

from __future__ import annotations

from pathlib import Path

import pytest

from heps.core import settings
from heps.core.errors import ConfigError
from heps.core.settings import RegistrySettings
from heps.images import graph, recipes
from heps.images.graph import BaseRef
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


def test_tag_on_internal_base_must_name_the_trees_version(tmp_path: Path) -> None:
    write_recipe(tmp_path, "base", simple_recipe("base"), Dockerfile="FROM debian:12\n")
    app = "ARG REGISTRY\nARG OWNER\nFROM ${REGISTRY}/${OWNER}/base:%s\n"
    for tag in ("1.0.0", "1.0.0-g0123456789ab", "1.0.0-fp0123456789ab", "latest"):
        write_recipe(tmp_path, "app", simple_recipe("app"), Dockerfile=app % tag)
        assert tree(tmp_path).base_names("app") == ["base"]
    write_recipe(tmp_path, "app", simple_recipe("app"), Dockerfile=app % "0.9")
    with pytest.raises(ConfigError) as caught:
        tree(tmp_path)
    assert (
        "app-recipes/app/Dockerfile:3: FROM: ':0.9' names base 0.9, the tree builds base 1.0.0"
        in str(caught.value)
    )


def test_arg_defaults_scope_and_stage_aliases_as_the_builder_reads_them(tmp_path: Path) -> None:
    """Global ARG defaults expand earlier ARGs and ${VAR:-word}; a stage's ARG does not
    reach a later FROM; a stage alias is no image; an internal base may serve only a
    build stage."""
    write_recipe(tmp_path, "base", simple_recipe("base"), Dockerfile="FROM debian:12\n")
    write_recipe(tmp_path, "other", simple_recipe("other"), Dockerfile="FROM debian:12\n")
    write_recipe(
        tmp_path,
        "app",
        simple_recipe("app"),
        Dockerfile="ARG REGISTRY=x\nARG OWNER=y\nARG NAME\n"
        "ARG BASE=${REGISTRY}/${OWNER}/${NAME:-base}\n"
        "FROM --platform=linux/amd64 ${BASE} AS build\n"
        "ARG NAME=other\n"
        "FROM ${REGISTRY}/${OWNER}/${NAME:-base} AS second\n"
        "FROM build\nFROM debian:12\nCOPY --from=second /x /x\n",
    )
    graph = tree(tmp_path)
    assert graph.nodes["app"].bases == (BaseRef("base", 5), BaseRef("base", 7))
    assert graph.nodes["app"].external == ("debian:12",)
