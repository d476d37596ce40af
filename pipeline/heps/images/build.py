"""Build one recipe into a local image: one builder class per kind of build.

`DockerfileBuilder` sends a context the pipeline assembles itself (so the fingerprinted
files are exactly the files sent) with the FROM lines of internal bases pinned to the
exact base image just built or resolved. `BootstrapBuilder` makes a Debian root file
system with debootstrap and imports it, for sites that can pull nothing.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol

from heps.core import log, process
from heps.core.errors import StageError
from heps.core.references import split_reference
from heps.core.stages import Stage
from heps.images import dockerfile
from heps.images.fingerprint import (
    LABEL_FULL,
    LABEL_INPUTS,
    LABEL_PARTS,
    Fingerprint,
    context_files,
)
from heps.images.graph import Node
from heps.images.recipes import Bootstrap, Recipe
from heps.systems.engine import ContainerEngine, Interrupted

CA_FILE = "heps-site-ca.crt"
"""Name of the site CA bundle in every build context (empty when none is configured)."""
DEBOOTSTRAP_TIMEOUT = 3600.0
"""Seconds a debootstrap may take (3 to 4 minutes from a nearby mirror)."""
PINNED_DOCKERFILE = ".heps.Dockerfile"


@dataclass(frozen=True)
class BuildRequest:
    """Everything one build needs, as plain data."""

    node: Node
    fingerprint: Fingerprint
    tags: tuple[str, ...]
    """Local tags for the result: REPO:VERSION and REPO:VERSION-REVISION."""
    bases: dict[str, str] = field(default_factory=dict)
    """Recipe name -> exact local image ID of the base to build on."""
    revision: str = "unknown"
    source_url: str | None = None
    ca_bundle: Path | None = None
    debian_mirror: str = "http://deb.debian.org/debian"

    @property
    def recipe(self) -> Recipe:
        return self.node.recipe

    def labels(self, base_digests: dict[str, str]) -> dict[str, str]:
        recipe = self.recipe
        labels = {
            "org.opencontainers.image.title": recipe.name,
            "org.opencontainers.image.description": recipe.description,
            "org.opencontainers.image.version": recipe.version,
            "org.opencontainers.image.revision": self.revision,
            "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            LABEL_FULL: self.fingerprint.full,
            LABEL_INPUTS: self.fingerprint.inputs,
            LABEL_PARTS: json.dumps(self.fingerprint.parts, sort_keys=True),
        }
        if self.source_url:
            labels["org.opencontainers.image.source"] = self.source_url
        if base_digests:
            labels["io.heps.bases"] = json.dumps(base_digests, sort_keys=True)
        return labels


@dataclass(frozen=True)
class BuiltImage:
    name: str
    image_id: str
    tags: tuple[str, ...]
    seconds: float


class Builder(Protocol):
    def build(self, request: BuildRequest) -> BuiltImage: ...


def builder_for(recipe: Recipe, engine: ContainerEngine, stop: threading.Event) -> Builder:
    if recipe.bootstrap:
        return BootstrapBuilder(engine, stop)
    return DockerfileBuilder(engine, stop)


def tag_all(engine: ContainerEngine, image_id: str, tags: tuple[str, ...]) -> None:
    """Point the local tags at `image_id`, under the engine's tag lock (see push)."""
    for ref in tags:
        with engine.tag_lock(split_reference(ref)[0]):
            engine.tag(image_id, ref)


class DockerfileBuilder:
    def __init__(self, engine: ContainerEngine, stop: threading.Event):
        self.engine = engine
        self.stop = stop

    def context_tar(self, request: BuildRequest) -> io.BytesIO:
        """The exact context the fingerprint covers, plus the pinned Dockerfile and CA file."""
        build = request.recipe.build
        assert build is not None
        pins = {ref.line: request.bases[ref.recipe] for ref in request.node.bases}
        text = dockerfile.pin_stages(build.dockerfile.read_text(encoding="utf-8"), pins)
        ca = request.ca_bundle.read_bytes() if request.ca_bundle else b""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for rel in context_files(request.recipe, build):
                tar.add(build.context / rel, arcname=rel, recursive=False)
            for name, data in ((PINNED_DOCKERFILE, text.encode()), (CA_FILE, ca)):
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        buffer.seek(0)
        return buffer

    def build(self, request: BuildRequest) -> BuiltImage:
        recipe = request.recipe
        build = recipe.build
        assert build is not None
        started = time.monotonic()
        base_ids = {ref.recipe: request.bases[ref.recipe] for ref in request.node.bases}
        image_id = self.engine.build(
            self.context_tar(request),
            dockerfile=PINNED_DOCKERFILE,
            buildargs=request.node.build_args,
            labels=request.labels(base_ids),
            target=build.target,
            on_line=partial(log.phase, Stage.BUILD, recipe.name),
            stop=self.stop,
        )
        tag_all(self.engine, image_id, request.tags)
        return BuiltImage(recipe.name, image_id, request.tags, time.monotonic() - started)


class BootstrapBuilder:
    """debootstrap + `docker import`: a real Debian base from a mirror, no pulls."""

    def __init__(self, engine: ContainerEngine, stop: threading.Event):
        self.engine = engine
        self.stop = stop

    def build(self, request: BuildRequest) -> BuiltImage:
        recipe = request.recipe
        spec = recipe.bootstrap
        assert spec is not None
        started = time.monotonic()
        if shutil.which("debootstrap") is None:
            raise StageError(
                Stage.BUILD, "debootstrap is not installed; `apt-get install debootstrap` (root)"
            )
        with tempfile.TemporaryDirectory(prefix=f"heps-{recipe.name}-") as tmp:
            root = Path(tmp) / "rootfs"
            self._debootstrap(recipe.name, spec, root, spec.mirror or request.debian_mirror)
            if request.ca_bundle:
                _install_ca(recipe.name, root, request.ca_bundle)
            for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
                for path in (root / junk).glob("*"):
                    if path.is_file():
                        path.unlink()
            archive = Path(tmp) / "rootfs.tar"
            process.run(["tar", "-C", str(root), "-cf", str(archive), "."], timeout=600, check=True)
            changes = [f"LABEL {k}={json.dumps(v)}" for k, v in request.labels({}).items()]
            changes += [
                "ENV LANG=C.UTF-8",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                f"CMD {json.dumps(list(spec.cmd))}",
            ]
            log.phase(
                Stage.BUILD, recipe.name, f"importing {archive.stat().st_size >> 20} MiB rootfs"
            )
            image_id = self.engine.import_image(archive, changes)
        tag_all(self.engine, image_id, request.tags)
        return BuiltImage(recipe.name, image_id, request.tags, time.monotonic() - started)

    def _debootstrap(self, name: str, spec: Bootstrap, root: Path, mirror: str) -> None:
        command = ["debootstrap", f"--variant={spec.variant}"]
        if spec.include:
            command.append("--include=" + ",".join(spec.include))
        command += [spec.suite, str(root), mirror]
        log.phase(Stage.BUILD, name, " ".join(command))

        def show(line: str) -> None:
            if not line.startswith(("I: Retrieving", "I: Validating")):
                log.phase(Stage.BUILD, name, line)  # hundreds of those per package; not them

        try:
            done = process.run(
                command, timeout=DEBOOTSTRAP_TIMEOUT, stop=self.stop, merge=True, on_line=show
            )
        except process.ProcessStopped:
            raise Interrupted(Stage.BUILD, "interrupted during debootstrap") from None
        if not done.ok:
            tail = done.stdout.rstrip().splitlines()[-8:]
            raise StageError(Stage.BUILD, "debootstrap failed:\n" + "\n".join(tail))


def _install_ca(name: str, root: Path, bundle: Path) -> None:
    """Trust the site CA in the image, for pip and apt alike, at build and at run time."""
    target = root / "usr/local/share/ca-certificates" / CA_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bundle, target)
    if (root / "usr/sbin/update-ca-certificates").exists():
        process.run(["chroot", str(root), "update-ca-certificates"], timeout=120, check=True)
        (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
        log.phase(Stage.BUILD, name, "site CA bundle installed in the system trust store")
    else:
        log.phase(
            Stage.BUILD, name, "site CA copied; add ca-certificates to bootstrap.include to use it"
        )
