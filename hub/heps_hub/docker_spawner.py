"""DockerSpawner for the platform on one machine, wired as the cluster wires KubeSpawner.

Per spawn: the heps-user-init image runs first (root with only CHOWN, DAC_OVERRIDE and
FOWNER, read-only root, no new privileges, no network: it joins the empty network
namespace of PLATFORM-netless; the init container's CPU and memory limits,
heps_hub.spawn.USER_INIT_RESOURCES), with the SSO identity and the site policy, exactly the
cluster's init container; its refusal fails the spawn with its one-line reason. It
writes passwd/group to the user's identity volume and the home and group data paths to
the home and data volumes. The app container, made meanwhile, starts only once
user-init succeeded, and is removed unstarted when it refused. It runs as the SSO uid,
gid and supplementary groups, without capabilities or privilege escalation, with those
passwd/group files as its /etc/passwd and /etc/group (bound read-only from the identity
volume's folder on the engine's host, as the cluster mounts them by subPath: Docker
20.10 cannot mount one file out of a volume), the profile's cpu and memory limits
capped to the machine, and the heps.ihep.ac.cn/user label.

The profile list is read from the mounted profile-list.yaml at every spawn page and
spawn, so a promotion reaches users without restarting the hub.

Speed (docs/benchmarks.md): DockerSpawner sends every Docker call of every spawn through
one thread, so ten spawns queued behind each other's user-init; here `engine_threads`
calls run at once. The image check, her identity volume and the network-less namespace
are made at once, and the app container while user-init runs. User-init's container is
removed, and the data link made, beside the spawn rather than on its path; its files
reach the app container by bind mount, not by a copy out of one container and into the
other; it makes no network namespace of its own. The spawner waits for JupyterLab's
/api itself, polling at most 50 ms apart, where the hub's own wait backs off to 5 s
between polls. Each phase is timed (heps_hub.phases): the pending page shows them, the
hub log has one line per spawn.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import yaml
from docker.errors import APIError, NotFound
from docker.types import Mount
from dockerspawner import DockerSpawner
from jupyterhub.httpclient import fetch
from jupyterhub.utils import exponential_backoff
from tornado import web
from traitlets import Any as AnyTrait
from traitlets import Integer, default

from heps_hub import config, local
from heps_hub import values as hub_values
from heps_hub.auth import IDENTITY_KEY
from heps_hub.identity import Identity
from heps_hub.phases import PhaseLog
from heps_hub.spawn import IDENTITY_DIR, POLICY_DIR, USER_INIT_RESOURCES, data_link

INIT_CAPABILITIES = ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
POLICY_FILE = f"{POLICY_DIR}/policy.yaml"
INIT_LIMITS = USER_INIT_RESOURCES["limits"]  # the cluster's, as Docker counts them
INIT_CPUS = int(hub_values.quantity(INIT_LIMITS["cpu"]) * 1e9)
INIT_MEMORY = int(hub_values.quantity(INIT_LIMITS["memory"]))


def netless_problem(container: dict[str, Any], platform: str) -> str:
    """Why an existing container named like PLATFORM-netless must not lend user-init its
    network namespace (empty when it may): every user-init would share its network."""
    labels = container.get("Config", {}).get("Labels") or {}
    if labels.get(local.LABEL_PLATFORM) != platform:
        return (
            f"not made by platform {platform!r} (its {local.LABEL_PLATFORM} label differs); "
            "rename or remove that container, then spawn again"
        )
    if container.get("HostConfig", {}).get("NetworkMode") != "none":
        return "has a network; remove it (`heps platform down`) and spawn again"
    return ""


class SpawnRefused(web.HTTPError):
    """The user-init container refused the identity; the message is its one line. An
    HTTPError, so JupyterHub shows it on the spawn page (fast failure) and in "Spawn
    failed" (slow one), where any other exception reads "Unhandled error"."""

    def __init__(self, message: str) -> None:
        super().__init__(403, message)
        # the pending page of a spawn that failed before it loaded shows only this
        self.jupyterhub_message = message


def _policy() -> dict[str, Any]:
    """The site policy as the hub sees it: `heps platform up` writes it beside local.yaml."""
    path = Path(os.environ.get("HEPS_HUB_LOCAL", "local.yaml")).with_name("policy.yaml")
    with contextlib.suppress(OSError, yaml.YAMLError):
        found = yaml.safe_load(path.read_text())
        if isinstance(found, dict):
            return found
    return {}  # no data folders to name: the page says "none yet"


class HEPSDockerSpawner(DockerSpawner):  # type: ignore[misc]
    local_settings = AnyTrait(None, config=True, help="heps_hub.local.Local, from local.yaml")
    engine_threads = Integer(
        10, config=True, help="Docker calls in flight at once, for all spawns together"
    )
    heps_aside: ClassVar[set[asyncio.Future[Any]]] = set()
    """Work beside the spawns (HEPSDockerSpawner._aside), held until it ends."""
    heps_netless: ClassVar[asyncio.Lock | None] = None
    """One spawn at a time makes sure the shared network-less container runs."""

    @property
    def executor(self) -> ThreadPoolExecutor:
        """One pool for every spawner (DockerSpawner's has a single thread)."""
        cls = type(self)
        if cls._executor is None:
            cls._executor = ThreadPoolExecutor(self.engine_threads, thread_name_prefix="docker")
        pool: ThreadPoolExecutor = cls._executor
        return pool

    def run_pre_spawn_hook(self) -> Any:
        self.heps_phases = PhaseLog()
        self.heps_phases.enter("requested")
        return super().run_pre_spawn_hook()

    async def progress(self) -> AsyncIterator[dict[str, object]]:
        """The spawn's real phases, each as it is entered, for the pending page."""
        shown = 0
        while True:
            phases: PhaseLog = getattr(self, "heps_phases", PhaseLog())
            for index in range(shown, len(phases.marks)):
                yield phases.event(index)
            shown = len(phases.marks)
            if self.pending != "spawn":
                return
            await asyncio.sleep(0.1)

    def clear_state(self) -> None:
        """A stopped server's phases are not the next spawn's."""
        super().clear_state()
        self.heps_phases = PhaseLog()

    @default("options_form")
    def _options_form_default(self) -> Any:
        return lambda spawner: spawner.spawn_page()

    async def spawn_page(self) -> str:
        """The profiles as pinned now, with the folders she will see; those whose image
        is not here are shown disabled."""
        found = self.offers()
        here = set()
        for offer in found:
            with contextlib.suppress(NotFound):
                await self.docker("inspect_image", offer.image)
                here.add(offer.slug)
        auth_state = await self.user.get_auth_state() or {}
        if IDENTITY_KEY not in auth_state:
            return local.options_form(found, here)
        groups = [g["name"] for g in json.loads(auth_state[IDENTITY_KEY])["groups"]]
        storage = hub_values.load(config.config_dir()).spawner.storage
        home, shared = local.folders(
            _policy(), groups, self.user.name, storage.home_base, storage.data_base
        )
        return local.options_form(found, here, home, tuple(shared))

    @default("options_from_form")
    def _options_from_form_default(self) -> Any:
        return lambda form: {"profile": (form.get("profile") or [""])[0]}

    def offers(self) -> list[local.Offer]:
        values = hub_values.load(config.config_dir())
        for line in values.refused:  # one bad entry is left out, not the whole spawn page
            self.log.warning("profile not offered: %s", line)
        return local.offers(values.profiles, self.local_settings)

    def apply_identity(self, identity: Identity, spawner_values: hub_values.Spawner) -> None:
        """Called by the authenticator before each spawn (KubeSpawner gets traits)."""
        self.heps_identity = identity
        self.heps_values = spawner_values
        home = f"{spawner_values.storage.home_base}/{identity.name}"
        self.environment = {"HOME": home, "USER": identity.name, "NB_USER": identity.name}
        # nocopy: nothing of an image reaches the shared volumes (the app container is
        # made while user-init runs, maybe before her home is in an empty home volume)
        self.volumes = {
            self.local_settings.home_volume: {
                "bind": spawner_values.storage.home_base,
                "mode": "rw,nocopy",
            },
            self.local_settings.data_volume: {
                "bind": spawner_values.storage.data_base,
                "mode": "rw,nocopy",
            },
        }
        self.post_start_cmd = shlex.join(data_link(spawner_values.storage.data_base))
        self.extra_create_kwargs = {
            "user": f"{identity.uid}:{identity.gid}",
            "working_dir": home,
            "labels": self._labels(),
        }
        self.extra_host_config = {
            "group_add": [str(g.gid) for g in identity.groups],
            "security_opt": ["no-new-privileges"],
            "cap_drop": ["ALL"],
        }

    def _labels(self) -> dict[str, str]:
        return {
            local.LABEL_PLATFORM: self.local_settings.platform,
            local.LABEL_USER: self.user.name,
        }

    async def start(self) -> Any:
        slug = self.user_options.get("profile")
        found = {o.slug: o for o in self.offers()}
        offer = found.get(slug) if slug else next((o for o in found.values() if o.default), None)
        if offer is None:
            known = ", ".join(sorted(found))
            raise SpawnRefused(
                f"There is no application {slug!r} here. Go back and pick one of: {known}."
            )
        if not hasattr(self, "heps_identity"):
            raise SpawnRefused("This session has no identity. Log out, log in again, then Start.")
        self.image, self.cpu_limit, self.mem_limit = offer.image, offer.cpu, offer.memory
        ip, port = await self._start_after_user_init()
        phases = self.heps_phases
        phases.enter("jupyterlab")
        await self._wait_for_jupyterlab(f"http://{ip}:{port}{self.server.base_url}api")
        phases.enter("answered")
        self.log.info(phases.line(self.user.name))
        return ip, port

    async def _start_after_user_init(self) -> tuple[str, int]:
        """User-init runs while the app container is made; the app starts only once
        user-init succeeded (start_object), and is removed, never started, when not."""
        self.heps_phases.enter("user-init")
        _, folder, network = await asyncio.gather(
            self._require_image(self.image), self._identity_volume(), self._netless()
        )
        # bound when the app starts, after user-init wrote them: `binds`, not `mounts`,
        # which would refuse files that do not exist yet at create
        self.volumes = {
            **self.volumes,
            **{f"{folder}/{n}": {"bind": f"/etc/{n}", "mode": "ro"} for n in ("passwd", "group")},
        }
        self.heps_init = asyncio.ensure_future(self._user_init(network))
        try:
            ip, port = await super().start()
        except BaseException:
            self.heps_init.cancel()  # when still running: it removes its container
            await asyncio.wait([self.heps_init])
            if not self.heps_init.cancelled():
                self.heps_init.exception()  # seen: start_object raised it, or create failed
            if self.object_id:  # made and never started: removed (JupyterHub stops a started one)
                await self.remove_object()
            raise
        return ip, port

    async def start_object(self) -> None:
        """DockerSpawner's start, once user-init succeeded; its refusal is the spawn's."""
        await self.heps_init
        self.heps_phases.enter("container")
        await super().start_object()

    async def _wait_for_jupyterlab(self, url: str) -> None:
        """Poll until the server answers (any status below 500), at most 50 ms apart."""

        async def answers() -> bool:
            try:
                answer = await fetch(url, raise_for_status=False, allow_redirects=False)
            except (TimeoutError, aiohttp.ClientError):
                return False  # not listening yet
            return bool(answer.status < 500)

        await exponential_backoff(
            answers,
            f"JupyterLab did not answer within {self.http_timeout} s",
            start_wait=0.05,
            max_wait=0.05,  # a refused connection costs nothing; a late look costs the user
            timeout=self.http_timeout,
        )

    async def _require_image(self, image: str) -> None:
        try:
            await self.docker("inspect_image", image)
        except NotFound:
            raise SpawnRefused(
                "This application is not ready on this machine yet. Pick another one, or "
                f"ask the platform's operator to run `heps platform up` ({image} is missing)."
            ) from None

    def _identity(self) -> str:
        return f"{self.local_settings.platform}-identity-{self.escaped_name}"

    async def _identity_volume(self) -> str:
        """Her identity volume, where user-init writes passwd and group: its folder on
        the engine's host (the local driver's Mountpoint)."""
        made = await self.docker("create_volume", self._identity(), labels=self._labels())
        return str(made["Mountpoint"])

    async def _user_init(self, network: str) -> None:
        """Run heps-user-init for this user in the network namespace `network`; raise
        SpawnRefused with its one line when it refuses."""
        identity, values = self.heps_identity, self.heps_values
        name = f"{self.local_settings.platform}-init-{self.escaped_name}"
        host_config = self.client.create_host_config(
            binds={self.local_settings.policy_file: {"bind": POLICY_FILE, "mode": "ro"}},
            mounts=[
                Mount(IDENTITY_DIR, self._identity()),
                Mount(values.storage.home_base, self.local_settings.home_volume, no_copy=True),
                Mount(values.storage.data_base, self.local_settings.data_volume, no_copy=True),
            ],
            cap_drop=["ALL"],
            cap_add=INIT_CAPABILITIES,
            security_opt=["no-new-privileges"],
            read_only=True,
            network_mode=network,
            mem_limit=INIT_MEMORY,
            nano_cpus=INIT_CPUS,
        )
        create = {
            "image": values.user_init.image,
            "command": ["heps-user-init", "--policy", POLICY_FILE, "--output", IDENTITY_DIR],
            "environment": {"HEPS_USER_IDENTITY": identity.as_json()},
            "user": "0",
            "name": name,
            "labels": self._labels(),
            "host_config": host_config,
        }
        try:
            init = (await self.docker("create_container", **create))["Id"]
        except APIError as exc:  # 409: a leftover of an interrupted spawn has the name
            if exc.status_code != HTTPStatus.CONFLICT:
                raise
            await self._remove_leftover(name)
            init = (await self.docker("create_container", **create))["Id"]
        # by its Id from here on: a container given that name meanwhile is someone else's
        try:
            await self.docker("start", init)
            code = (await self.docker("wait", init, timeout=120))["StatusCode"]
            if code != 0:
                output = (await self.docker("logs", init)).decode(errors="replace").strip()
                reason = output.splitlines()[-1] if output else f"exit status {code}"
                raise SpawnRefused(
                    f"user-init refused this account: {reason}. Nothing was started. Send "
                    "this message to the HEPS helpdesk: they fix accounts in the SSO service."
                )
        except BaseException:
            with contextlib.suppress(NotFound):  # removed meanwhile: the first error stands
                await self.docker("remove_container", init, force=True)
            raise
        self._aside(self.docker("remove_container", init, force=True), f"removing {name}")

    async def _remove_leftover(self, name: str) -> None:
        """Remove the container named like this spawn's user-init when an earlier spawn
        of this platform left it; refuse the spawn when it is anyone else's."""
        found = await self.docker("inspect_container", name)
        labels = found["Config"].get("Labels") or {}
        if labels.get(local.LABEL_PLATFORM) != self.local_settings.platform:
            raise self._in_the_way(
                name, f"not made by platform {self.local_settings.platform!r}; rename or remove it"
            )
        await self.docker("remove_container", found["Id"], force=True)

    def _in_the_way(self, name: str, problem: str) -> SpawnRefused:
        """The refusal she reads when a container of the platform's is not as it must be;
        the operators' log says which and what to do."""
        self.log.error("%s: %s", name, problem)
        return SpawnRefused(
            "Sessions cannot start right now: the platform's set-up is in the way. Tell the "
            "platform's operators; nothing was started."
        )

    async def _netless(self) -> str:
        """User-init's network mode: the namespace of PLATFORM-netless, a container that
        sleeps with no network (loopback only), made at the first spawn and shared by
        every user-init. Network "none" made a namespace for each user-init container,
        about 0.2 s of every spawn here (docs/benchmarks.md)."""
        cls = type(self)
        if cls.heps_netless is None:
            cls.heps_netless = asyncio.Lock()
        name = f"{self.local_settings.platform}-netless"
        # spawns at once look at it together; only making or starting it is one at a time
        with contextlib.suppress(NotFound):
            if await self._netless_running(name):
                return f"container:{name}"
        async with cls.heps_netless:
            try:
                running = await self._netless_running(name)
            except NotFound:
                await self.docker(
                    "create_container",
                    image=self.heps_values.user_init.image,
                    command=["sleep", "infinity"],
                    user="65534",
                    name=name,
                    labels={local.LABEL_PLATFORM: self.local_settings.platform},
                    host_config=self.client.create_host_config(
                        network_mode="none",
                        cap_drop=["ALL"],
                        security_opt=["no-new-privileges"],
                        read_only=True,
                        mem_limit="16m",
                        pids_limit=4,
                    ),
                )
                running = False
            if not running:  # made now, or stopped (the engine restarted)
                await self.docker("start", name)
        return f"container:{name}"

    async def _netless_running(self, name: str) -> bool:
        found = await self.docker("inspect_container", name)
        if problem := netless_problem(found, self.local_settings.platform):
            raise self._in_the_way(name, problem)
        return bool(found["State"]["Running"])

    def _aside(self, work: Any, what: str) -> None:
        """Run `work` beside the spawn: its end is logged, never waited for."""
        task = asyncio.ensure_future(work)
        self.heps_aside.add(task)

        def done(finished: asyncio.Future[Any]) -> None:
            self.heps_aside.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                self.log.warning("%s: %s", what, finished.exception())

        task.add_done_callback(done)

    async def post_start_exec(self) -> None:
        """The data link (post_start_cmd) is made beside JupyterLab's start: DockerSpawner
        only logs its outcome, and JupyterLab answers before anyone can look for it."""
        self._aside(super().post_start_exec(), "linking the data folders")
