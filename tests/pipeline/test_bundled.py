"""The bundled recipes, built for real from this repository against the test registry."""

from __future__ import annotations

from typing import Any

import pytest

from heps.core.settings import SETTINGS_FILE
from tests.conftest import HOST_CA_BUNDLE, REPO_ROOT, BundledBuild, Env, read_json


@pytest.fixture
def site_ca(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator passes the site CA bundle (as `make run` does); pip needs it in the
    builds. The repository's heps.yaml names no host file."""
    assert "ca_bundle:" not in (REPO_ROOT / SETTINGS_FILE).read_text()
    monkeypatch.setenv("HEPS_CA_BUNDLE", HOST_CA_BUNDLE)


def test_debian_base_bootstraps_without_pulling_anything(bundled_build: BundledBuild) -> None:
    """debootstrap from the mirror, import, smoke-test (structure + commands), push."""
    assert bundled_build.code == 0, bundled_build.log[-3000:]
    entry = bundled_build.entries["debian-base"]
    assert entry["status"] == "built" and entry["pushed"]
    assert [(s["kind"], s["passed"]) for s in entry["smoke"]] == [
        ("structure", True),
        ("command", True),
        ("command", True),
    ]
    assert "[build] debian-base: debootstrap --variant=minbase --include=ca-certificates" in (
        bundled_build.log
    )
    assert "[build] debian-base: site CA bundle installed in the system trust store" in (
        bundled_build.log
    )


@pytest.mark.slow
@pytest.mark.usefixtures("site_ca")
def test_whole_bundled_tree_builds_smoke_tests_and_pushes(heps: Any, env: Env) -> None:
    """Every bundled application, its smoke test doing real work (minutes; `tox -e slow`)."""
    report = env.repo / "report.json"
    result = heps(REPO_ROOT, "run", "--all", "--report", str(report))
    assert result.code == 0, result.text[-5000:]
    entries = read_json(report)["recipes"]
    assert {e["name"] for e in entries} >= {
        "debian-base",
        "jupyterlab-base",
        "ct-reconstruction",
        "deep-learning",
        "spark-driver",
    }
    assert all(e["status"] == "built" and all(s["passed"] for s in e["smoke"]) for e in entries)
