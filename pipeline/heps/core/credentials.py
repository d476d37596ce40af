"""Registry credentials and the `Secret` type that keeps them out of every output.

Credentials never come from files in the repository: only from the environment, the
Docker config (through the engine's look-up, handed in), or the embedded registry's state
directory outside the repository.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from requests.auth import HTTPBasicAuth

from heps.core import log
from heps.core.bounded import read_text
from heps.core.errors import ConfigError
from heps.core.settings import EMBEDDED_REGISTRY, Settings, embedded_credentials_file


@dataclass(frozen=True)
class Secret:
    """A string that prints as *** and is masked in every log line once created."""

    value: str = field(repr=False)

    def __post_init__(self) -> None:
        log.register_secret(self.value)

    def __str__(self) -> str:
        return log.MASK


@dataclass(frozen=True)
class Credentials:
    username: str
    password: Secret
    source: str  # where they came from, for messages ("environment", "Docker config", ...)

    @property
    def basic_auth(self) -> HTTPBasicAuth:
        """For HTTP basic auth, as UTF-8 (as docker login sends them): requests would
        encode str as Latin-1, refusing or mangling a non-ASCII password."""
        return HTTPBasicAuth(self.username.encode(), self.password.value.encode())


def credentials(
    settings: Settings,
    docker_auth: Callable[[str], dict[str, str]],
    env: dict[str, str] | None = None,
) -> Credentials | None:
    """Registry credentials: environment, then Docker config (`docker_auth(host)`, the
    engine's lookup), then the embedded registry's."""
    env = dict(os.environ) if env is None else env
    user, password = env.get("HEPS_REGISTRY_USERNAME"), env.get("HEPS_REGISTRY_PASSWORD")
    if user and password:
        return Credentials(user, Secret(password), "HEPS_REGISTRY_USERNAME/PASSWORD")
    if bool(user) != bool(password):
        raise ConfigError(
            "environment: HEPS_REGISTRY_USERNAME and HEPS_REGISTRY_PASSWORD: only one is set; "
            "set both or neither"
        )
    host = settings.registry.host
    found = docker_auth(host)
    if found.get("username") and found.get("password"):
        return Credentials(found["username"], Secret(found["password"]), "Docker config")
    stored = embedded_credentials_file(settings.state_dir)
    if host == EMBEDDED_REGISTRY and stored.exists():
        return _stored_credentials(stored)
    return None


def _stored_credentials(path: Path) -> Credentials:
    """The embedded registry's credentials file: {"username": ..., "password": ...}."""
    try:
        data = json.loads(read_text(path, str(path), limit=64 * 1024))
    except ValueError:
        data = None
    fields = data if isinstance(data, dict) else {}
    user, password = fields.get("username"), fields.get("password")
    if not (isinstance(user, str) and user and isinstance(password, str) and password):
        raise ConfigError(
            f"{path}: not a credentials file (JSON with string username and password); "
            "fix it, or delete it and run `heps services up` to create a new one"
        )
    return Credentials(user, Secret(password), str(path))
