"""What `heps platform` asks of the Docker engine, in one place: images present or
pulled, a labelled network, volumes and containers kept when unchanged, and removal of
exactly what carries the platform's label.

Every object made here carries `heps.ihep.ac.cn/platform=<name>` (the hub's spawner
labels user containers and volumes the same way); `down` removes by that label only.
A container also carries the hash of its whole specification, so `up` keeps an
unchanged one running and replaces one whose image, settings or secrets changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import docker
import docker.errors
from docker.types import Mount

from heps import engine
from heps.errors import HepsError
from heps.settings import Credentials

LABEL = "heps.ihep.ac.cn/platform"
SPEC_LABEL = "heps.ihep.ac.cn/platform-spec"


@dataclass(frozen=True)
class Service:
    """One long-running container of the platform (hub or proxy)."""

    name: str
    image: str
    command: list[str] | None
    environment: dict[str, str]
    network: str
    ports: dict[str, tuple[str, int]] = field(default_factory=dict)
    binds: dict[str, str] = field(default_factory=dict)
    """host path -> container path, read-only."""
    volumes: dict[str, str] = field(default_factory=dict)
    """named volume -> container path."""
    group_add: list[str] = field(default_factory=list)
    user: str | None = None

    def digest(self, image_id: str) -> str:
        text = json.dumps([asdict(self), image_id], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Running:
    name: str
    kind: str
    status: str
    detail: str


class Engine:
    def __init__(self, platform: str) -> None:
        self.client = engine.connect()
        self.platform = platform
        self.labels = {LABEL: platform}

    def size(self) -> tuple[float, int]:
        """(CPUs, memory bytes) of the machine the engine runs on."""
        info = self.client.info()
        return float(info["NCPU"]), int(info["MemTotal"])

    def image_id(self, ref: str) -> str | None:
        try:
            return str(self.client.images.get(ref).id)
        except docker.errors.ImageNotFound:
            return None

    def tag(self, source: str, target: str) -> None:
        repo, _, tag = target.rpartition(":")
        self.client.images.get(source).tag(repo, tag)

    def pull(self, ref: str, credentials: Credentials | None) -> bool:
        auth = None
        if credentials:
            auth = {"username": credentials.username, "password": credentials.password.value}
        try:
            self.client.images.pull(ref, auth_config=auth)
        except docker.errors.APIError:
            return False
        return True

    def network(self, name: str) -> str:
        """The platform's bridge network (made once); its gateway address on this host."""
        found = self.client.networks.list(names=[name])
        net = found[0] if found else self.client.networks.create(name, labels=self.labels)
        net.reload()
        if net.attrs.get("Labels", {}).get(LABEL) != self.platform:
            raise HepsError(f"network {name}: exists but is not this platform's; remove it")
        return str(net.attrs["IPAM"]["Config"][0]["Gateway"])

    def volume(self, name: str) -> None:
        try:
            self.client.volumes.get(name)
        except docker.errors.NotFound:
            self.client.volumes.create(name, labels=self.labels)

    def service(self, spec: Service) -> str:
        """Run `spec`, keeping an identical running container; what was done."""
        image_id = self.image_id(spec.image)
        if image_id is None:
            raise HepsError(f"{spec.image}: not on this machine")
        digest = spec.digest(image_id)
        action = "started"
        found = self.client.containers.list(all=True, filters={"name": f"^{spec.name}$"})
        if found:
            old = found[0]
            if old.labels.get(LABEL) != self.platform:
                raise HepsError(f"container {spec.name}: exists but is not this platform's")
            if old.labels.get(SPEC_LABEL) == digest and old.status == "running":
                return "unchanged"
            old.remove(force=True)
            action = "replaced"
        self.client.containers.run(
            spec.image,
            spec.command,
            name=spec.name,
            detach=True,
            environment=spec.environment,
            labels={**self.labels, SPEC_LABEL: digest},
            network=spec.network,
            ports={inside: outside for inside, outside in spec.ports.items()},
            mounts=[Mount(dst, src, type="bind", read_only=True) for src, dst in spec.binds.items()]
            + [Mount(dst, src) for src, dst in spec.volumes.items()],
            tmpfs={"/tmp": "rw,nosuid,nodev"},  # noqa: S108 - the container's own /tmp
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            group_add=spec.group_add,
            user=spec.user,
            restart_policy={"Name": "unless-stopped"},
        )
        return action

    def logs(self, name: str, lines: int = 20) -> str:
        try:
            return str(self.client.containers.get(name).logs(tail=lines).decode(errors="replace"))
        except docker.errors.NotFound:
            return ""

    def running(self) -> list[Running]:
        """Every container, volume and network of this platform."""
        selector: dict[str, Any] = {"label": f"{LABEL}={self.platform}"}
        found = [
            Running(c.name, "container", c.status, c.image.tags[0] if c.image.tags else "")
            for c in self.client.containers.list(all=True, filters=selector)
        ]
        volumes = self.client.volumes.list(filters=selector)
        found += [Running(v.name, "volume", "", "") for v in volumes]
        found += [
            Running(n.name, "network", "", "") for n in self.client.networks.list(filters=selector)
        ]
        return found

    def remove_all(self) -> list[str]:
        """Remove every object labelled as this platform's: containers, volumes, network."""
        selector: dict[str, Any] = {"label": f"{LABEL}={self.platform}"}
        removed = []
        for container in self.client.containers.list(all=True, filters=selector):
            container.remove(force=True)
            removed.append(f"container {container.name}")
        for volume in self.client.volumes.list(filters=selector):
            volume.remove(force=True)
            removed.append(f"volume {volume.name}")
        for network in self.client.networks.list(filters=selector):
            network.remove()
            removed.append(f"network {network.name}")
        return removed
