"""Settings: defaults stated once (the dataclasses), heps.yaml and the environment on top."""

from __future__ import annotations

from pathlib import Path

import pytest

from heps.core import settings
from heps.core.errors import ConfigError
from heps.core.settings import (
    BuildSettings,
    GitOpsSettings,
    Identity,
    ReconcileSettings,
    RegistrySettings,
    SmokeSettings,
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "app-recipes").mkdir()
    return tmp_path


def test_without_heps_yaml_every_section_is_its_dataclass_default(repo: Path) -> None:
    loaded = settings.load(repo, env={"HEPS_STATE_DIR": str(repo / "state")})
    assert loaded.registry == RegistrySettings()
    assert loaded.build == BuildSettings()
    assert loaded.smoke == SmokeSettings()
    assert loaded.gitops == GitOpsSettings()
    assert loaded.reconcile == ReconcileSettings()


def test_heps_yaml_keeps_defaults_for_keys_it_leaves_out(repo: Path) -> None:
    (repo / "heps.yaml").write_text(
        "build: {parallel: 3}\nreconcile: {digest_required: [prod, edge]}\n"
        "gitops: {author: 'Ops <ops@example.org>'}\n"
    )
    loaded = settings.load(repo, env={"HEPS_GIT_COMMITTER": "Bot <bot@example.org>"})
    assert loaded.build == BuildSettings(parallel=3)
    assert loaded.reconcile == ReconcileSettings(digest_required=("prod", "edge"))
    assert loaded.gitops == GitOpsSettings(
        author=Identity("Ops", "ops@example.org"), committer=Identity("Bot", "bot@example.org")
    )


def test_environment_wins_over_heps_yaml(repo: Path) -> None:
    (repo / "heps.yaml").write_text("gitops: {author: 'Ops <ops@example.org>'}\n")
    loaded = settings.load(
        repo, env={"HEPS_GIT_AUTHOR": "Me <me@example.org>", "HEPS_GITOPS_REPO": "/srv/ops.git"}
    )
    assert loaded.gitops.author == Identity("Me", "me@example.org")
    assert loaded.gitops.remote == "/srv/ops.git"


def test_a_malformed_identity_names_the_field(repo: Path) -> None:
    with pytest.raises(ConfigError, match=r"heps.yaml: gitops.committer: 'nobody'.*Name <email>"):
        settings.load(repo, env={"HEPS_GIT_COMMITTER": "nobody"})
