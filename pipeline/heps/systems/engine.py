"""The Docker engine connection: local socket or DOCKER_HOST, checked once up front."""

from __future__ import annotations

import os

import docker
import docker.errors
import requests

from heps.core.errors import ConfigError


def connect() -> docker.DockerClient:
    """A client for the engine at DOCKER_HOST (or the local socket) that answered a ping."""
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(version="auto", timeout=600)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise ConfigError(
            f"Docker engine at {where}: not reachable ({reason}); start it with "
            "`heps services up` (root) or point DOCKER_HOST at a running engine"
        ) from None
    return client
