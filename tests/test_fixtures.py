"""The suite's own housekeeping: what a session leaves on the Docker engine, and the
test image cache (tests/image_cache.py). Real engine, real registry."""

from __future__ import annotations

import contextlib
import io
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from heps.core.credentials import Credentials, Secret
from heps.images.fingerprint import LABEL_FULL
from heps.systems.engine import ContainerEngine
from heps.systems.services import RegistryService
from tests import image_cache
from tests.conftest import free_port, references_to, remove_images, remove_references


@pytest.fixture
def other_registry(tmp_path: Path) -> Iterator[RegistryService]:
    """A second registry, so the session's keeps its images while this test runs."""
    service = RegistryService(tmp_path, f"127.0.0.1:{free_port()}", "u", secrets.token_hex(8))
    process = service.start()
    yield service
    process.terminate()
    process.wait(timeout=10)


def _image(client: docker.DockerClient, busybox: str, label: str) -> str:
    dockerfile = f"FROM {busybox}\nLABEL {LABEL_FULL}={label}\n".encode()
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile), rm=True)
    return str(image.id)


def test_a_sessions_registry_references_go_and_nothing_else(
    docker_client: docker.DockerClient, busybox: str, other_registry: RegistryService
) -> None:
    address = other_registry.address
    elsewhere = f"127.0.0.1:{free_port()}/keep/app:1"  # another registry's name: stays
    creds = Credentials(other_registry.username, Secret(other_registry.password), "test")
    engine = ContainerEngine(docker_client)
    only_here = _image(docker_client, busybox, uuid.uuid4().hex)
    also_elsewhere = _image(docker_client, busybox, uuid.uuid4().hex)
    try:
        docker_client.api.tag(only_here, f"{address}/ns/app", "1")
        digest = engine.push(f"{address}/ns/app:1", creds)
        docker_client.images.remove(f"{address}/ns/app:1")
        engine.pull(f"{address}/ns/app", digest, creds)  # a pulled base: a digest, no tag
        docker_client.api.tag(only_here, f"{address}/ns/sub/app", "2")
        docker_client.api.tag(also_elsewhere, f"{address}/ns/other", "1")
        docker_client.api.tag(also_elsewhere, elsewhere)
        docker_client.api.tag(busybox, f"{address}/ns/busybox", "1")
        assert len(references_to(docker_client, address)) == 4
        assert f"{address}/ns/app@{digest}" in references_to(docker_client, address)

        remove_references(docker_client, address)

        assert references_to(docker_client, address) == []
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(only_here)
        assert docker_client.images.get(also_elsewhere).tags == [elsewhere]
        assert busybox in docker_client.images.get(busybox).tags
    finally:
        for name in (only_here, elsewhere):
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_client.images.remove(name)


def test_a_tests_namespace_goes_and_the_images_other_names_stay(
    docker_client: docker.DockerClient, busybox: str
) -> None:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    image = _image(docker_client, busybox, uuid.uuid4().hex)
    other = f"{image_cache.CACHE}/{namespace}"  # as a cache entry names an image
    try:
        for repository in (f"127.0.0.1:1/{namespace}/app", f"127.0.0.1:2/{namespace}x/b", other):
            docker_client.api.tag(image, repository, "1")
        remove_images(docker_client, namespace)
        assert docker_client.images.get(image).tags == [f"{other}:1"]
    finally:
        docker_client.images.remove(f"{other}:1")


def test_the_image_cache_gives_back_only_the_same_fingerprint(
    docker_client: docker.DockerClient, busybox: str, other_registry: RegistryService
) -> None:
    """An entry is found by its full fingerprint alone, and pushed where the plan says;
    another fingerprint (a changed recipe) finds nothing and is built."""
    fingerprint, name = uuid.uuid4().hex * 2, f"cache-test-{uuid.uuid4().hex[:8]}"
    creds = Credentials(other_registry.username, Secret(other_registry.password), "test")
    image_id = _image(docker_client, busybox, fingerprint)
    made = image_cache.Planned(name, f"{other_registry.address}/ns/{name}:1.0.0", fingerprint)
    changed = image_cache.Planned(name, made.image, uuid.uuid4().hex * 2)
    try:
        docker_client.api.tag(image_id, made.image)
        image_cache.keep(docker_client, [made])
        docker_client.images.remove(made.image)

        assert image_cache.seed(docker_client, creds, [changed]) == []
        assert image_cache.seed(docker_client, creds, [made]) == [name]
        assert docker_client.images.get(made.image).id == image_id
        pushed = docker_client.images.get(made.image).attrs["RepoDigests"]  # set by a push
        assert [d.rpartition("@")[0] for d in pushed] == [made.image.rpartition(":")[0]]
    finally:
        remove_references(docker_client, other_registry.address)
        docker_client.images.remove(image_cache.entry_tag(name, fingerprint))
