"""Where credentials come from, and that they stay out of the repository and the output."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from heps.core import credentials, log, settings
from heps.core.errors import ConfigError
from heps.systems import engine, services


def cfg(tmp_path: Path, host: str = "registry.example:443") -> settings.Settings:
    (tmp_path / "app-recipes").mkdir(exist_ok=True)
    return settings.load(tmp_path, registry=host, env={"HEPS_STATE_DIR": str(tmp_path / "state")})


def test_environment_wins_and_the_password_is_masked(tmp_path: Path) -> None:
    creds = credentials.credentials(
        cfg(tmp_path),
        engine.config_auth,
        env={"HEPS_REGISTRY_USERNAME": "ci", "HEPS_REGISTRY_PASSWORD": "s3cr3t-env-pw"},
    )
    assert creds is not None and creds.username == "ci"
    assert creds.password.value == "s3cr3t-env-pw"
    assert "s3cr3t-env-pw" not in repr(creds) and str(creds.password) == "***"
    assert log.redact("login with s3cr3t-env-pw failed") == "login with *** failed"


def test_half_set_environment_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only one is set; set both or neither"):
        credentials.credentials(
            cfg(tmp_path), engine.config_auth, env={"HEPS_REGISTRY_USERNAME": "ci"}
        )


def test_docker_config_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    auth = base64.b64encode(b"robot:docker-config-pw").decode()
    (docker_config / "config.json").write_text(
        json.dumps({"auths": {"registry.example:443": {"auth": auth}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    creds = credentials.credentials(cfg(tmp_path), engine.config_auth, env={})
    assert creds is not None
    assert (creds.username, creds.password.value, creds.source) == (
        "robot",
        "docker-config-pw",
        "Docker config",
    )


def test_embedded_registry_credentials_live_outside_the_repo_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty-docker-config"))
    config = cfg(tmp_path, host=settings.EMBEDDED_REGISTRY)
    service = services.embedded_registry(config)
    stored = settings.embedded_credentials_file(config.state_dir)
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert not stored.is_relative_to(tmp_path / "app-recipes")
    assert services.embedded_registry(config).password == service.password  # stable
    creds = credentials.credentials(config, engine.config_auth, env={})
    assert creds is not None and creds.password.value == service.password
    assert log.redact(service.password) == "***"
