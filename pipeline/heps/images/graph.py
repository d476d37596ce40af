"""Which recipe builds on which: FROM lines linked to the recipes that produce them.

A Dockerfile names another recipe's image as docker-stacks does,
``FROM ${REGISTRY}/${OWNER}/<recipe>[:tag]``; the pipeline sets REGISTRY and OWNER to
the configured registry and namespace, so after substitution an internal base is any
image under that prefix. Its tag, when there is one, must name the version the tree
builds; the build always uses the exact image just built (or found) for it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from heps.core.cache import Store
from heps.core.errors import ConfigError
from heps.core.references import split_reference, version_of
from heps.core.settings import RegistrySettings
from heps.images import dockerfile
from heps.images.recipes import Recipe


@dataclass(frozen=True)
class BaseRef:
    recipe: str
    """Name of the recipe whose image this FROM line uses."""
    line: int
    """First line of the FROM instruction, the one to pin."""


@dataclass(frozen=True)
class Node:
    recipe: Recipe
    build_args: dict[str, str]
    """The recipe's args plus REGISTRY and OWNER, as handed to the build."""
    dockerfile: dockerfile.Dockerfile | None
    bases: tuple[BaseRef, ...]
    external: tuple[str, ...]
    """Base images from outside the tree, as named after substitution."""


@dataclass(frozen=True)
class Graph:
    nodes: dict[str, Node]
    order: tuple[str, ...]
    """Every recipe, each after all of its bases; ties broken by name."""

    def base_names(self, name: str) -> list[str]:
        return sorted({b.recipe for b in self.nodes[name].bases})

    def dependents(self, names: set[str]) -> set[str]:
        """`names` and every recipe built on any of them, transitively."""
        found = set(names)
        for name in self.order:
            if any(b in found for b in self.base_names(name)):
                found.add(name)
        return found


def build_args(recipe: Recipe, registry: RegistrySettings) -> dict[str, str]:
    args = dict(recipe.build.args) if recipe.build else {}
    args.update(REGISTRY=registry.host, OWNER=registry.namespace)
    return args


def _node(
    recipe: Recipe,
    registry: RegistrySettings,
    versions: dict[str, str],
    problems: list[str],
    texts: Store | None,
) -> Node:
    args = build_args(recipe, registry)
    if recipe.build is None:
        return Node(recipe, args, None, (), ())
    shown = recipe.show(recipe.build.dockerfile)
    parsed = dockerfile.parse(recipe.build.dockerfile, args, shown, texts)
    if not parsed.stages:
        problems.append(f"{shown}: no FROM instruction; start the Dockerfile with FROM")
    target = recipe.build.target
    if target and target.lower() not in {s.alias for s in parsed.stages}:
        named = ", ".join(s.alias for s in parsed.stages if s.alias) or "none"
        problems.append(
            f"{recipe.show(recipe.folder / 'recipe.yaml')}: build.target: {target!r} names no "
            f"stage of {shown} (stages: {named}); name a `FROM ... AS {target}` stage"
        )
    prefix = f"{registry.host}/{registry.namespace}/"
    bases: list[BaseRef] = []
    external: list[str] = []
    for stage in parsed.stages:
        if stage.previous_stage:
            continue
        repo, tag, _ = split_reference(stage.image)
        if not repo.startswith(prefix):
            external.append(stage.image)
            continue
        base = repo[len(prefix) :]
        if base not in versions:
            problems.append(
                f"{shown}:{stage.line}: FROM: '{stage.image}' names no recipe in the tree; "
                f"add app-recipes/{base} or fix the name"
            )
        elif base == recipe.name:
            problems.append(
                f"{shown}:{stage.line}: FROM: the recipe builds on itself; fix the name"
            )
        else:
            bases.append(BaseRef(base, stage.line))
            if tag not in (None, "latest") and version_of(tag) != versions[base]:
                problems.append(
                    f"{shown}:{stage.line}: FROM: ':{tag}' names {base} {version_of(tag)}, the "
                    f"tree builds {base} {versions[base]}; drop the tag (the pipeline builds on "
                    "the exact image it built from the tree) or make the versions agree"
                )
    return Node(recipe, args, parsed, tuple(bases), tuple(external))


def resolve(recipes: list[Recipe], registry: RegistrySettings, texts: Store | None = None) -> Graph:
    """Link every recipe to its bases and order them; ConfigError on unknown bases or cycles.
    Dockerfiles whose exact text `texts` holds are not parsed again."""
    versions = {r.name: r.version for r in recipes}
    problems: list[str] = []
    nodes = {r.name: _node(r, registry, versions, problems, texts) for r in recipes}
    if problems:
        raise ConfigError(problems)
    waiting = {n: {b.recipe for b in node.bases} for n, node in nodes.items()}
    users: dict[str, set[str]] = {n: set() for n in nodes}
    for name, bases in waiting.items():
        for base in bases:
            users[base].add(name)
    ready = [n for n, bases in waiting.items() if not bases]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for user in users[name]:
            waiting[user].discard(name)
            if not waiting[user]:
                heapq.heappush(ready, user)
    if len(order) < len(nodes):
        cycle = _cycle({n: b for n, b in waiting.items() if b})
        first = nodes[cycle[0]].recipe
        raise ConfigError(
            f"{first.display}: FROM: the recipes build on each other in a cycle "
            f"({' -> '.join([*cycle, cycle[0]])}); break the cycle"
        )
    return Graph(nodes, tuple(order))


def _cycle(waiting: dict[str, set[str]]) -> list[str]:
    """One cycle among recipes that never became ready."""
    path: list[str] = []
    name = min(waiting)
    while name not in path:
        path.append(name)
        name = min(waiting[name])
    return path[path.index(name) :]
