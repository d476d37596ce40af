"""The platform on one machine, for real: the images built once per session by the
pipeline into the session's registry, a copy of this working tree as the repository
`heps platform up` reads, and the platform itself on free ports under a name of its
own, started and removed by the tests.

The images go to the namespace the overlays name (`heps`), as a site's do: promotion
pins an image wherever an overlay names its NAMESPACE/NAME, on any registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import yaml

from heps.core.credentials import Credentials, Secret
from heps.systems.services import RegistryService
from tests import image_cache
from tests.conftest import HOST_CA_BUNDLE, REPO_ROOT, free_port

APPS = ("debian-base", "heps-user-init", "jupyterlab-base", "ct-reconstruction", "heps-hub")
CHROMIUM = "/usr/bin/chromium"
# a fourth account beside the bundled example's: in the platform's group, so the hub
# lets her in, but with a uid the site policy refuses, so the user-init container does
MALLORY = {
    "username": "mallory",
    "password": "mallory-testbed",
    "uidNumber": 500,
    "gidNumber": 20001,
    "email": "mallory@ihep.ac.cn",
    "email_verified": True,
    "groups": [{"name": "heps-users", "gid": 20001}],
}


@dataclass
class Site:
    """A repository copy and the environment every `heps` call of the tests gets."""

    repo: Path
    env: dict[str, str]
    build_log: str

    def heps(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "heps.cli", "--repo", str(self.repo), *args]
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout
        )


def _copy_working_tree(into: Path) -> None:
    """The tracked files as they are now (uncommitted edits too), as a fresh repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=into, check=True)
    subprocess.run(["git", "add", "-A"], cwd=into, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=into, check=True)


@pytest.fixture(scope="session")
def site(
    registry: RegistryService,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Site:
    """The platform's images pushed once per session into the session's registry by
    `heps run`: those whose fingerprint this machine built before from the cache
    (tests/image_cache.py, skipped by the run as unchanged), the others built for real."""
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium missing: scripts/bootstrap.sh installs Debian's package")
    tmp = tmp_path_factory.mktemp("platform")
    repo = tmp / "repo"
    _copy_working_tree(repo)
    # The host's CA bundle from the operator, as `make run` passes it (pip needs it here).
    env = dict(os.environ, HEPS_CA_BUNDLE=HOST_CA_BUNDLE)
    env.update(
        HEPS_REGISTRY=registry.address,
        HEPS_NAMESPACE="heps",
        HEPS_REGISTRY_USERNAME=registry.username,
        HEPS_REGISTRY_PASSWORD=registry.password,
        HEPS_STATE_DIR=str(tmp / "state"),
        DOCKER_CONFIG=str(tmp / "docker-config"),
    )
    built = Site(repo, env, "")
    planned = built.heps("plan", "--json", *APPS)
    assert planned.returncode == 0, planned.stderr[-3000:]
    plan = [image_cache.Planned.of(e) for e in json.loads(planned.stdout)]
    creds = Credentials(registry.username, Secret(registry.password), "test registry")
    image_cache.seed(docker_client, creds, plan)
    done = built.heps("run", *APPS)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    image_cache.keep(docker_client, plan)
    return Site(repo, env, done.stdout + done.stderr)


@dataclass
class Platform:
    site: Site
    name: str
    url: str
    sso_port: int
    users: Path
    up_output: str = ""

    def up(self) -> subprocess.CompletedProcess[str]:
        port = self.url.rsplit(":", 1)[1]
        return self.site.heps(
            "platform", "up", "--name", self.name, "--port", port,
            "--sso-port", str(self.sso_port), "--users", str(self.users),
            "--apps", "ct-reconstruction",
        )  # fmt: skip


@pytest.fixture(scope="module")
def platform(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    users = tmp_path_factory.mktemp("users") / "users.yaml"
    example = yaml.safe_load((site.repo / "hub/sso-testbed/users.example.yaml").read_text())
    users.write_text(yaml.safe_dump([*example, MALLORY]))
    name = f"heps-pt-{uuid.uuid4().hex[:8]}"
    found = Platform(site, name, f"http://127.0.0.1:{free_port()}", free_port(), users)
    done = found.up()
    try:
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        found.up_output = done.stdout
        yield found
    finally:
        site.heps("platform", "down", "--name", name)
