"""Shared fixtures: a real Docker engine, a real distribution registry, a tiny base image.

Nothing here is a test double: the registry is Debian's docker-registry with htpasswd
auth on a free loopback port, started per session with a random password.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from ruamel.yaml import YAML

from heps import cli
from heps.systems import services
from heps.systems.services import RegistryService
from tests import image_cache

HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
"""The host's trust store (it holds the site's CA): the operator's CA bundle in tests."""


def site_ca_text(marker: str) -> str:
    """A CA bundle as an operator passes one: a `#` label and a real certificate (from
    the host's store); heps refuses anything that is not PEM certificates."""
    first = Path(HOST_CA_BUNDLE).read_text().split("-----END CERTIFICATE-----")[0]
    return f"# {marker}\n{first}-----END CERTIFICATE-----\n"


REPO_ROOT = Path(__file__).resolve().parents[1]
BUSYBOX = "heps-test/busybox:1.35"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(
    handler: type[http.server.BaseHTTPRequestHandler], address: str = "127.0.0.1"
) -> Iterator[http.server.ThreadingHTTPServer]:
    """A local HTTP server answering with `handler`, shut down and closed on leaving."""
    server = http.server.ThreadingHTTPServer((address, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def docker_client(tmp_path_factory: pytest.TempPathFactory) -> docker.DockerClient:
    services.ensure_docker(tmp_path_factory.mktemp("state"))
    return docker.from_env(version="auto", timeout=600)


@pytest.fixture(scope="session")
def registry(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient
) -> Iterator[RegistryService]:
    """The session's registry; at the end, every local reference to it goes too (the
    images of a run's pushes and pulls would otherwise fill the disk, run after run)."""
    root = tmp_path_factory.mktemp("registry")
    service = RegistryService(root, f"127.0.0.1:{free_port()}", "tester", secrets.token_urlsafe(18))
    process = service.start()
    yield service
    process.terminate()
    process.wait(timeout=10)
    remove_references(docker_client, service.address)


def references_to(client: docker.DockerClient, address: str) -> list[str]:
    """Local tags and repository digests naming a repository on `address`, newest first."""
    found = []
    for image in sorted(client.images.list(), key=lambda i: i.attrs["Created"], reverse=True):
        names = [*image.tags, *(image.attrs.get("RepoDigests") or [])]
        found += [name for name in names if name.startswith(f"{address}/")]
    return found


def remove_references(client: docker.DockerClient, address: str) -> None:
    """Remove every local tag and digest reference to the registry at `address` (this
    session's own, on a port free when it started): an image goes with its last name,
    an image also named elsewhere (a base, a cache entry) stays."""
    for name in references_to(client, address):
        with contextlib.suppress(docker.errors.ImageNotFound):  # a digest reference goes
            client.images.remove(name)  # with the last tag of its repository
    left = references_to(client, address)
    assert not left, f"images still named on the session registry: {left}"


@pytest.fixture(scope="session")
def busybox(docker_client: docker.DockerClient) -> str:
    """A 2 MB base image made from the host's static busybox: nothing is pulled."""
    if docker_client.images.list(name=BUSYBOX):
        return BUSYBOX
    binary = shutil.which("busybox") or "/bin/busybox"
    applets = subprocess.run([binary, "--list"], capture_output=True, text=True, check=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(binary, arcname="bin/busybox")
        for applet in applets.stdout.split():
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        for folder in ("tmp", "etc", "root", "www"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    repo, tag = BUSYBOX.split(":")
    docker_client.api.import_image_from_data(
        buffer.getvalue(), repository=repo, tag=tag, changes=['CMD ["sh"]', "ENV PATH=/bin"]
    )
    return BUSYBOX


def remove_images(client: docker.DockerClient, namespace: str) -> None:
    """Remove every local tag in `namespace` (or a namespace starting with it), on any
    registry: what one test (or the bundled build) made; an image's other names (a base,
    a cache entry) stay. Newest first, so a base's tag goes after its children's and the
    engine deletes the untagged parents too."""
    found = client.images.list(filters={"reference": f"*/{namespace}*/*"})
    for image in sorted(found, key=lambda i: i.attrs["Created"], reverse=True):
        for tag in image.tags:
            parts = tag.rpartition(":")[0].split("/")
            if len(parts) == 3 and parts[1].startswith(namespace):
                client.images.remove(tag)


@dataclass(frozen=True)
class BundledBuild:
    code: int
    log: str
    entries: dict[str, dict[str, Any]]
    """Report entry per recipe."""


@pytest.fixture(scope="session")
def bundled_build(
    registry: RegistryService, docker_client: docker.DockerClient, tmp_path_factory: Any
) -> Iterator[BundledBuild]:
    """debian-base and heps-user-init of this repository, built, smoke-tested and pushed
    once per session (debootstrap takes a minute) into a namespace of their own, with
    the host's CA bundle, as `make run` passes it (HEPS_CA_BUNDLE: the operator's)."""
    tmp = tmp_path_factory.mktemp("bundled")
    report = tmp / "report.json"
    env = dict(os.environ, HEPS_CA_BUNDLE=HOST_CA_BUNDLE)
    namespace = f"b{uuid.uuid4().hex[:10]}"
    env.update(
        HEPS_REGISTRY=registry.address,
        HEPS_NAMESPACE=namespace,
        HEPS_REGISTRY_USERNAME=registry.username,
        HEPS_REGISTRY_PASSWORD=registry.password,
        HEPS_STATE_DIR=str(tmp / "state"),
        DOCKER_CONFIG=str(tmp / "docker-config"),
    )
    command = [sys.executable, "-m", "heps.cli", "--repo", str(REPO_ROOT), "run"]
    command += ["debian-base", "heps-user-init", "--report", str(report)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    entries = {e["name"]: e for e in read_json(report)["recipes"]} if report.exists() else {}
    if done.returncode == 0:  # its bases, for the platform's images (tests/platform)
        image_cache.keep(docker_client, map(image_cache.Planned.of, entries.values()))
    yield BundledBuild(done.returncode, done.stdout + done.stderr, entries)
    remove_images(docker_client, namespace)


@dataclass
class Env:
    """One test's isolated view: its own namespace in the shared registry, its own repo."""

    repo: Path
    registry: RegistryService
    namespace: str

    def repository(self, name: str) -> str:
        return f"{self.registry.address}/{self.namespace}/{name}"


def isolated(registry: RegistryService, namespace: str, tmp: Path) -> dict[str, str]:
    """The environment that points heps at `namespace` of the test registry, with its
    state and Docker config under `tmp` and no CA bundle."""
    return {
        "HEPS_REGISTRY": registry.address,
        "HEPS_NAMESPACE": namespace,
        "HEPS_REGISTRY_USERNAME": registry.username,
        "HEPS_REGISTRY_PASSWORD": registry.password,
        "HEPS_STATE_DIR": str(tmp / "state"),
        "HEPS_CA_BUNDLE": "",
        "DOCKER_CONFIG": str(tmp / "docker-config"),
    }


@pytest.fixture
def env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    registry: RegistryService,
    busybox: str,
    docker_client: docker.DockerClient,
) -> Iterator[Env]:
    """Its images are removed afterwards: those of its namespace and of any namespace
    whose name starts with it (a test wanting a second one appends to it)."""
    namespace = f"t{uuid.uuid4().hex[:10]}"
    repo = tmp_path / "repo"
    (repo / "app-recipes").mkdir(parents=True)
    for key, value in isolated(registry, namespace, tmp_path).items():
        monkeypatch.setenv(key, value)
    yield Env(repo, registry, namespace)
    remove_images(docker_client, namespace)


def write_recipe(repo: Path, name: str, recipe: dict[str, Any] | str, **files: str) -> Path:
    """app-recipes/<name>/ with recipe.yaml (a dict is dumped as YAML) and other files."""
    folder = repo / "app-recipes" / name
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(recipe, dict):
        stream = io.StringIO()
        YAML().dump(recipe, stream)
        recipe = stream.getvalue()
    (folder / "recipe.yaml").write_text(recipe)
    for filename, text in files.items():
        path = folder / filename.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def simple_recipe(name: str, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "name": name,
        "version": version,
        "description": f"test image {name}",
        "smoke": {"commands": [{"name": "hello", "run": ["cat", "/hello"], "expect_output": name}]},
    }
    recipe.update(extra)
    return recipe


def internal_from(base: str) -> str:
    return f"ARG REGISTRY=example.invalid\nARG OWNER=heps\nFROM ${{REGISTRY}}/${{OWNER}}/{base}\n"


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@pytest.fixture
def heps(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run the `heps` command in-process with --repo; exit code and captured output."""

    def run(repo: Path, *args: str) -> Result:
        capsys.readouterr()
        code = cli.main(["--repo", str(repo), *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
