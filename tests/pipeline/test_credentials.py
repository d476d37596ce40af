"""Where credentials come from, and that they stay out of the repository and the output."""

from __future__ import annotations

import base64
import json
import os
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
    masker = credentials.masker(cfg(tmp_path), creds, env={})
    assert masker.redact("login with s3cr3t-env-pw failed") == "login with *** failed"


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
    assert credentials.masker(config, creds, env={}).redact(service.password) == "***"


HOSTILE = 'q"uo\\te-\u00fc\u20ac-pw'


def test_the_masker_holds_the_run_secrets_in_every_encoded_form(tmp_path: Path) -> None:
    creds = credentials.Credentials("ci", credentials.Secret(HOSTILE), "test")
    masker = credentials.masker(cfg(tmp_path), creds, env={"JENKINS_API_TOKEN": "tok-" + "7" * 30})
    for form in (HOSTILE, json.dumps(HOSTILE)[1:-1], json.dumps(HOSTILE, ensure_ascii=False)[1:-1]):
        assert masker.redact(f"<{form}>") == "<***>"
    assert masker.mask({"k": [f"a {HOSTILE} b"]}) == {"k": ["a *** b"]}
    assert masker.redact("token tok-" + "7" * 30) == "token ***"
    assert log.Masker().redact(f"<{HOSTILE}>") == f"<{HOSTILE}>"  # nothing shared between runs


@pytest.mark.parametrize(
    ("env", "docker", "message"),
    [
        (
            {"HEPS_REGISTRY_USERNAME": "ci", "HEPS_REGISTRY_PASSWORD": "short"},
            None,
            "HEPS_REGISTRY_USERNAME/PASSWORD: the secret is shorter than 8 characters, "
            "so masking it would hide ordinary text in every output; "
            "set HEPS_REGISTRY_PASSWORD",
        ),
        (
            {},
            "robot:2.17.10",
            "Docker config: the secret is shorter than 8 characters, so masking it would hide "
            "ordinary text in every output; give the registry a random password of at least "
            "8 characters found nowhere in the repository, then `docker login "
            "registry.example:443`",
        ),
        (
            {},
            "robot:version-of-a-recipe",
            "Docker config: the secret appears in app-recipes/app/recipe.yaml",
        ),
        (
            {"JENKINS_API_TOKEN": "registry.example"},
            None,
            "JENKINS_API_TOKEN: the secret appears in the registry host",
        ),
    ],
)
def test_a_secret_that_would_mask_ordinary_text_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    docker: str | None,
    message: str,
) -> None:
    (tmp_path / "app-recipes/app").mkdir(parents=True)
    (tmp_path / "app-recipes/app/recipe.yaml").write_text(
        "name: app\nversion: version-of-a-recipe\n"
    )
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    if docker:
        auth = base64.b64encode(docker.encode()).decode()
        (docker_config / "config.json").write_text(
            json.dumps({"auths": {"registry.example:443": {"auth": auth}}})
        )
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    config = cfg(tmp_path)
    creds = credentials.credentials(config, engine.config_auth, env=env)
    with pytest.raises(ConfigError) as refused:
        credentials.masker(config, creds, env=env)
    (problem,) = refused.value.problems
    assert problem.startswith(message)


def test_the_embedded_registry_file_names_itself_and_the_fix(tmp_path: Path) -> None:
    config = cfg(tmp_path, host=settings.EMBEDDED_REGISTRY)
    stored = settings.embedded_credentials_file(config.state_dir)
    stored.parent.mkdir(parents=True)
    stored.write_text(json.dumps({"username": "heps", "password": "heps"}))
    creds = credentials.credentials(config, lambda host: {}, env={})
    with pytest.raises(ConfigError, match=f"^{stored}: the secret is shorter .*; delete {stored} "):
        credentials.masker(config, creds, env={})


def test_a_link_out_of_the_repository_is_not_read(tmp_path: Path) -> None:
    """The search for ordinary text reads the repository's own regular files only: not
    through a link, and not from a FIFO (which would block the start)."""
    outside = tmp_path / "outside.yaml"
    outside.write_text("a-long-random-password\n")
    repo = tmp_path / "repo"
    (repo / "app-recipes/app").mkdir(parents=True)
    (repo / "app-recipes/app/recipe.yaml").symlink_to(outside)
    (repo / "app-recipes/fifo").mkdir()
    os.mkfifo(repo / "app-recipes/fifo/recipe.yaml")
    creds = credentials.Credentials("ci", credentials.Secret("a-long-random-password"), "test")
    masker = credentials.masker(cfg(repo), creds, env={})
    assert masker.redact("a-long-random-password") == "***"
