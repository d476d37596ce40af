"""The single-machine hub's own logic: profile limits capped to the machine, the spawn
page's fields, and the local settings file read strictly."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import pytest
import yaml

from heps_hub import local
from heps_hub.values import ValuesError
from tests.conftest import REPO_ROOT

MACHINE = local.Local(
    platform="p",
    public_url="http://127.0.0.1:8000",
    authorize_url="http://10.0.0.1:8010/auth",
    token_url="http://10.0.0.1:8010/token",
    userdata_url="http://10.0.0.1:8010/me",
    hub_connect_url="http://p-hub:8081",
    proxy_api_url="http://p-proxy:8001",
    network="p",
    policy_file="/state/policy.yaml",
    home_volume="p-home",
    data_volume="p-data",
    cpus=2.0,
    memory=8 * 2**30,
)
PROFILES = [
    {
        "slug": "ct",
        "display_name": "CT <3D>",
        "description": "FBP & SART",
        "kubespawner_override": {
            "image": "reg/heps/ct:1.0.0-gabc@sha256:1234",
            "cpu_limit": 4,
            "mem_limit": "16Gi",
            "extra_resource_limits": {"nvidia.com/gpu": 1},
        },
    },
    {
        "slug": "lab",
        "display_name": "JupyterLab",
        "default": True,
        "kubespawner_override": {
            "image": "reg/heps/lab:1.1.0",
            "cpu_limit": "500m",
            "mem_limit": "512Mi",
        },
    },
]


@pytest.mark.parametrize(
    ("text", "value"),
    [(4, 4.0), ("500m", 0.5), ("16Gi", 16 * 2**30), ("1G", 1e9), ("0.5", 0.5)],
)
def test_quantities(text: object, value: float) -> None:
    assert local.quantity(text) == value


def test_a_bad_quantity_is_named() -> None:
    with pytest.raises(ValuesError, match="not a Kubernetes quantity: '16 GB'"):
        local.quantity("16 GB")


def test_limits_above_the_machine_are_capped_and_the_rest_kept() -> None:
    ct, lab = local.offers(PROFILES, MACHINE)
    assert (ct.cpu, ct.cpu_asked, ct.memory, ct.memory_asked) == (2.0, 4.0, 8 * 2**30, 16 * 2**30)
    assert (ct.tag, ct.digest, ct.gpus) == ("1.0.0-gabc", "sha256:1234", 1)
    assert (lab.cpu, lab.memory, lab.tag, lab.digest) == (0.5, 512 * 2**20, "1.1.0", "")


def test_the_spawn_page_offers_each_profile_in_her_words_with_details_folded() -> None:
    home, data = local.folders(
        {"group_data": {"b1-users": "beamlines/b1", "b7-users": "beamlines/b7"}},
        ["heps-users", "b1-users"],
        "alice",
        "/home",
        "/data",
    )
    assert (home, data) == ("/home/alice", ["/data/beamlines/b1"])
    page = local.options_form(local.offers(PROFILES, MACHINE), {"ct", "lab"}, home, tuple(data))
    assert page.count('name="profile"') == 2
    assert 'value="lab" checked' in page  # the overlay's default
    assert "CT &lt;3D&gt;" in page and "FBP &amp; SART" in page  # escaped
    assert '<span class="heps-amounts">2 CPU cores, 8.0 GiB memory, 1 GPU</span>' in page
    assert '<span class="heps-amounts">0.5 CPU cores, 0.5 GiB memory, no GPU</span>' in page
    # tags, digests and caps only inside the folded operators' details
    pairs = [p.split("<details", 1) for p in page.split("</details>")[:-1]]
    scientist, operators = [p[0] for p in pairs], [p[1] for p in pairs]
    assert not any("digest" in text or "capped" in text for text in scientist)
    assert "digest <code>sha256:1234</code>" in operators[0]
    assert "the profile asks 4 CPU and 16.0 GiB; capped to this machine" in operators[0]
    assert "not pinned by digest (built on this machine)" in operators[1]
    assert "your home folder <code>/home/alice</code>" in page
    assert "groups' data: <code>/data/beamlines/b1</code>." in page


def test_a_profile_whose_image_is_absent_is_shown_disabled() -> None:
    page = local.options_form(local.offers(PROFILES, MACHINE), here={"ct"})
    assert 'value="lab" disabled' in page and 'value="ct" checked' in page
    assert page.count("(not available right now)") == 1
    assert "image not on this machine: heps platform up --apps lab" in page
    assert "heps-folders" not in page  # no identity, no folders to name


def test_local_settings_are_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump(asdict(MACHINE)))
    assert local.load(path) == MACHINE
    path.write_text(yaml.safe_dump({**asdict(MACHINE), "extra": 1}))
    with pytest.raises(ValuesError, match="expected exactly the keys"):
        local.load(path)
    assert replace(MACHINE, cpus=1.0) != MACHINE


def test_jupyterhub_loads_the_overlay_then_the_local_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jupyterhub.app import JupyterHub

    from tests.hub.test_hub_config import mounted_config

    mounted_config("testbed", tmp_path)
    (tmp_path / "local.yaml").write_text(yaml.safe_dump(asdict(MACHINE)))
    monkeypatch.setenv("HEPS_HUB_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("HEPS_HUB_LOCAL", str(tmp_path / "local.yaml"))
    app = JupyterHub()
    app.load_config_file(str(REPO_ROOT / "hub" / "jupyterhub_config.py"))
    c = app.config
    assert c.JupyterHub.spawner_class == "heps_hub.docker_spawner.HEPSDockerSpawner"
    assert c.JupyterHub.public_url == "http://127.0.0.1:8000"
    assert c.IHEPSSOAuthenticator.token_url == "http://10.0.0.1:8010/token"
    assert c.IHEPSSOAuthenticator.oauth_callback_url == "http://127.0.0.1:8000/hub/oauth_callback"
    assert c.IHEPSSOAuthenticator.allowed_groups == {"heps-users"}  # the overlay's, kept
    assert c.HEPSDockerSpawner.local_settings == MACHINE
    assert c.HEPSDockerSpawner.pull_policy == "skip"  # the spawner checks the image itself
    assert c.HEPSDockerSpawner.network_name == "p"
    # two Docker calls in flight for each spawn the overlay lets run at once (20)
    assert c.JupyterHub.concurrent_spawn_limit == 20
    assert c.HEPSDockerSpawner.engine_threads == 40
    assert c.HEPSDockerSpawner.client_kwargs == {"max_pool_size": 40}


@pytest.mark.parametrize(("spawn_limit", "threads"), [(1, 2), (20, 40), (500, 64), (0, 64)])
def test_the_engine_pool_follows_the_spawn_limit_within_a_bound(
    spawn_limit: int, threads: int
) -> None:
    """Two Docker calls in flight per spawn allowed at once, never more than
    ENGINE_THREADS (a limit of 500, or none, is not 1,000 threads and connections)."""
    from traitlets.config import Config

    c = Config()
    local.configure(c, MACHINE, spawn_limit)
    assert c.HEPSDockerSpawner.engine_threads == threads <= local.ENGINE_THREADS
    assert c.HEPSDockerSpawner.client_kwargs == {"max_pool_size": threads}


@pytest.mark.parametrize(
    ("labels", "network", "problem"),
    [
        ({local.LABEL_PLATFORM: "p"}, "none", ""),
        (None, "none", "not made by platform 'p'"),
        ({local.LABEL_PLATFORM: "other"}, "none", "not made by platform 'p'"),
        ({local.LABEL_PLATFORM: "p"}, "bridge", "has a network"),
        ({local.LABEL_PLATFORM: "p"}, "host", "has a network"),
    ],
)
def test_only_the_platforms_own_netless_container_lends_user_init_its_namespace(
    labels: dict[str, str] | None, network: str, problem: str
) -> None:
    """Every user-init joins PLATFORM-netless's network namespace: a container of that
    name that someone else made, or one with a network, would give them all its network."""
    from heps_hub.docker_spawner import netless_problem

    found = {"Config": {"Labels": labels}, "HostConfig": {"NetworkMode": network}}
    assert netless_problem(found, "p").startswith(problem)
    assert bool(netless_problem(found, "p")) == bool(problem)
