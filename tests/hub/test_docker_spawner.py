"""The local spawner on the real Docker engine. User-init's container is made, started,
waited for and removed by the Id its create returned, so a container of the same name
made by someone else meanwhile is never the one started or removed. The app container
is made while user-init runs and started only once it succeeded; when user-init
refuses, the app container is removed, never started.

User-init's program is tested in tests/user_init and end to end in
tests/platform/test_platform.py; here a busybox script in its place writes the two
files it writes (or refuses as it does), so only the spawner's handling of containers is
under test, in seconds and without the pipeline's images.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import tarfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import docker
import pytest
from docker.errors import NotFound
from jupyterhub.utils import format_exception

from heps_hub import local
from heps_hub.docker_spawner import HEPSDockerSpawner, SpawnRefused
from heps_hub.identity import Group, Identity
from heps_hub.phases import PhaseLog
from heps_hub.spawn import USER_INIT_RESOURCES
from heps_hub.values import Spawner, UserInit, quantity
from tests.conftest import BUSYBOX

STAND_IN = """#!/bin/sh
# heps-user-init --policy FILE --output DIR, as the spawner calls it
case "$HEPS_USER_IDENTITY" in
  *'"name": "mallory"'*) echo "heps-user-init: refused: uid: 500 is outside the allowed range"
                         exit 1 ;;
esac
sleep 0.5  # long enough for the app container to be made meanwhile
echo "alice:x:20001:20001::/home/alice:/bin/sh" > "$4/passwd"
echo "heps-users:x:20001:" > "$4/group"
"""
T = TypeVar("T")
ALICE = Identity("alice", 20001, 20001, (Group("heps-users", 20001),), "alice@ihep.ac.cn")
MALLORY = Identity("mallory", 500, 20001, (Group("heps-users", 20001),), "m@ihep.ac.cn")


@pytest.fixture(scope="module")
def stand_in(busybox: str, docker_client: docker.DockerClient) -> Iterator[str]:
    """busybox with the script above as /bin/heps-user-init."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text, mode in (
            ("Dockerfile", f"FROM {busybox}\nCOPY heps-user-init /bin/\n", 0o644),
            ("heps-user-init", STAND_IN, 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text.encode()), mode
            tar.addfile(info, io.BytesIO(text.encode()))
    buffer.seek(0)
    tag = f"heps-test/user-init-stand-in:{uuid.uuid4().hex[:8]}"
    docker_client.images.build(fileobj=buffer, custom_context=True, tag=tag, rm=True)
    yield tag
    docker_client.images.remove(tag, force=True)


class Meddled(HEPSDockerSpawner):
    """Runs `meddle` once, right after the engine answered the user-init create, and
    notes each engine call as it returns. The app container gets the environment the
    spawner was given only: the hub's own variables (API token, URLs) need a hub, and
    the container here only sleeps."""

    meddle: Callable[[], None] | None = None
    calls: list[tuple[str, str]]
    """(method, container name or Id) as each call returned."""
    inspected: dict[str, dict[str, Any]]
    """Container name -> the engine's inspection of it, right after it was made."""

    async def docker(self, method: str, *args: Any, **kwargs: Any) -> Any:
        answer = await super().docker(method, *args, **kwargs)
        if method == "create_container" and "-init-" in kwargs.get("name", "") and self.meddle:
            meddle, self.meddle = self.meddle, None
            meddle()
        what = kwargs.get("name") or (args[0] if args and isinstance(args[0], str) else "")
        self.calls.append((method, what))
        if method == "create_container":
            self.calls.append(("made", answer["Id"]))
            self.inspected[what] = self.client.inspect_container(answer["Id"])
        return answer

    def get_env(self) -> dict[str, str]:
        return dict(self.environment)


Make = Callable[[Identity], "Meddled"]


@pytest.fixture
def spawners(stand_in: str, docker_client: docker.DockerClient, tmp_path: Path) -> Iterator[Make]:
    """Each identity's spawner on one platform of the test's own, removed afterwards."""
    platform = f"heps-sp-{uuid.uuid4().hex[:8]}"
    policy = tmp_path / "policy.yaml"
    policy.write_text("{}\n")
    settings = local.Local(
        platform=platform,
        public_url="http://127.0.0.1:1",
        authorize_url="http://127.0.0.1:1/auth",
        token_url="http://127.0.0.1:1/token",
        userdata_url="http://127.0.0.1:1/me",
        hub_connect_url="http://127.0.0.1:1",
        proxy_api_url="http://127.0.0.1:1",
        network=platform,
        policy_file=str(policy),
        home_volume=f"{platform}-home",
        data_volume=f"{platform}-data",
        cpus=1.0,
        memory=2**30,
    )

    def make(identity: Identity) -> Meddled:
        found = Meddled(local_settings=settings, engine_threads=4, prefix=platform, remove=True)
        found.user = SimpleNamespace(name=identity.name)
        found.calls, found.inspected, found.heps_phases = [], {}, PhaseLog()
        found.image, found.cmd = stand_in, ["sleep", "60"]
        found.cpu_limit, found.mem_limit = 0.5, 2**28
        found.apply_identity(identity, Spawner("heps", "heps-scheduler", UserInit(stand_in)))
        return found

    yield make
    selector = {"label": f"{local.LABEL_PLATFORM}={platform}"}
    for container in docker_client.api.containers(all=True, filters=selector):
        docker_client.api.remove_container(container["Id"], force=True)
    for volume in docker_client.volumes.list(filters=selector):
        volume.remove(force=True)
    for name in (settings.home_volume, settings.data_volume):
        with contextlib.suppress(NotFound):
            docker_client.volumes.get(name).remove(force=True)


@pytest.fixture
def spawner(spawners: Make) -> Meddled:
    return spawners(ALICE)


def _init_name(spawner: Meddled) -> str:
    return f"{spawner.local_settings.platform}-init-alice"


def run(work: Callable[[], Awaitable[T]]) -> T:
    """`work` in an event loop of its own; what it leaves beside the spawn is awaited too."""

    async def run() -> T:
        try:
            return await work()
        finally:
            await asyncio.gather(*HEPSDockerSpawner.heps_aside)

    return asyncio.run(run())


def containers_made(spawner: Meddled) -> dict[str, str]:
    """Name -> Id of each container the spawner made."""
    calls = spawner.calls
    return {calls[i - 1][1]: what for i, (method, what) in enumerate(calls) if method == "made"}


def user_init(spawner: Meddled) -> str:
    """User-init's run, as the spawn's start makes it: her identity volume's folder."""

    async def work() -> str:
        folder, network = await asyncio.gather(spawner._identity_volume(), spawner._netless())
        await spawner._user_init(network)
        return folder

    return run(work)


def test_user_init_writes_her_files_and_its_container_goes(
    spawner: Meddled, docker_client: docker.DockerClient
) -> None:
    folder = user_init(spawner)
    assert folder.endswith(f"/{spawner.local_settings.platform}-identity-alice/_data")
    assert Path(folder, "passwd").read_text().startswith("alice:x:20001:20001:")
    assert not docker_client.api.containers(all=True, filters={"name": f"^/{_init_name(spawner)}$"})


def test_user_init_has_the_init_containers_rights_and_limits(
    spawner: Meddled, docker_client: docker.DockerClient
) -> None:
    """As the cluster's init container (heps_hub.spawn): root with three capabilities
    only, no new privileges, a read-only root, no network of its own, its limits."""
    user_init(spawner)
    init = spawner.inspected[_init_name(spawner)]
    host, limits = init["HostConfig"], USER_INIT_RESOURCES["limits"]
    assert init["Config"]["User"] == "0" and host["CapDrop"] == ["ALL"]
    assert sorted(c.removeprefix("CAP_") for c in host["CapAdd"]) == [
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
    ]
    assert host["SecurityOpt"] == ["no-new-privileges"] and host["ReadonlyRootfs"]
    netless = docker_client.api.inspect_container(f"{spawner.local_settings.platform}-netless")
    assert host["NetworkMode"] == f"container:{netless['Id']}"
    assert host["NanoCpus"] == quantity(limits["cpu"]) * 1e9
    assert host["Memory"] == quantity(limits["memory"])


def test_a_same_named_container_made_meanwhile_is_never_started_nor_removed(
    spawner: Meddled, docker_client: docker.DockerClient
) -> None:
    """Someone removes user-init's container right after its create and makes another
    of that name: the spawn fails, and theirs stays as they made it."""
    name = _init_name(spawner)
    theirs: dict[str, str] = {}

    def meddle() -> None:
        docker_client.api.remove_container(name, force=True)
        theirs.update(docker_client.api.create_container(BUSYBOX, ["true"], name=name))

    spawner.meddle = meddle
    try:
        with pytest.raises(NotFound):
            user_init(spawner)
        found = docker_client.api.inspect_container(name)
        assert found["Id"] == theirs["Id"] and found["State"]["Status"] == "created"
    finally:
        if theirs:  # not labelled as the platform's: the fixture would leave it
            docker_client.api.remove_container(theirs["Id"], force=True)


def test_a_leftover_of_another_platform_is_not_removed_but_refused(
    spawner: Meddled, docker_client: docker.DockerClient
) -> None:
    name = _init_name(spawner)
    other = docker_client.api.create_container(BUSYBOX, ["true"], name=name)
    try:
        with pytest.raises(SpawnRefused, match="Sessions cannot start right now"):
            user_init(spawner)
        assert docker_client.api.inspect_container(name)["Id"] == other["Id"]
    finally:
        docker_client.api.remove_container(other["Id"], force=True)


def test_the_refusal_is_her_one_line_and_nothing_is_left(
    spawners: Make, docker_client: docker.DockerClient
) -> None:
    spawner = spawners(MALLORY)
    with pytest.raises(SpawnRefused, match="uid: 500 is outside the allowed range"):
        user_init(spawner)
    name = f"{spawner.local_settings.platform}-init-mallory"
    assert not docker_client.api.containers(all=True, filters={"name": f"^/{name}$"})


def test_a_refusal_says_why_where_jupyterhub_shows_a_failed_spawn() -> None:
    """The pending page of a spawn that failed before it loaded shows only an error's
    jupyterhub_message; the progress events and the spawn page show its text."""
    refusal = SpawnRefused("user-init refused this account: why")
    assert format_exception(refusal, only_jupyterhub=True)[0] == refusal.log_message
    assert format_exception(refusal)[0] == refusal.log_message


def test_the_app_container_is_made_while_user_init_runs_and_starts_after_it(
    spawner: Meddled, docker_client: docker.DockerClient
) -> None:
    run(spawner._start_after_user_init)
    app = docker_client.api.inspect_container(f"{spawner.local_settings.platform}-alice")
    made = containers_made(spawner)
    init = made[_init_name(spawner)]
    order = [(method, what) for method, what in spawner.calls if what in (init, app["Id"])]
    waited = order.index(("wait", init))
    assert order.index(("made", app["Id"])) < waited < order.index(("start", app["Id"]))
    # her files, which did not exist when the app container was made, bound at its start
    lines = docker_client.containers.get(app["Id"]).exec_run(["cat", "/etc/passwd"]).output
    assert lines.startswith(b"alice:x:20001:20001:")
    host = app["HostConfig"]
    assert app["Config"]["User"] == "20001:20001" and host["GroupAdd"] == ["20001"]
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == 2**28 and host["CpuQuota"] == host["CpuPeriod"] // 2
    mounts = {m["Destination"]: m for m in app["Mounts"]}
    assert not mounts["/etc/passwd"]["RW"] and not mounts["/etc/group"]["RW"]
    assert [phase for phase, _ in spawner.heps_phases.marks] == ["user-init", "container"]


def test_a_refusal_removes_the_app_container_made_meanwhile_unstarted(
    spawners: Make, docker_client: docker.DockerClient
) -> None:
    spawner = spawners(MALLORY)
    with pytest.raises(SpawnRefused, match="uid: 500 is outside the allowed range"):
        run(spawner._start_after_user_init)
    made = containers_made(spawner)
    platform = spawner.local_settings.platform
    init, app = made[f"{platform}-init-mallory"], made[f"{platform}-mallory"]  # both were made
    assert ("start", app) not in spawner.calls
    for gone in (init, app):
        with pytest.raises(NotFound):
            docker_client.api.inspect_container(gone)


def test_spawns_at_once_make_one_netless_container_and_start_it_once_when_stopped(
    spawners: Make, docker_client: docker.DockerClient
) -> None:
    """Spawns at once look at PLATFORM-netless together; one of them makes it, and when
    it stopped (the engine restarted), one of them starts it again."""
    many = [spawners(ALICE) for _ in range(4)]
    name = f"{many[0].local_settings.platform}-netless"

    def at_once() -> set[str]:
        Meddled.heps_netless = None  # asyncio.run's loop is new each time; so is the lock
        return set(run(lambda: asyncio.gather(*(s._netless() for s in many))))

    def calls(method: str) -> list[str]:
        found = [what for s in many for m, what in s.calls if m == method and what == name]
        for s in many:
            s.calls.clear()
        return found

    assert at_once() == {f"container:{name}"}
    assert len(calls("create_container")) == 1
    docker_client.api.stop(name, timeout=0)
    assert at_once() == {f"container:{name}"}
    assert docker_client.api.inspect_container(name)["State"]["Running"]
    assert len(calls("start")) == 1
