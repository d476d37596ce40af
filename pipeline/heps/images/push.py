"""Push a smoke-tested image and prove the registry holds exactly it.

Tags: the recipe's version and an immutable tag carrying the source revision. A tag
that already names another image is refused, never overwritten; the pushed digest is
read back from the registry before it counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import docker

from heps.core import log
from heps.core.errors import StageError, with_retries
from heps.core.references import split_reference
from heps.core.settings import Credentials
from heps.images.fingerprint import LABEL_FULL
from heps.systems.registry import Registry


@dataclass(frozen=True)
class Pushed:
    digest: str
    references: tuple[str, ...]
    """Every pushed REPO:TAG."""
    seconds: float


def refuse_taken_tags(registry: Registry, name: str, tags: list[str], fingerprint: str) -> None:
    """StageError when a tag already holds an image with other content."""
    for tag in tags:
        remote = with_retries(partial(registry.image, name, tag))
        if remote is not None and remote.labels.get(LABEL_FULL) != fingerprint:
            raise StageError(
                "push",
                f"{registry.settings.repository(name)}:{tag} already exists with digest "
                f"{remote.digest} built from other inputs; bump `version` in the recipe "
                "(tags are never overwritten)",
            )


def push(
    client: docker.DockerClient,
    registry: Registry,
    creds: Credentials | None,
    name: str,
    references: tuple[str, ...],
    fingerprint: str,
) -> Pushed:
    """Push every reference of one image; return the digest the registry confirms."""
    started = time.monotonic()
    tags = [split_reference(ref)[1] or "latest" for ref in references]
    refuse_taken_tags(registry, name, tags, fingerprint)
    auth = {"username": creds.username, "password": creds.password.value} if creds else None
    digest = None
    for ref in references:
        repo, tag, _ = split_reference(ref)
        log.phase("push", name, f"pushing {ref}")
        for chunk in client.api.push(repo, tag=tag, auth_config=auth, stream=True, decode=True):
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error")
                raise StageError("push", f"{ref}: {detail}")
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                if digest is not None and aux["Digest"] != digest:
                    raise StageError("push", f"{ref}: digest {aux['Digest']} differs from {digest}")
                digest = aux["Digest"]
    if digest is None:
        raise StageError("push", "the engine reported no digest for the push")
    for tag in tags:
        remote = with_retries(partial(registry.digest, name, tag))
        if remote != digest:
            raise StageError(
                "push", f"registry reports {remote} for {name}:{tag}, the engine pushed {digest}"
            )
    log.phase("push", name, f"verified {digest} under {', '.join(tags)}")
    return Pushed(digest, references, time.monotonic() - started)
