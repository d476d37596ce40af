"""Content fingerprints: what decides whether a recipe needs building.

A recipe's *inputs* fingerprint covers everything of its own that reaches the image
(version, Dockerfile, build args, context files as `.dockerignore` filters them, the
site CA bundle, the bootstrap spec). Its *full* fingerprint adds its bases' full
fingerprints, so a base change ripples down. Both are stored as image labels, which
is how an empty Docker cache still finds an unchanged image in the registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from heps.images.graph import Graph
from heps.images.recipes import DockerBuild, Recipe
from heps.systems.engine import context_paths

# The pipeline's own build arguments; excluded so moving registries changes nothing.
PIPELINE_ARGS = frozenset({"REGISTRY", "OWNER"})
LABEL_FULL = "io.heps.fingerprint"
LABEL_INPUTS = "io.heps.fingerprint.inputs"


@dataclass(frozen=True)
class Fingerprint:
    inputs: str
    full: str


def context_files(recipe: Recipe, build: DockerBuild) -> list[str]:
    """Files the build context holds, relative to it, sorted; `.dockerignore` honoured.

    The recipe's own recipe.yaml is metadata (profile, smoke checks), never image content.
    """
    root = build.context
    ignore = root / ".dockerignore"
    patterns: list[str] = []
    if ignore.exists():
        patterns = [
            line.strip()
            for line in ignore.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    dockerfile = os.path.relpath(build.dockerfile, root)
    own_recipe = os.path.relpath(recipe.folder / "recipe.yaml", root)
    found = []
    for rel in context_paths(root, patterns, dockerfile):
        if rel == own_recipe:
            continue
        mode = os.lstat(root / rel).st_mode
        if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            found.append(rel)
    return sorted(found)


def _file_digest(path: Path) -> str:
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        return "link:" + os.readlink(path)
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return f"{'x' if mode & 0o111 else '-'}:{digest}"


def inputs(recipe: Recipe, ca_bundle: Path | None) -> str:
    """The recipe's own inputs fingerprint (bases not included)."""
    h = hashlib.sha256()

    def add(*parts: str) -> None:
        for part in parts:
            h.update(part.encode())
            h.update(b"\0")

    add("heps-fingerprint-v1", recipe.version)
    if ca_bundle is not None:
        add("ca", _file_digest(ca_bundle))
    if recipe.bootstrap is not None:
        add("bootstrap", json.dumps(recipe.bootstrap.__dict__, sort_keys=True, default=list))
    if recipe.build is not None:
        build = recipe.build
        args = {k: v for k, v in build.args.items() if k not in PIPELINE_ARGS}
        add("dockerfile", build.dockerfile.read_text(encoding="utf-8"))
        add("args", json.dumps(args, sort_keys=True), "target", build.target or "")
        for rel in context_files(recipe, build):
            add(rel, _file_digest(build.context / rel))
    return h.hexdigest()


def compute(graph: Graph, ca_bundle: Path | None) -> dict[str, Fingerprint]:
    """Fingerprints of every recipe in the graph, bases first."""
    result: dict[str, Fingerprint] = {}
    for name in graph.order:
        own = inputs(graph.nodes[name].recipe, ca_bundle)
        h = hashlib.sha256(own.encode())
        for base in graph.base_names(name):
            h.update(b"\0" + base.encode() + b"=" + result[base].full.encode())
        result[name] = Fingerprint(inputs=own, full=h.hexdigest())
    return result
