"""Push exactly the smoke-tested image and prove the registry holds exactly it.

Tags: the recipe's version and an immutable tag carrying the source revision. A tag
that already names another image is refused, never overwritten. The tested image ID is
tagged and pushed under the engine's tag lock, so no other heps process on this host
moves the local tag in between; afterwards every tag's manifest is read back and its
config digest must be that image ID. A lost race (another image under a tag) fails,
naming the other digest. The immutable tag goes first: a push interrupted between the
two leaves the version tag missing, which `complete` finishes on the next run.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import partial

from heps.core import log
from heps.core.credentials import Credentials
from heps.core.errors import StageError, with_retries
from heps.core.references import split_reference
from heps.core.stages import Stage
from heps.images.fingerprint import LABEL_FULL
from heps.systems.engine import ContainerEngine, Interrupted
from heps.systems.registry import Registry


@dataclass(frozen=True)
class Pushed:
    digest: str
    image_id: str
    """The tested image: the config digest every tag's manifest was verified to carry."""
    references: tuple[str, ...]
    """Every pushed REPO:TAG."""
    immutable: str
    """The REPO:TAG promotion pins beside the digest: the tag that never moves."""
    seconds: float


def _pushed(digest: str, image_id: str, references: tuple[str, ...], started: float) -> Pushed:
    # A run's references end with the immutable tag (VERSION-g<commit> after the version
    # tag, or the rebuild tag alone): said here once, never rediscovered by position.
    elapsed = time.monotonic() - started
    return Pushed(digest, image_id, references, references[-1], elapsed)


def refuse_taken_tags(registry: Registry, name: str, tags: list[str], fingerprint: str) -> None:
    """StageError when a tag already holds an image with other content."""
    for tag in tags:
        remote = with_retries(partial(registry.image, name, tag))
        if remote is not None and remote.labels.get(LABEL_FULL) != fingerprint:
            raise StageError(
                Stage.PUSH,
                f"{registry.settings.repository(name)}:{tag} already exists with digest "
                f"{remote.digest} built from other inputs; bump `version` in the recipe "
                "(tags are never overwritten)",
            )


def _tags(references: tuple[str, ...]) -> list[str]:
    return [split_reference(ref)[1] or "latest" for ref in references]


def push(
    engine: ContainerEngine,
    registry: Registry,
    creds: Credentials | None,
    name: str,
    image_id: str,
    references: tuple[str, ...],
    fingerprint: str,
    stop: threading.Event,
) -> Pushed:
    """Push image `image_id` under every reference of one recipe; the verified digest."""
    started = time.monotonic()
    digest: str | None = None
    done: list[str] = []
    with engine.tag_lock(split_reference(references[0])[0]):
        refuse_taken_tags(registry, name, _tags(references), fingerprint)
        for ref in reversed(references):  # the immutable tag first (see the module's doc)
            if stop.is_set():
                pushed = ", ".join(done) or "nothing"
                raise Interrupted(Stage.PUSH, f"interrupted: pushed {pushed}; a rerun completes it")
            engine.tag(image_id, ref)
            log.phase(Stage.PUSH, name, f"pushing {ref} ({image_id})")
            this = engine.push(ref, creds)
            if digest is not None and this != digest:
                raise StageError(Stage.PUSH, f"{ref}: digest {this} differs from {digest}")
            digest = this
            done.append(ref)
    assert digest is not None  # references is never empty
    verify(registry, name, references, image_id, digest)
    return _pushed(digest, image_id, references, started)


def verify(
    registry: Registry, name: str, references: tuple[str, ...], image_id: str, digest: str
) -> None:
    """StageError unless every tag holds manifest `digest`, whose config is `image_id`."""
    repository = registry.settings.repository(name)
    for tag in _tags(references):
        found = with_retries(partial(registry.config_digest, name, tag))
        if found is None:
            raise StageError(Stage.PUSH, f"{repository}:{tag}: not in the registry after the push")
        remote, config = found
        if remote != digest or config != image_id:
            raise StageError(
                Stage.PUSH,
                f"lost a race: {repository}:{tag} holds {remote} (image {config}), not the "
                f"tested image {image_id} pushed as {digest}; another run pushed to the same "
                "tag; nothing is reported as pushed",
            )
    tags = ", ".join(_tags(references))
    log.phase(Stage.PUSH, name, f"verified {digest} (image {image_id}) under {tags}")


def complete(
    registry: Registry, name: str, references: tuple[str, ...], fingerprint: str
) -> Pushed | None:
    """Finish a push an earlier run left half done: some tags hold an image with this
    exact fingerprint, the others are missing; tag its digest under the missing ones.
    None when there is no such push (nothing of this fingerprint is there)."""
    started = time.monotonic()
    tags = _tags(references)
    remote = {tag: with_retries(partial(registry.image, name, tag)) for tag in tags}
    ours = [i for i in remote.values() if i and i.labels.get(LABEL_FULL) == fingerprint]
    if not ours or len({image.digest for image in ours}) != 1:
        return None
    missing = [tag for tag, image in remote.items() if image is None]
    if len(ours) + len(missing) != len(tags):
        return None  # a tag holds other content: the normal push refuses it, loudly
    digest = ours[0].digest
    found = with_retries(partial(registry.config_digest, name, digest))
    assert found is not None  # we just read this manifest
    for tag in missing:
        log.phase(Stage.PUSH, name, f"completing an interrupted push: {tag} -> {digest}")
        with_retries(partial(registry.tag, name, tag, digest))
    verify(registry, name, references, found[1], digest)
    return _pushed(digest, found[1], references, started)
