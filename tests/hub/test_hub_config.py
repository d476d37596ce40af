"""The hub's configuration, rendered from each overlay and loaded by JupyterHub's own
config loader, as the hub Deployment mounts and runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from heps.cluster import manifests
from heps.core import settings
from heps.images import recipes
from heps_hub import values as hub_values
from heps_hub.auth import IHEPSSOAuthenticator
from tests.conftest import REPO_ROOT

OVERLAYS = sorted(p.name for p in (REPO_ROOT / "k8s-overlays" / "overlays").iterdir())


def mounted_config(overlay: str, into: Path) -> dict[str, str]:
    """The hub-config ConfigMap of the rendered overlay, written where the hub mounts it;
    also the scheduler's config, for cross-checks."""
    rendered = manifests.render(REPO_ROOT, REPO_ROOT / "k8s-overlays" / "overlays" / overlay)
    hub = next(m for m in rendered if m.ref == "Deployment heps/hub")
    volume = next(
        v for v in hub.obj["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"
    )
    config_map = next(
        m for m in rendered if m.kind == "ConfigMap" and m.name == volume["configMap"]["name"]
    )
    for key, text in config_map.obj["data"].items():
        (into / key).write_text(text)
    scheduler = next(m for m in rendered if m.name.startswith("scheduler-config"))
    return {"scheduler": scheduler.obj["data"]["config.yaml"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_jupyterhub_loads_the_hub_config_and_offers_the_recipes(
    overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyterhub.app import JupyterHub

    extra = mounted_config(overlay, tmp_path)
    monkeypatch.setenv("HEPS_HUB_CONFIG_DIR", str(tmp_path))
    app = JupyterHub()
    app.load_config_file(str(REPO_ROOT / "hub" / "jupyterhub_config.py"))
    c = app.config

    assert c.JupyterHub.authenticator_class == "heps_hub.auth.IHEPSSOAuthenticator"
    assert c.JupyterHub.spawner_class == "kubespawner.KubeSpawner"
    assert c.ConfigurableHTTPProxy.should_start is False
    assert c.JupyterHub.public_url.startswith("https://jupyter") and "heps.ihep.ac.cn" in (
        c.JupyterHub.public_url
    )
    assert "schedulerName: heps-scheduler" in extra["scheduler"]
    assert c.KubeSpawner.scheduler_name == "heps-scheduler"
    assert c.KubeSpawner.namespace == "heps"
    # every setting is one these classes have: an unknown name is ignored, not refused
    from jupyterhub.proxy import ConfigurableHTTPProxy
    from jupyterhub.spawner import Spawner
    from kubespawner import KubeSpawner

    classes = (JupyterHub, KubeSpawner, Spawner, ConfigurableHTTPProxy, IHEPSSOAuthenticator)
    for cls in classes:
        assert set(c[cls.__name__]) <= set(cls.class_trait_names(config=True)), cls.__name__

    cfg = settings.load(REPO_ROOT, env={"HEPS_CA_BUNDLE": ""})
    offered = {r.name: r for r in recipes.discover(cfg) if r.profile is not None}
    profiles = c.KubeSpawner.profile_list
    assert sorted(p["slug"] for p in profiles) == sorted(offered)
    for profile in profiles:
        recipe = offered[profile["slug"]]
        assert recipe.profile is not None
        assert profile["display_name"] == recipe.profile.display_name
        override = profile["kubespawner_override"]
        assert override["image"].split("@")[0].endswith(f"/heps/{recipe.name}:{recipe.version}")
        assert override["mem_limit"] == recipe.profile.memory
    assert [p["slug"] for p in profiles if p.get("default")] == ["jupyterlab-base"]

    auth = IHEPSSOAuthenticator(config=c)
    assert auth.authorize_url == "https://login.ihep.ac.cn/oauth2/authorize"
    assert auth.oauth_callback_url.endswith("/hub/oauth_callback")
    assert auth.allowed_groups == {"heps-users"} and auth.manage_groups and auth.enable_auth_state
    assert auth.spawner_values.user_init.image.startswith(
        "registry.heps.ihep.ac.cn/heps/heps-user-init:"
    )
    assert auth.client_secret == ""  # only ever from OAUTH_CLIENT_SECRET (a Secret)


VALID = {
    "hub": "{public_url: https://x}",
    "oauth": "{authorize_url: a, token_url: t, userdata_url: u, callback_url: c}",
    "spawner": "{namespace: heps, scheduler_name: s, user_init: {image: i}}",
}


@pytest.mark.parametrize(
    ("section", "text", "message"),
    [
        (
            "oauth",
            VALID["oauth"].replace("}", ", colour: red}"),
            r"oauth: unknown keys \['colour'\]",
        ),
        ("spawner", VALID["spawner"].replace("{image: i}", "{}"), r"spawner.user_init: .*'image'"),
        ("hub", "{}", r"hub.public_url: missing; the URL users open"),
    ],
)
def test_missing_or_mistyped_values_name_the_file_and_key(
    tmp_path: Path, section: str, text: str, message: str
) -> None:
    values = {**VALID, section: text}
    (tmp_path / "values.yaml").write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    with pytest.raises(hub_values.ValuesError, match=message):
        hub_values.load(tmp_path)
    (tmp_path / "values.yaml").write_text("".join(f"{k}: {v}\n" for k, v in VALID.items()))
    assert hub_values.load(tmp_path).spawner.user_init.image == "i"
