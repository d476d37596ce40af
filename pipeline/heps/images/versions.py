"""Own changes without a version bump, named file by file before anything is built.

An owner bumps `version` for changes to the recipe's own sources only: the Dockerfile,
the build context as `.dockerignore` filters it, and the build settings of recipe.yaml.
A changed base rebuilds the recipe under a tag of its own and needs no bump. Files git
does not track (caches, build outputs) that reach the build context are named as such:
the fix is to delete them or ignore them, never to bump a version.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from heps.core.errors import ConfigError
from heps.core.validation import load_yaml_text
from heps.images import source
from heps.images.fingerprint import context_files, ignore_patterns
from heps.images.graph import Graph, Node
from heps.images.recipes import RECIPE_FILE
from heps.systems.engine import ignored_by

_BUILD_KEYS = ("build", "bootstrap")
"""The recipe.yaml fields besides `version` that reach the image (the rest is metadata)."""


def _yaml(text: str | None) -> dict[str, Any]:
    """A recipe.yaml's fields (of a revision, or as it is), read by the bounded loader;
    {} when it cannot be read (the recipe's own check says why)."""
    try:
        data = load_yaml_text(text, RECIPE_FILE) if text else None
    except ConfigError:
        return {}
    return data if isinstance(data, dict) else {}


def _relative(node: Node, path: Path) -> str:
    return path.relative_to(node.recipe.repo).as_posix()


def source_paths(node: Node) -> list[Path]:
    """Where a recipe's sources live: its folder, and its context and Dockerfile."""
    roots = [node.recipe.folder]
    if node.recipe.build:
        roots += [node.recipe.build.context, node.recipe.build.dockerfile]
    return roots


def own_changes(node: Node, rev: str) -> list[str] | None:
    """Repository paths of the recipe's own image inputs changed since `rev` (the
    working tree included); None when git does not know `rev`."""
    recipe = node.recipe
    recipe_file = recipe.folder / RECIPE_FILE
    changed = source.changed_between(recipe.repo, rev, source_paths(node))
    if changed is None:
        return None
    found = []
    for path in sorted(set(changed)):
        if path == recipe_file:
            old = _yaml(source.show(recipe.repo, rev, path))
            new = _yaml(path.read_text(encoding="utf-8") if path.exists() else None)
            counts = any(old.get(k) != new.get(k) for k in _BUILD_KEYS)
        elif recipe.build and path == recipe.build.dockerfile:
            counts = True
        elif recipe.build and recipe.build.context in path.parents:
            ignored = ignored_by(ignore_patterns(recipe.build))
            counts = not ignored(os.path.relpath(path, recipe.build.context))
        else:
            counts = False
        if counts:
            found.append(_relative(node, path))
    return found


def untracked_inputs(node: Node, untracked: set[Path] | None = None) -> list[str]:
    """Repository paths of build-context files git does not track; `untracked` is
    every untracked file of the repository when the caller already listed them."""
    build = node.recipe.build
    if build is None:
        return []
    if untracked is None:
        untracked = source.untracked(node.recipe.repo, [build.context])
    inside = {p for p in untracked if build.context in p.parents}
    if not inside:
        return []
    files = {build.context / rel for rel in context_files(node.recipe, build)}
    return sorted(_relative(node, p) for p in files & inside)


def untracked_problem(node: Node, untracked: set[Path] | None = None) -> str | None:
    files = untracked_inputs(node, untracked)
    if not files or node.recipe.build is None:
        return None
    ignore = _relative(node, node.recipe.build.context / ".dockerignore")
    shown = ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
    return (
        f"{_relative(node, node.recipe.folder)}: the build context holds files git does not "
        f"track: {shown}; delete them or add them to {ignore} (commit them if the image "
        "needs them)"
    )


def unbumped(tree: Graph, changed: set[str], rev: str) -> list[str]:
    """One line per `changed` recipe whose own sources changed since `rev` while its
    version stayed, naming the files; and per recipe with untracked context files."""
    problems: list[str] = []
    contexts = [n.recipe.build.context for n in tree.nodes.values() if n.recipe.build]
    if not contexts:
        return problems
    everything = source.untracked(tree.nodes[tree.order[0]].recipe.repo, contexts)
    for name in tree.order:
        node = tree.nodes[name]
        recipe_file = node.recipe.folder / RECIPE_FILE
        files: list[str] | None = []
        if name in changed:
            before = _yaml(source.show(node.recipe.repo, rev, recipe_file))
            if before.get("version") == node.recipe.version:
                files = own_changes(node, rev)
        if files:
            problems.append(
                f"{_relative(node, node.recipe.folder)}: own sources changed since {rev} "
                f"without a version bump ({', '.join(files)}); bump `version` in "
                f"{_relative(node, recipe_file)}"
            )
        untracked = untracked_problem(node, everything)
        if untracked:
            problems.append(untracked)
    return problems


def version_taken(node: Node, image: str, built_from: str) -> str:
    """Why a version tag already holds another image, for the run that must not push."""
    untracked = untracked_problem(node)
    changed = own_changes(node, built_from) if built_from else None
    recipe_file = _relative(node, node.recipe.folder / RECIPE_FILE)
    if changed:
        return (
            f"{image} was built from {built_from[:12]}; own sources changed since without a "
            f"version bump ({', '.join(changed)}); bump `version` in {recipe_file}"
        )
    if untracked:
        return f"{image} holds an image built without them; {untracked}"
    return (
        f"{image} already holds an image built from other own sources; bump `version` in "
        f"{recipe_file}"
    )
