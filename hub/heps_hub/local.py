"""The hub on one machine (`heps platform up`): the cluster's hub settings, with what
only a single Docker engine changes laid over them: local URLs, the SSO testbed's
endpoints, DockerSpawner in place of KubeSpawner, named volumes in place of the Lustre
and identity volumes, and the machine's size as the cap on every profile's limits.

`heps platform up` writes those local settings as `local.yaml` next to the overlay's
rendered hub-config files; nothing in the overlay is edited for it.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from heps_hub import values as hub_values

LABEL_PLATFORM = "heps.ihep.ac.cn/platform"
ENGINE_THREADS = 64
"""The most Docker calls the hub has in flight, and connections it keeps to the engine."""
LABEL_USER = "heps.ihep.ac.cn/user"
quantity = hub_values.quantity


@dataclass(frozen=True)
class Local:
    """What differs on one machine; written by `heps platform up`."""

    platform: str
    """Name of this platform: prefix of every container, volume and network, and the
    value of the heps.ihep.ac.cn/platform label on each (how `down` finds them)."""
    public_url: str
    authorize_url: str
    token_url: str
    userdata_url: str
    hub_connect_url: str
    proxy_api_url: str
    network: str
    policy_file: str
    """The site policy on the Docker host, bind-mounted into each user-init container."""
    home_volume: str
    data_volume: str
    cpus: float
    memory: int
    """The machine's size (bytes): profile limits above it are capped to it."""


def load(path: Path) -> Local:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise hub_values.ValuesError(f"{path}: cannot read: {exc}") from None
    names = {f.name for f in fields(Local)}
    if not isinstance(raw, dict) or set(raw) != names:
        raise hub_values.ValuesError(f"{path}: expected exactly the keys {sorted(names)}")
    return Local(**raw)


@dataclass(frozen=True)
class Offer:
    """One profile of the overlay's profile-list.yaml as offered on this machine."""

    slug: str
    display_name: str
    description: str
    image: str
    cpu: float
    cpu_asked: float
    memory: int
    memory_asked: int
    gpus: int
    default: bool

    @property
    def tag(self) -> str:
        name = self.image.split("@")[0]
        return name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"

    @property
    def digest(self) -> str:
        return self.image.split("@")[1] if "@" in self.image else ""


def offers(profiles: list[dict[str, Any]], local: Local) -> list[Offer]:
    """The profiles with their limits capped to the machine."""
    found = []
    for profile in profiles:
        override = profile.get("kubespawner_override") or {}
        cpu = quantity(override.get("cpu_limit", override.get("cpu_guarantee", 1)))
        memory = int(quantity(override.get("mem_limit", override.get("mem_guarantee", "1Gi"))))
        extra = override.get("extra_resource_limits") or {}
        found.append(
            Offer(
                slug=str(profile["slug"]),
                display_name=str(profile.get("display_name", profile["slug"])),
                description=str(profile.get("description", "")),
                image=str(override["image"]),
                cpu=min(cpu, local.cpus),
                cpu_asked=cpu,
                memory=min(memory, local.memory),
                memory_asked=memory,
                gpus=int(extra.get("nvidia.com/gpu", 0)),
                default=bool(profile.get("default", False)),
            )
        )
    return found


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def _amounts(offer: Offer) -> str:
    """What she gets, in her words."""
    cores = f"{offer.cpu:g} CPU core" + ("" if offer.cpu == 1 else "s")
    gpus = f"{offer.gpus} GPU" + ("s" if offer.gpus > 1 else "") if offer.gpus else "no GPU"
    return f"{cores}, {_gib(offer.memory)} memory, {gpus}"


def _operators(offer: Offer, here: bool) -> str:
    """Tags, digests and caps: for whoever runs the platform, folded away."""
    e = html.escape
    digest = e(offer.digest) if offer.digest else "not pinned by digest (built on this machine)"
    parts = [f"image tag <code>{e(offer.tag)}</code>, digest <code>{digest}</code>"]
    if offer.cpu < offer.cpu_asked or offer.memory < offer.memory_asked:
        asked = f"{offer.cpu_asked:g} CPU and {_gib(offer.memory_asked)}"
        parts.append(f"the profile asks {asked}; capped to this machine")
    if not here:
        parts.append(f"image not on this machine: heps platform up --apps {e(offer.slug)}")
    return "; ".join(parts)


def folders(
    policy: dict[str, Any], groups: list[str], name: str, home_base: str, data_base: str
) -> tuple[str, list[str]]:
    """(her home, her groups' data folders) as the user-init container will make them."""
    paths = policy.get("group_data") or {}
    shared = [f"{data_base}/{paths[g]}" for g in groups if isinstance(paths.get(g), str)]
    return f"{home_base}/{name}", sorted(shared)


def options_form(
    found: list[Offer], here: set[str], home: str = "", data: tuple[str, ...] = ()
) -> str:
    """The spawn page: one radio button per profile (the field is `profile` = slug) with
    what it is for and what she gets; operators' details folded away below each. Those
    not in `here` (image not on this machine) are shown, but disabled."""
    usable = [o.slug for o in found if o.slug in here]
    default = next((o.slug for o in found if o.default and o.slug in here), None)
    default = default or (usable[0] if usable else "")
    e = html.escape
    rows = ['<div class="heps-profiles">']
    for o in found:
        checked = " checked" if o.slug == default else ""
        if o.slug not in here:
            checked = " disabled"
        rows.append(
            f'<div class="heps-profile" data-slug="{e(o.slug)}" style="margin:0 0 1em">'
            f'<label style="display:block;font-weight:normal">'
            f'<input type="radio" name="profile" value="{e(o.slug)}"{checked}> '
            f'<strong>{e(o.display_name)}</strong><br><span class="heps-purpose">'
            f"{e(o.description)}</span><br>"
            f'<span class="heps-amounts">{e(_amounts(o))}</span>'
            + ("" if o.slug in here else " <em>(not available right now)</em>")
            + "</label>"
            '<details class="heps-operator" style="margin-left:1.5em"><summary>'
            "<small>Details for operators</small></summary>"
            f"<small>{_operators(o, o.slug in here)}</small></details></div>"
        )
    rows.append("</div>")
    if home:
        shared = ", ".join(f"<code>{e(d)}</code>" for d in data) or "none yet"
        rows.append(
            f'<p class="heps-folders">Every environment opens in your home folder '
            f"<code>{e(home)}</code>; the folder <code>data</code> in it holds your "
            f"groups' data: {shared}.</p>"
        )
    return "\n".join(rows)


def configure(c: Any, local: Local, spawn_limit: int) -> None:
    """Lay the local settings over what heps_hub.config.configure set from the overlay."""
    c.JupyterHub.spawner_class = "heps_hub.docker_spawner.HEPSDockerSpawner"
    c.JupyterHub.public_url = local.public_url
    c.JupyterHub.hub_connect_url = local.hub_connect_url
    c.ConfigurableHTTPProxy.api_url = local.proxy_api_url
    auth = c.IHEPSSOAuthenticator
    auth.authorize_url = local.authorize_url
    auth.token_url = local.token_url
    auth.userdata_url = local.userdata_url
    auth.oauth_callback_url = f"{local.public_url}/hub/oauth_callback"
    auth.logout_redirect_url = ""
    spawner = c.HEPSDockerSpawner
    spawner.local_settings = local
    spawner.prefix = local.platform
    spawner.network_name = local.network
    spawner.use_internal_ip = True
    spawner.remove = True  # the container goes with the server; the home stays
    # `heps platform up` puts every pinned image here, and the spawner's start checks it
    # (HEPSDockerSpawner._require_image, a refusal in plain words): no second look
    spawner.pull_policy = "skip"
    # spawns do not queue behind each other: two Docker calls in flight for each spawn
    # the hub lets run at once (a user-init `wait` holds its thread while the others'
    # calls, and the removals beside the spawns, go on); one connection per thread; at
    # most ENGINE_THREADS, however many spawns the values allow (0: no limit)
    threads = min(2 * spawn_limit, ENGINE_THREADS) if spawn_limit > 0 else ENGINE_THREADS
    spawner.engine_threads = threads
    spawner.client_kwargs = {"max_pool_size": threads}
    # ten JupyterLabs starting at once on a loaded laptop take longer than the default
    # 30 s to answer; a slow start is not a failed one
    spawner.http_timeout = 300
    spawner.cmd = ["jupyterhub-singleuser"]
    spawner.default_url = "/lab"
