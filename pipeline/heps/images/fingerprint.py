"""Content fingerprints: what decides whether a recipe needs building.

A recipe's *inputs* fingerprint covers its own sources, what its owner versions
(version, Dockerfile, build args, context files as `.dockerignore` filters them, the
bootstrap spec). Its *full* fingerprint adds what it is built on, the *parts*: its
bases' full fingerprints and the site CA bundle, so a change there ripples down and
rebuilds the recipe under a tag of its own without a version bump. All three are
stored as image labels, which is how an empty Docker cache still finds an unchanged
image in the registry, and how a rebuild says which part changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from heps.core.bounded import read_text
from heps.core.cache import FileDigests
from heps.core.errors import ConfigError
from heps.core.log import printable
from heps.images.graph import Graph
from heps.images.recipes import DockerBuild, Recipe
from heps.systems.engine import context_paths

# The pipeline's own build arguments; excluded so moving registries changes nothing.
PIPELINE_ARGS = frozenset({"REGISTRY", "OWNER"})
LABEL_FULL = "io.heps.fingerprint"
LABEL_INPUTS = "io.heps.fingerprint.inputs"
LABEL_PARTS = "io.heps.fingerprint.parts"
CA_PART = "site CA bundle"
UNCACHED = FileDigests(None)


@dataclass(frozen=True)
class Fingerprint:
    inputs: str
    full: str
    parts: dict[str, str]
    """What the recipe is built on: "base NAME" -> that base's full fingerprint, and
    CA_PART -> the bundle's digest."""

    def changed_parts(self, labels: dict[str, str]) -> list[str]:
        """The parts that differ from an image's labels, e.g. ["base debian-base"];
        ["parts"] when the image predates the parts label."""
        try:
            before = json.loads(labels[LABEL_PARTS])
        except (KeyError, ValueError):
            return ["parts"]
        keys = sorted(set(before) | set(self.parts))
        return [k for k in keys if before.get(k) != self.parts.get(k)]


def ignore_patterns(build: DockerBuild) -> list[str]:
    """The context's `.dockerignore` patterns, as the engine reads them."""
    ignore = build.context / ".dockerignore"
    if not ignore.exists():
        return []
    return [
        line.strip()
        for line in read_text(ignore, str(ignore)).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def context_files(recipe: Recipe, build: DockerBuild) -> list[str]:
    """Files the build context holds, relative to it, sorted; `.dockerignore` honoured.

    The one list of what a build sends (and the fingerprint covers). The recipe's own
    recipe.yaml is metadata (profile, smoke checks), never image content. A `.git`
    folder or file is never sent, whatever `.dockerignore` says: a clone keeps its remote
    URL, perhaps with a token, there. A symlink is sent as a link, never followed, and
    one whose target leaves the context is refused: it names a file of the build host.
    """
    root = build.context
    patterns = ignore_patterns(build)
    dockerfile = os.path.relpath(build.dockerfile, root)
    own_recipe = os.path.relpath(recipe.folder / "recipe.yaml", root)
    found = []
    for rel in context_paths(root, patterns, dockerfile):
        if rel == own_recipe or _in_git(rel):
            continue
        if not _utf8(rel):  # its bytes could not reach the fingerprint, reports or review
            raise ConfigError(
                f"{recipe.display}: build.context: {printable(rel)}: a file name that is "
                "not UTF-8; rename it"
            )
        mode = os.lstat(root / rel).st_mode
        if stat.S_ISLNK(mode):
            _check_link(recipe, root, rel)
        if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            found.append(rel)
    return sorted(found)


def _utf8(name: str) -> bool:
    """Whether a name read from the disk was UTF-8 (Python keeps other bytes as
    surrogates, which no UTF-8 text can hold)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _in_git(rel: str) -> bool:
    """Whether a context-relative path is, or is inside, a `.git` folder or file."""
    return rel == ".git" or rel.startswith(".git/") or rel.endswith("/.git") or "/.git/" in rel


def _check_link(recipe: Recipe, root: Path, rel: str) -> None:
    """Refuse a link leaving the context, resolved link by link as the kernel does: a
    lexical `..` would pass `s/../../x` when `s` is itself a link to `../..`."""
    target = os.readlink(root / rel)
    resolved = Path(os.path.realpath(root / rel))
    if os.path.isabs(target) or not resolved.is_relative_to(os.path.realpath(root)):
        raise ConfigError(
            f"{recipe.display}: build.context: {recipe.show(root / rel)} is a symlink to "
            f"'{target}', outside the build context; copy the file into the context instead"
        )


def inputs(recipe: Recipe, digests: FileDigests = UNCACHED) -> str:
    """The recipe's own inputs fingerprint (neither bases nor the CA bundle)."""
    h = hashlib.sha256()

    def add(*parts: str) -> None:
        for part in parts:
            h.update(part.encode())
            h.update(b"\0")

    add("heps-fingerprint-v2", recipe.version)
    if recipe.bootstrap is not None:
        add("bootstrap", json.dumps(recipe.bootstrap.__dict__, sort_keys=True, default=list))
    if recipe.build is not None:
        build = recipe.build
        args = {k: v for k, v in build.args.items() if k not in PIPELINE_ARGS}
        add("dockerfile", build.dockerfile.read_text(encoding="utf-8"))
        add("args", json.dumps(args, sort_keys=True), "target", build.target or "")
        for rel in context_files(recipe, build):
            add(rel, digests.digest(build.context / rel))
    return h.hexdigest()


def compute(
    graph: Graph, ca_bundle: Path | None, digests: FileDigests = UNCACHED
) -> dict[str, Fingerprint]:
    """Fingerprints of every recipe in the graph, bases first; files hashed by `digests`
    (the plan's passes the state folder's cache)."""
    result: dict[str, Fingerprint] = {}
    ca = {CA_PART: digests.digest(ca_bundle)} if ca_bundle is not None else {}
    for name in graph.order:
        own = inputs(graph.nodes[name].recipe, digests)
        parts = {f"base {b}": result[b].full for b in graph.base_names(name)} | ca
        h = hashlib.sha256(own.encode())
        for key, value in sorted(parts.items()):
            h.update(f"\0{key}={value}".encode())
        result[name] = Fingerprint(inputs=own, full=h.hexdigest(), parts=parts)
    return result
