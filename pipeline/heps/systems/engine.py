"""The container engine: the one module that talks to the Docker SDK (as repo2docker's
`ContainerEngine`). Everything the pipeline asks of the engine is a typed method here.

Containers it starts carry the run's labels (`io.heps.run`, `io.heps.recipe`) and an
owner label naming host, pid and process start time, so a later run can tell a
container whose run is gone (killed, even by SIGKILL) from one a live run still uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import docker
import docker.auth
import docker.errors
import requests
from docker.models.containers import Container as _SdkContainer
from docker.types import Mount
from docker.utils.build import PatternMatcher, exclude_paths

from heps.core.credentials import Credentials
from heps.core.errors import ConfigError, HepsError, StageError
from heps.core.paths import locked
from heps.core.stages import Stage

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
RUN_LABEL = "io.heps.run"
RECIPE_LABEL = "io.heps.recipe"
OWNER_LABEL = "io.heps.owner"
"""HOST/PID/START: the process that started the container (START from /proc/PID/stat)."""


class EngineError(HepsError):
    """The engine refused an operation in the middle of a stage."""


class Interrupted(StageError):
    """The run was told to stop (SIGINT/SIGTERM) while this stage was under way."""


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """The SDK's API errors as EngineError: callers need not know the SDK."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise EngineError(f"Docker engine: {exc.explanation or exc}") from None


def config_auth(host: str) -> dict[str, str]:
    """The Docker config's credentials for `host` (config.json or a credential helper),
    keys lower-cased; empty when there are none."""
    try:
        auth = docker.auth.load_config().resolve_authconfig(host)
    except Exception as exc:  # a broken credential helper must not hide the real cause
        raise ConfigError(f"Docker config: cannot read credentials for {host}: {exc}") from None
    # config.json entries come back as username/password, credential helpers' as Username/...
    return {k.lower(): str(v) for k, v in (auth or {}).items()}


def context_paths(root: Path, patterns: list[str], dockerfile: str) -> set[str]:
    """Paths under `root` a build context holds, `.dockerignore` patterns applied as the
    engine applies them."""
    if patterns:
        return set(exclude_paths(str(root), patterns, dockerfile=dockerfile))
    # Nothing to drop: the set the matcher's walk finds (every file and folder, links to
    # folders listed, not entered), from os.walk, without matching each path in Python.
    found: set[str] = set()
    skip = len(str(root)) + 1

    def fail(exc: OSError) -> None:
        raise exc

    for top, folders, files in os.walk(root, onerror=fail):
        prefix = top[skip:] + "/" if len(top) >= skip else ""
        found.update(prefix + name for name in folders)
        found.update(prefix + name for name in files)
    return found


def ignored_by(patterns: list[str]) -> Callable[[str], bool]:
    """Whether `.dockerignore` `patterns` drop a context-relative path, as the engine
    decides it."""
    return PatternMatcher(patterns).matches  # type: ignore[no-any-return]


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def owner() -> str:
    """This process as HOST/PID/START, for the owner label."""
    pid = os.getpid()
    return f"{socket.gethostname()}/{pid}/{_process_start(pid)}"


def owner_gone(value: str) -> bool:
    """Is the process an owner label names gone? Only decidable on its own host."""
    host, _, rest = value.partition("/")
    pid, _, start = rest.partition("/")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return _process_start(int(pid)) != start


@dataclass(frozen=True)
class ImageInfo:
    id: str
    labels: dict[str, str]
    size: int


def _auth(creds: Credentials | None) -> dict[str, str] | None:
    return {"username": creds.username, "password": creds.password.value} if creds else None


LOG_LINES = 1000
LOG_BYTES = 64 << 10


@dataclass(frozen=True)
class Logs:
    text: str
    truncated: bool
    """Earlier output was dropped (or may have been: the engine sent its last LOG_LINES)."""


class Container:
    """One container the engine runs for us."""

    def __init__(self, sdk: _SdkContainer):
        self._sdk = sdk
        self.id: str = sdk.id
        self.short_id: str = sdk.short_id

    def wait(self, timeout: float) -> int | None:
        """Its exit code, or None when it still runs after `timeout` seconds."""
        try:
            status = self._sdk.wait(timeout=timeout)
        except (requests.ConnectionError, requests.Timeout):  # docker-py's read timeout
            return None
        except docker.errors.NotFound:  # removed under us (an interrupted run)
            return None
        code = status.get("StatusCode")
        return int(code) if code is not None else None

    def kill(self) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self._sdk.kill()  # an already stopped or removed container needs no killing

    def logs(self) -> Logs:
        """The end of its output: the engine sends at most LOG_LINES lines, of which the
        last LOG_BYTES bytes are kept, so an image printing gigabytes costs no memory."""
        kept = bytearray()
        lines = 0
        cut = False
        with _refusals():
            # follow=False: docker-py follows a streamed log by default, which waits for a
            # running container (a probe's server) to end.
            chunks = self._sdk.logs(
                stdout=True, stderr=True, stream=True, follow=False, tail=LOG_LINES
            )
            for chunk in chunks:
                lines += chunk.count(b"\n")
                kept += chunk
                if len(kept) > LOG_BYTES:
                    del kept[: len(kept) - LOG_BYTES]
                    cut = True
        return Logs(kept.decode(errors="replace"), cut or lines >= LOG_LINES)

    def running(self) -> bool:
        with _refusals():
            self._sdk.reload()
        return bool(self._sdk.status not in ("exited", "dead"))

    def cpu_seconds(self) -> float:
        """CPU its processes have used so far: the cgroup's counter (cpu.stat usage_usec
        on cgroup v2, cpuacct.usage on v1) as the engine reports it, read at once."""
        with _refusals():
            stats = self._sdk.client.api.stats(self.id, stream=False, one_shot=True)
        return float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9

    def host_port(self, port: int) -> str | None:
        """The loopback port `port`/tcp is published on, once the engine has bound it."""
        bound = (self._sdk.ports.get(f"{port}/tcp") or [{}])[0]
        value = bound.get("HostPort")
        return str(value) if value else None

    def remove(self) -> bool:
        """Kill and remove it; False when it was already gone (or going)."""
        return _remove_container(self._sdk.client.api, self.id)


class ContainerEngine:
    """A connected engine: builds, imports, tags, pushes, pulls, runs, inspects."""

    def __init__(self, client: docker.DockerClient):
        self._client = client
        self._id: str | None = None

    def build(
        self,
        context: IO[bytes],
        *,
        dockerfile: str,
        buildargs: dict[str, str],
        labels: dict[str, str],
        target: str | None,
        on_line: Callable[[str], None],
        stop: threading.Event,
    ) -> str:
        """Build from a context tar; each output line to `on_line`; the image ID.

        No registry credentials go with it (docker-py sends every login of the Docker
        config): bases are built or pulled by the pipeline beforehand, and anything else
        a Dockerfile names is fetched anonymously, so a merge request's FROM cannot read
        a private image with the operator's login."""
        with _refusals():
            stream = _Anonymous(self._client.api).build(
                fileobj=context,
                custom_context=True,
                dockerfile=dockerfile,
                buildargs=buildargs,
                labels=labels,
                target=target,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            return _follow_build(stream, on_line, stop)

    def import_image(self, archive: Path, changes: list[str]) -> str:
        """`docker import` of a root file system tar; the image ID."""
        with _refusals():
            result = self._client.api.import_image_from_file(str(archive), changes=changes)
        image_id = str(json.loads(result.strip().splitlines()[-1])["status"])
        if not image_id.startswith("sha256:"):
            raise StageError(Stage.BUILD, f"docker import failed: {image_id}")
        return image_id

    def tag(self, image_id: str, reference: str) -> None:
        repo, _, tag = reference.rpartition(":")
        with _refusals():
            self._client.api.tag(image_id, repo, tag)

    def push(self, reference: str, creds: Credentials | None) -> str:
        """Push a local REPO:TAG; the manifest digest the engine reports."""
        repo, _, tag = reference.rpartition(":")
        digest = None
        with _refusals():
            for chunk in self._client.api.push(
                repo, tag=tag, auth_config=_auth(creds), stream=True, decode=True
            ):
                if "error" in chunk or "errorDetail" in chunk:
                    detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error")
                    raise StageError(Stage.PUSH, f"{reference}: {detail}")
                aux = chunk.get("aux")
                if isinstance(aux, dict) and aux.get("Digest"):
                    digest = str(aux["Digest"])
        if digest is None:
            raise StageError(Stage.PUSH, f"{reference}: the engine reported no digest for the push")
        return digest

    @contextlib.contextmanager
    def tag_lock(self, repository: str) -> Iterator[None]:
        """Held while this engine's local tags of `repository` are set and pushed: a
        host-wide file lock per engine and repository, so no other heps process on this
        host moves a tag between our `tag` and our `push`."""
        if self._id is None:
            with _refusals():
                self._id = str(self._client.info().get("ID", ""))
        key = hashlib.sha256(f"{self._id}\0{repository}".encode()).hexdigest()[:24]
        with locked(Path(tempfile.gettempdir()) / f"heps-tags-{key}.lock"):
            yield

    def pull(self, repository: str, digest: str, creds: Credentials | None) -> str:
        """Pull REPOSITORY@DIGEST; the local image ID."""
        with _refusals():
            self._client.api.pull(repository, tag=digest, auth_config=_auth(creds))
            return str(self._client.images.get(f"{repository}@{digest}").id)

    def image(self, reference: str) -> ImageInfo | None:
        """A local image by ID or reference; None when the engine does not have it."""
        try:
            with _refusals():
                attrs = self._client.api.inspect_image(reference)
        except EngineError:
            return None  # absent (404) or unreadable: both mean "not here" to callers
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return ImageInfo(str(attrs["Id"]), dict(labels), int(attrs["Size"]))

    def run(
        self,
        image: str,
        command: list[str] | None,
        labels: dict[str, str],
        publish: int | None = None,
    ) -> Container:
        """Start `image` detached, labelled with `labels` and this process as owner;
        `publish` maps that container port to a free loopback port."""
        ports = {f"{publish}/tcp": ("127.0.0.1", None)} if publish is not None else None
        with _refusals():
            sdk = self._client.containers.run(
                image,
                command,
                detach=True,
                labels={**labels, OWNER_LABEL: owner()},
                ports=ports,
            )
        return Container(sdk)

    def labelled(self, labels: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
        """(id, labels) of every container, running or not, carrying all `labels`
        (an empty value matches any value)."""
        wanted = [f"{k}={v}" if v else k for k, v in labels.items()]
        with _refusals():
            found = self._client.api.containers(all=True, filters={"label": wanted})
        return [(str(c["Id"]), dict(c.get("Labels") or {})) for c in found]

    def remove_container(self, container_id: str) -> bool:
        """Kill and remove a container; False when it was already gone (or going)."""
        return _remove_container(self._client.api, container_id)

    def started_from(self, image_id: str) -> list[str]:
        """IDs of containers started from exactly this image (not from its descendants)."""
        with _refusals():
            found = self._client.api.containers(all=True, filters={"ancestor": image_id})
        return [str(c["Id"]) for c in found if c.get("ImageID") == image_id]


class _Anonymous(docker.APIClient):  # type: ignore[misc]
    """The engine's API client, sharing its connection, that sends a build no
    X-Registry-Config header."""

    def __init__(self, api: docker.APIClient) -> None:
        self.__dict__.update(api.__dict__)

    def _set_auth_headers(self, headers: dict[str, str]) -> None:
        """Adds nothing."""


def _remove_container(api: Any, container_id: str) -> bool:
    try:
        api.remove_container(container_id, force=True)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        if exc.status_code == 409:  # "removal already in progress": another thread's sweep
            return False
        raise EngineError(f"Docker engine: {exc.explanation or exc}") from None
    return True


def _follow_build(stream: Any, on_line: Callable[[str], None], stop: threading.Event) -> str:
    """Lines of the build to `on_line`; StageError on an error inside the stream; the ID.

    Stopping stops reading at the next line of output; the engine finishes or drops
    the build on its own, and its result is never tagged."""
    image_id: str | None = None
    tail: list[str] = []
    for chunk in stream:
        if stop.is_set():
            raise Interrupted(Stage.BUILD, "interrupted during the build")
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error", "")
            context = "".join(f"\n{line}" for line in tail[-5:])
            raise StageError(Stage.BUILD, _ANSI.sub("", detail).strip() + context)
        for line in _ANSI.sub("", chunk.get("stream", "")).splitlines():
            if line.strip():
                tail.append(line)
                on_line(line.rstrip())
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = str(aux["ID"])
    if image_id is None:
        raise StageError(Stage.BUILD, "the engine ended the build without an image ID")
    return image_id


def connect() -> ContainerEngine:
    """The engine at DOCKER_HOST (or the local socket), checked with a ping."""
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(version="auto", timeout=600)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise ConfigError(
            f"Docker engine at {where}: not reachable ({reason}); start it with "
            "`heps services up` (root) or point DOCKER_HOST at a running engine"
        ) from None
    return ContainerEngine(client)


# The platform on one machine (`heps platform`).

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


class PlatformEngine:
    """What `heps platform` asks of the engine: images present or pulled, a labelled
    network, volumes and containers kept when unchanged, and removal of exactly what
    carries the platform's label (`heps.ihep.ac.cn/platform=<name>`, which the hub's
    spawner puts on user containers and volumes too). A container also carries the hash
    of its whole specification, so `up` keeps an unchanged one and replaces a changed one."""

    def __init__(self, platform: str) -> None:
        self.engine = connect()
        self.client = self.engine._client
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

    def image_labels(self, ref: str) -> dict[str, str] | None:
        """The labels of the image `ref` names here; None when it is not here."""
        try:
            return dict(self.client.images.get(ref).labels or {})
        except docker.errors.ImageNotFound:
            return None

    def tag(self, source: str, target: str) -> None:
        repo, _, tag = target.rpartition(":")
        self.client.images.get(source).tag(repo, tag)

    def pull(self, ref: str, credentials: Credentials | None) -> bool:
        try:
            self.client.images.pull(ref, auth_config=_auth(credentials))
        except docker.errors.APIError:  # not there, or refused: the caller builds it
            return False
        return True

    def network(self, name: str) -> str:
        """The platform's bridge network (made once); its gateway address on this host."""
        found = self.client.networks.list(names=[name])
        net = found[0] if found else self.client.networks.create(name, labels=self.labels)
        net.reload()
        if net.attrs.get("Labels", {}).get(LABEL) != self.platform:
            raise EngineError(f"network {name}: exists but is not this platform's; remove it")
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
            raise EngineError(f"{spec.image}: not on this machine")
        digest = spec.digest(image_id)
        action = "started"
        found = self.client.containers.list(all=True, filters={"name": f"^{spec.name}$"})
        if found:
            old = found[0]
            if old.labels.get(LABEL) != self.platform:
                raise EngineError(f"container {spec.name}: exists but is not this platform's")
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

    def remove_all(self, first: str = "") -> list[str]:
        """Remove every object labelled as this platform's: containers (`first` before
        the others: the one that makes more), then volumes and the network, each kind
        again until a pass finds none (objects made or freed while we remove)."""
        selector: dict[str, Any] = {"label": f"{LABEL}={self.platform}"}
        removed: list[str] = []
        kinds: tuple[tuple[str, Callable[[], list[Any]]], ...] = (
            ("container", lambda: self.client.containers.list(all=True, filters=selector)),
            ("volume", lambda: self.client.volumes.list(filters=selector)),
            ("network", lambda: self.client.networks.list(filters=selector)),
        )
        for kind, listing in kinds:
            for _ in range(50):
                found = sorted(listing(), key=lambda o: o.name != first)
                if not found:
                    break
                for thing in found:
                    try:
                        thing.remove(**({"force": True} if kind != "network" else {}))
                    except docker.errors.NotFound:
                        continue  # gone by itself (a spawn cleaning up after itself)
                    except docker.errors.APIError:
                        time.sleep(0.2)  # still in use by what is being removed
                        continue
                    removed.append(f"{kind} {thing.name}")
            else:
                raise EngineError(f"platform {self.platform}: {kind}s keep reappearing")
        return removed
