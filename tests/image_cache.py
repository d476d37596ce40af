"""A per-machine cache of the images the test fixtures build with `heps run` from this
repository's recipes, keyed by the pipeline's own full fingerprint (the recipe's sources,
version and build arguments, its bases' full fingerprints, the site CA bundle).

A fixture pushes the cached images of its plan into its session registry before its
run, and `heps run` skips them there as it skips any image whose fingerprint a registry
holds. A change to a recipe, or to anything it is built on, changes the fingerprint: no
entry, so it is built for real (on the cached bases, from Docker's layer cache, since a
cached image keeps its build steps). The entries are local tags `CACHE/NAME:FP`; the
newest KEEP per recipe stay (other worktrees on this engine keep their own trees').
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import docker

from heps.core.credentials import Credentials
from heps.images.fingerprint import LABEL_FULL
from heps.systems.engine import ContainerEngine

CACHE = "heps-test-cache"
KEEP = 5


@dataclass(frozen=True)
class Planned:
    name: str
    image: str
    """REGISTRY/NAMESPACE/NAME:VERSION, as `heps plan --json` and the report name it."""
    fingerprint: str

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Planned:
        """From an entry of `heps plan --json` or of a run's report."""
        return cls(entry["name"], entry["image"], entry["fingerprint"])


def entry_tag(name: str, fingerprint: str) -> str:
    return f"{CACHE}/{name}:{fingerprint[:32]}"


def _cached(client: docker.DockerClient, item: Planned) -> docker.models.images.Image | None:
    try:
        image = client.images.get(entry_tag(item.name, item.fingerprint))
    except docker.errors.ImageNotFound:
        return None
    return image if image.labels.get(LABEL_FULL) == item.fingerprint else None


def seed(client: docker.DockerClient, creds: Credentials, plan: Iterable[Planned]) -> list[str]:
    """Push each planned image the cache holds under its plan's REPO:VERSION (heps's
    own push); the names pushed."""
    engine = ContainerEngine(client)
    seeded = []
    for item in plan:
        image = _cached(client, item)
        if image is None:
            continue
        repository, _, tag = item.image.rpartition(":")
        client.api.tag(image.id, repository, tag)
        engine.push(item.image, creds)
        seeded.append(item.name)
    return seeded


def keep(client: docker.DockerClient, built: Iterable[Planned]) -> None:
    """Cache each image a successful run left under its REPO:VERSION with the planned
    fingerprint, unless an entry exists (its image ID stays, and so the layer cache of
    what is built on it); then drop the oldest entries of those recipes past KEEP."""
    for item in built:
        if _cached(client, item) is None:
            image = client.images.get(item.image)
            if image.labels.get(LABEL_FULL) != item.fingerprint:
                continue  # another run moved the tag: not this fingerprint's image
            repository, _, tag = entry_tag(item.name, item.fingerprint).rpartition(":")
            client.api.tag(image.id, repository, tag)
        _prune(client, item.name)


def _prune(client: docker.DockerClient, name: str) -> None:
    entries = [
        (image.attrs["Created"], tag)
        for image in client.images.list(name=f"{CACHE}/{name}")
        for tag in image.tags
        if tag.startswith(f"{CACHE}/{name}:")
    ]
    for _, tag in sorted(entries, reverse=True)[KEEP:]:
        try:
            client.images.remove(tag)
        except docker.errors.APIError as exc:  # a container (another worktree's) uses it
            warnings.warn(f"test image cache: {tag} kept: {exc}", stacklevel=1)
