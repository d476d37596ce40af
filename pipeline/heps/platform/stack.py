"""`heps platform up|down|status`: the platform of an overlay on this machine.

`up` renders the overlay as the cluster gets it, makes every pinned image present,
then starts (or keeps, when unchanged) the SSO testbed, configurable-http-proxy on
127.0.0.1:PORT and the hub with DockerSpawner on a network of their own. The hub
restarts only when its image, settings or secrets change; a new profile-list.yaml
(a promotion) is offered at the next spawn page without a restart, since the spawner
re-reads it, and the new image is already here because `up` put it here.
`down` removes exactly what carries the platform's label, and its state folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from heps.core.errors import ConfigError, HepsError
from heps.core.paths import locked
from heps.core.settings import Settings
from heps.platform import images, overlay, provider, users
from heps.systems.engine import PlatformEngine, Service
from heps_hub.local import Local

CLIENT_ID = "heps-hub"
HUB_PORT, PROXY_PORT, PROXY_API_PORT = 8081, 8000, 8001
CONFIG_DIR, LOCAL_DIR = "/etc/jupyterhub/heps", "/etc/jupyterhub/heps-local"
DOCKER_SOCKET = "/var/run/docker.sock"
EXAMPLE_USERS = Path("hub") / "sso-testbed" / "users.example.yaml"


@dataclass(frozen=True)
class Options:
    name: str = "heps-platform"
    overlay: str = "testbed"
    users: Path | None = None
    port: int = 8000
    sso_port: int = 8010
    apps: tuple[str, ...] | None = None
    """Profiles whose images are built here when missing (None: all); the others are
    offered only when their image is here already (pulled or built earlier)."""

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def state_dir(cfg: Settings, name: str) -> Path:
    return cfg.state_dir / "platform" / name


def _lock(cfg: Settings, name: str) -> AbstractContextManager[None]:
    """One `up` or `down` of a platform at a time: a second one waits, then finds the
    first one's work. Beside the state folder, which `down` removes."""
    folder = cfg.state_dir / "platform"
    folder.mkdir(parents=True, exist_ok=True)
    return locked(folder / f".{name}.lock")


def _secrets(folder: Path) -> dict[str, str]:
    """The platform's secrets, made once (under the platform's lock) and written whole
    by rename, so a reader never sees a partial file; kept across `up`s so sessions
    survive."""
    path = folder / "secrets.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    made = {k: secrets.token_hex(32) for k in ("client", "crypt", "cookie", "proxy")}
    partial = folder / f".secrets.{os.getpid()}.partial"
    partial.touch(mode=0o600)
    partial.write_text(json.dumps(made))
    partial.replace(path)
    return made


def _digest(*paths: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()[:16]


def _services(opts: Options, state: Path, hub_image: str, hidden: dict[str, str]) -> list[Service]:
    hub_host, network = f"{opts.name}-hub", opts.name
    config = state / "config"
    proxy = Service(
        name=f"{opts.name}-proxy",
        image=hub_image,  # the same image runs the proxy, as in the cluster
        command=[
            "configurable-http-proxy",
            "--ip=0.0.0.0",
            f"--port={PROXY_PORT}",
            "--api-ip=0.0.0.0",
            f"--api-port={PROXY_API_PORT}",
            f"--default-target=http://{hub_host}:{HUB_PORT}",
            f"--error-target=http://{hub_host}:{HUB_PORT}/hub/error",
        ],
        environment={"CONFIGPROXY_AUTH_TOKEN": hidden["proxy"]},
        network=network,
        ports={f"{PROXY_PORT}/tcp": ("127.0.0.1", opts.port)},
        user="65534",
    )
    hub = Service(
        name=hub_host,
        image=hub_image,
        command=None,
        environment={
            "HEPS_HUB_CONFIG_DIR": CONFIG_DIR,
            "HEPS_HUB_LOCAL": f"{LOCAL_DIR}/local.yaml",
            # a changed setting restarts the hub; profile-list.yaml is re-read per spawn
            "HEPS_HUB_SETTINGS_DIGEST": _digest(
                config / "values.yaml", config / "overlay.yaml", state / "local" / "local.yaml"
            ),
            "OAUTH_CLIENT_ID": CLIENT_ID,
            "OAUTH_CLIENT_SECRET": hidden["client"],
            "JUPYTERHUB_CRYPT_KEY": hidden["crypt"],
            "JPY_COOKIE_SECRET": hidden["cookie"],
            "CONFIGPROXY_AUTH_TOKEN": hidden["proxy"],
        },
        network=network,
        binds={
            str(config): CONFIG_DIR,
            str(state / "local"): LOCAL_DIR,
            DOCKER_SOCKET: DOCKER_SOCKET,  # DockerSpawner talks to the engine
        },
        volumes={f"{opts.name}-hub-db": "/srv/jupyterhub"},
        group_add=[str(os.stat(DOCKER_SOCKET).st_gid)],
    )
    return [proxy, hub]


def _local(opts: Options, state: Path, gateway: str, size: tuple[float, int]) -> Local:
    issuer = f"http://{gateway}:{opts.sso_port}"
    return Local(
        platform=opts.name,
        public_url=opts.public_url,
        authorize_url=f"{issuer}/auth",
        token_url=f"{issuer}/token",
        userdata_url=f"{issuer}/me",
        hub_connect_url=f"http://{opts.name}-hub:{HUB_PORT}",
        proxy_api_url=f"http://{opts.name}-proxy:{PROXY_API_PORT}",
        network=opts.name,
        policy_file=str(state / "local" / "policy.yaml"),
        home_volume=f"{opts.name}-home",
        data_volume=f"{opts.name}-data",
        cpus=size[0],
        memory=size[1],
    )


def up(cfg: Settings, opts: Options) -> list[str]:
    """Start or update the platform; a concurrent `up` or `down` of it waits its turn."""
    accounts = users.load(opts.users or cfg.repo / EXAMPLE_USERS)  # checked before any change
    with _lock(cfg, opts.name):
        return _up(cfg, opts, accounts)


def _up(cfg: Settings, opts: Options, accounts: dict[str, dict[str, Any]]) -> list[str]:
    provider.install(cfg.repo)
    state = state_dir(cfg, opts.name)
    (state / "local").mkdir(parents=True, exist_ok=True)
    docker = PlatformEngine(opts.name)
    rendered = overlay.render(cfg, opts.overlay, state / "config", state / "local" / "policy.yaml")
    present = images.ensure(cfg, docker, _wanted(rendered.images, opts.apps))
    gateway = docker.network(opts.name)
    hidden = _secrets(state)
    local = _local(opts, state, gateway, docker.size())
    overlay.write_if_changed(state / "local" / "local.yaml", yaml.safe_dump(asdict(local)))
    callback = f"{opts.public_url}/hub/oauth_callback"
    sso = provider.Provider(cfg.repo, state, f"{gateway}:{opts.sso_port}", CLIENT_ID, callback)
    lines = [f"image {p.role}: {p.pinned} ({p.how})" for p in present]
    lines.append(f"SSO testbed: {sso.issuer} ({provider.start(sso, accounts, hidden['client'])})")
    for volume in ("hub-db", "home", "data"):
        docker.volume(f"{opts.name}-{volume}")
    for service in _services(opts, state, rendered.hub_image, hidden):
        lines.append(f"{service.name}: {docker.service(service)}")
    _wait_for_hub(docker, opts)
    lines.append(f"open {opts.public_url} and log in ({len(accounts)} accounts)")
    return lines


def _wanted(pinned: dict[str, str], apps: tuple[str, ...] | None) -> dict[str, str]:
    platform = {"heps-hub", "user-init"}
    unknown = sorted(set(apps or ()) - set(pinned) - platform)
    if unknown:
        known = ", ".join(sorted(set(pinned) - platform))
        raise ConfigError(f"--apps: no profile {', '.join(unknown)} in the overlay; known: {known}")
    return {k: v for k, v in pinned.items() if apps is None or k in platform or k in apps}


def _wait_for_hub(docker: PlatformEngine, opts: Options) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if provider.answers(f"{opts.public_url}/hub/health", timeout=3):
            return
        time.sleep(0.5)
    tail = docker.logs(f"{opts.name}-hub").strip().splitlines()[-1:] or ["no output"]
    raise HepsError(f"the hub did not answer at {opts.public_url} within 120 s: {tail[0]}")


def down(cfg: Settings, opts: Options) -> list[str]:
    """Remove all of it: the hub first (it makes user containers), then everything
    labelled as this platform's, again until nothing is left (a spawn under way)."""
    with _lock(cfg, opts.name):
        state = state_dir(cfg, opts.name)
        sso = provider.Provider(cfg.repo, state, "", CLIENT_ID, "")
        lines = ["SSO testbed: stopped"] if provider.stop(sso) else []
        engine = PlatformEngine(opts.name)
        lines += [f"removed {what}" for what in engine.remove_all(first=f"{opts.name}-hub")]
        if state.exists():
            shutil.rmtree(state)
            lines.append(f"removed {state}")
        return lines or ["nothing to remove"]


def status(cfg: Settings, opts: Options) -> list[str]:
    state = state_dir(cfg, opts.name)
    found = PlatformEngine(opts.name).running()
    if not found and not (state / "provider.pid").exists():
        return [f"platform {opts.name}: not running (heps platform up)"]
    local_file = state / "local" / "local.yaml"
    lines = [f"platform {opts.name}"]
    if local_file.exists():
        local = yaml.safe_load(local_file.read_text())
        issuer = local["authorize_url"].rsplit("/", 1)[0]
        sso = provider.Provider(cfg.repo, state, issuer.removeprefix("http://"), CLIENT_ID, "")
        alive = "running" if provider.running(sso) else "stopped"
        lines = [f"platform {opts.name}: {local['public_url']}"]
        lines.append(f"SSO testbed: {issuer} ({alive})")
    for r in found:
        lines.append(f"{r.kind} {r.name}" + (f": {r.status} {r.detail}" if r.status else ""))
    return lines
