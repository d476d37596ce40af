"""What the cluster would get from an overlay, as files for the hub on one machine: the
hub-config ConfigMap (values.yaml, overlay.yaml, profile-list.yaml), the user-init
policy ConfigMap (policy.yaml), and every image the platform runs, as pinned.

The overlay is rendered by kustomize exactly as `heps reconcile` renders it, so the
hub here reads the very bytes the cluster's hub would read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from heps.cluster import manifests
from heps.core.errors import ConfigError
from heps.core.paths import overlay_dir
from heps.core.settings import Settings
from heps_hub import values as hub_values


@dataclass(frozen=True)
class Rendered:
    values: hub_values.HubValues
    """The hub's reading of the files written (heps_hub.values.load)."""
    hub_image: str

    @property
    def images(self) -> dict[str, str]:
        """What runs -> its pinned image: the hub, user-init and each profile's app."""
        found = {"heps-hub": self.hub_image, "user-init": self.values.spawner.user_init.image}
        for profile in self.values.profiles:
            found[str(profile.get("slug"))] = str(
                (profile.get("kubespawner_override") or {}).get("image")
            )
        return found


def _config_map(
    rendered: list[manifests.Manifest], deployment: manifests.Manifest, volume: str
) -> dict[str, str]:
    pod = deployment.obj["spec"]["template"]["spec"]
    try:
        source = next(v for v in pod["volumes"] if v["name"] == volume)["configMap"]["name"]
        found = next(m for m in rendered if m.kind == "ConfigMap" and m.name == source)
    except (KeyError, StopIteration):
        raise ConfigError(
            deployment.problem(f"volumes.{volume}", "no ConfigMap behind it; keep the base's")
        ) from None
    return dict(found.obj.get("data") or {})


_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")


def render(settings: Settings, overlay: str, config: Path, policy: Path) -> Rendered:
    """Write the hub's config files into `config` and the site policy to `policy`."""
    rendered = manifests.render(settings.repo, overlay_dir(settings.repo, settings, overlay))
    hub = next((m for m in rendered if m.kind == "Deployment" and m.name == "hub"), None)
    if hub is None:
        raise ConfigError(f"overlay {overlay}: renders no Deployment hub; keep the base's hub/")
    files = _config_map(rendered, hub, "config")
    policies = [
        m
        for m in rendered  # the generator's name, with or without kustomize's hash suffix
        if m.kind == "ConfigMap" and m.name.rsplit("-", 1)[0] in ("user-init", "user-init-policy")
    ]
    if not policies or "policy.yaml" not in (policies[0].obj.get("data") or {}):
        raise ConfigError(f"overlay {overlay}: no user-init-policy ConfigMap with policy.yaml")
    for name in files:  # the keys become file names: Kubernetes' key grammar, no paths
        if not _KEY.fullmatch(name) or name in (".", ".."):
            raise ConfigError(
                f"overlay {overlay}: hub-config: data key '{name}' is not a ConfigMap key "
                "(letters, digits, '-', '_', '.'); rename it"
            )
    config.mkdir(parents=True, exist_ok=True)
    for name in sorted({*files, *(p.name for p in config.iterdir())}):
        if name in files:
            write_if_changed(config / name, files[name])
        else:
            (config / name).unlink()
    write_if_changed(policy, policies[0].obj["data"]["policy.yaml"])
    try:
        values = hub_values.load(config)
    except hub_values.ValuesError as exc:
        raise ConfigError(f"overlay {overlay}: hub-config: {exc}") from None
    return Rendered(values, str(hub.obj["spec"]["template"]["spec"]["containers"][0]["image"]))


def write_if_changed(path: Path, text: str) -> bool:
    """Replace `path` atomically (the hub reads it while running) when its text differs."""
    if path.exists() and path.read_text() == text:
        return False
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.chmod(0o644)
    partial.replace(path)
    return True
