"""The embedded registry's two accounts, against the real distribution registry with its
token auth and our token service: the push account pushes, the pull-only account pulls,
and the registry itself refuses the pull-only account a push (through the Docker engine
and through the registry's HTTP API alike)."""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from bench.run import put_layerless_image
from heps.core.credentials import Credentials, Secret
from heps.core.settings import RegistrySettings
from heps.systems import services
from heps.systems.registry import Registry
from heps.systems.services import RegistryService
from tests.conftest import free_port, remove_references

PULL_PASSWORD = "pull-'\"\\-ü-" + secrets.token_urlsafe(8)


@pytest.fixture(scope="module")
def two_accounts(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient
) -> Iterator[RegistryService]:
    service = RegistryService(
        tmp_path_factory.mktemp("two-accounts"),
        f"127.0.0.1:{free_port()}",
        "pusher",
        secrets.token_urlsafe(18),
        "puller",
        PULL_PASSWORD,
        f"127.0.0.1:{free_port()}",
    )
    token = service.start_token_service()
    registry = service.start()
    yield service
    for process in (registry, token):
        process.terminate()
        process.wait(timeout=10)
    remove_references(docker_client, service.address)


def auth(user: str, password: str) -> dict[str, str]:
    return {"username": user, "password": password}


def test_the_registry_refuses_a_push_with_the_pull_only_account(
    two_accounts: RegistryService, docker_client: docker.DockerClient, busybox: str
) -> None:
    s = two_accounts
    assert s.pull_username and s.pull_password
    repository = f"{s.address}/t{uuid.uuid4().hex[:8]}/base"
    image = docker_client.images.get(busybox)
    image.tag(repository, "1")
    try:
        pushed = docker_client.api.push(
            repository, "1", auth_config=auth(s.username, s.password), stream=True, decode=True
        )
        assert not [line for line in pushed if "error" in line]
        image.tag(repository, "2")
        refused = docker_client.api.push(
            repository,
            "2",
            auth_config=auth(s.pull_username, s.pull_password),
            stream=True,
            decode=True,
        )
        errors = [line["error"] for line in refused if "error" in line]
        assert errors and ("denied" in errors[0] or "unauthorized" in errors[0]), errors
        docker_client.images.remove(f"{repository}:1")
        docker_client.api.pull(repository, "1", auth_config=auth(s.pull_username, s.pull_password))
        assert docker_client.images.get(f"{repository}:1").id == image.id
    finally:
        for tag in ("1", "2"):
            if docker_client.images.list(name=f"{repository}:{tag}"):
                docker_client.images.remove(f"{repository}:{tag}")
    settings = RegistrySettings(host=s.address, namespace=repository.split("/")[1])
    puller = Credentials(s.pull_username, Secret(s.pull_password), "test")
    # heps reads the registry with the pull-only account through the same token flow
    reader = Registry(settings, puller)
    assert reader.digest("base", "1") is not None
    assert reader.digest("base", "2") is None
    reader._tokens = dict.fromkeys(reader._tokens, "expired")  # as after a long build
    assert reader.digest("base", "1") is not None  # a fresh token, not a 401


def test_the_token_grants_the_pull_account_no_push_and_the_registry_enforces_it(
    two_accounts: RegistryService,
) -> None:
    s = two_accounts
    assert s.pull_username and s.pull_password
    name = f"t{uuid.uuid4().hex[:8]}/app"
    upload = f"http://{s.address}/v2/{name}/blobs/uploads/"
    challenge = requests.post(upload, timeout=10)
    assert challenge.status_code == 401
    assert f'realm="http://{s.token_address}/token"' in challenge.headers["WWW-Authenticate"]
    scope = {"service": "heps-registry", "scope": f"repository:{name}:pull,push"}

    def token(user: str, password: str) -> str:
        answer = requests.get(
            f"http://{s.token_address}/token",
            params=scope,
            auth=(user.encode(), password.encode()),
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        value: str = answer.json()["token"]
        claims = json.loads(base64.urlsafe_b64decode(value.split(".")[1] + "=="))
        assert claims["sub"] == user
        return value

    pull_token = token(s.pull_username, s.pull_password)
    refused = requests.post(upload, headers={"Authorization": f"Bearer {pull_token}"}, timeout=10)
    assert refused.status_code in (401, 403)  # the registry, not the token service, refuses
    assert "insufficient_scope" in refused.headers.get("WWW-Authenticate", "")
    push_token = token(s.username, s.password)
    started = requests.post(upload, headers={"Authorization": f"Bearer {push_token}"}, timeout=10)
    assert started.status_code == 202
    wrong = requests.get(
        f"http://{s.token_address}/token", params=scope, auth=(s.pull_username, "x"), timeout=10
    )
    assert wrong.status_code == 401


def test_the_embedded_registry_has_a_pull_only_account_beside_the_push_account(
    tmp_path: Path,
) -> None:
    from heps.core import settings

    (tmp_path / "app-recipes").mkdir()
    cfg = settings.load(tmp_path, env={"HEPS_STATE_DIR": str(tmp_path / "state")})
    service = services.embedded_registry(cfg)
    again = services.embedded_registry(cfg)
    assert (service.username, service.pull_username) == ("heps", "heps-pull")
    assert service.password != service.pull_password
    assert (again.password, again.pull_password) == (service.password, service.pull_password)
    folder = settings.embedded_credentials_file(cfg.state_dir).parent
    for name in ("credentials.json", services.PULL_CREDENTIALS):
        assert (folder / name).stat().st_mode & 0o777 == 0o600
    assert "token: {realm: 'http://127.0.0.1:5001/token'" in service.config()


def test_a_look_ahead_on_a_token_registry_asks_one_token_per_batch(
    two_accounts: RegistryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """60 look-ups with the pull-only account: three tokens (the check's, 50 repositories,
    10), not 61; an image pushed with the push account is found through the shared one."""
    s = two_accounts
    assert s.pull_username and s.pull_password
    namespace = f"t{uuid.uuid4().hex[:8]}"
    scope = {"service": "heps-registry", "scope": f"repository:{namespace}/app-007:pull,push"}
    push_token = requests.get(
        f"http://{s.token_address}/token",
        params=scope,
        auth=(s.username.encode(), s.password.encode()),
        timeout=10,
    ).json()["token"]
    pusher = requests.Session()
    pusher.headers["Authorization"] = f"Bearer {push_token}"
    put_layerless_image(pusher, f"http://{s.address}/v2/{namespace}/app-007", "1.0", {})
    asked: list[int] = []
    token = Registry._token
    monkeypatch.setattr(
        Registry,
        "_token",
        lambda self, c, wanted: asked.append(len(wanted)) or token(self, c, wanted),
    )
    reader = Registry(
        RegistrySettings(host=s.address, namespace=namespace),
        Credentials(s.pull_username, Secret(s.pull_password), "test"),
    )
    names = [f"app-{i:03d}" for i in range(60)]
    reader.look_ahead((name, "1.0") for name in names)
    reader.check()
    found = {name: reader.image(name, "1.0") for name in names}
    assert [name for name, image in found.items() if image is not None] == ["app-007"]
    assert asked == [0, 50, 10]
