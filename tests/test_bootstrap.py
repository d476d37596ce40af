"""scripts/bootstrap.sh on a minimal Debian 12: the debian-base image this repository
bootstraps (debootstrap minbase), which has neither python3 nor python3-venv nor make."""

from __future__ import annotations

import docker
import pytest

from tests.conftest import REPO_ROOT, BundledBuild

SCRIPT = "/src/scripts/bootstrap.sh"
# Stand-ins for the engine, registry, browser...: this test is about what the bootstrap
# installs for Python, not about installing Docker inside a container.
STUBS = (
    "for b in dockerd docker-registry debootstrap busybox git configurable-http-proxy chromium;"
    ' do printf "#!/bin/sh\\n" > /usr/local/bin/$b; chmod +x /usr/local/bin/$b; done; '
)


def in_minimal_debian(client: docker.DockerClient, image: str, script: str) -> tuple[int, str]:
    container = client.containers.run(
        image,
        ["bash", "-c", script],
        volumes={str(REPO_ROOT / "scripts"): {"bind": "/src/scripts", "mode": "ro"}},
        detach=True,
    )
    try:
        code = container.wait(timeout=600)["StatusCode"]
        return code, container.logs().decode()
    finally:
        container.remove(force=True)


@pytest.fixture
def minimal(bundled_build: BundledBuild) -> str:
    entry = bundled_build.entries.get("debian-base")
    if entry is None or entry["status"] == "failed":
        pytest.skip(f"debian-base was not built: {bundled_build.log[-300:]}")
    return str(entry["references"][0])


def test_it_names_every_missing_package(docker_client: docker.DockerClient, minimal: str) -> None:
    code, out = in_minimal_debian(docker_client, minimal, f"bash {SCRIPT} --check")
    assert code == 0, out
    (line,) = out.splitlines()
    missing = line.removeprefix("bootstrap: missing: ").split()
    assert {"python3", "python3-venv", "make", "docker.io", "git"} <= set(missing), line


def test_what_it_could_not_install_is_one_line(
    docker_client: docker.DockerClient, minimal: str
) -> None:
    unreachable = 'echo "deb http://127.0.0.1:9/debian bookworm main" > /etc/apt/sources.list; '
    code, out = in_minimal_debian(docker_client, minimal, unreachable + f"bash {SCRIPT}")
    assert code == 2, out
    lines = out.splitlines()
    assert lines[0].startswith("bootstrap: installing ")
    (refusal,) = lines[1:]
    assert refusal.startswith("bootstrap: could not install ") and "python3-venv" in refusal


@pytest.mark.slow
def test_it_installs_python_with_venv_from_the_debian_mirror(
    docker_client: docker.DockerClient, minimal: str
) -> None:
    script = STUBS + f"bash {SCRIPT} --system && bash {SCRIPT} --check && python3 -m venv /tmp/v"
    code, out = in_minimal_debian(docker_client, minimal, script)
    assert code == 0, out
    assert "bootstrap: installing make python3 python3-venv" in out
    assert "bootstrap: missing: nothing" in out
