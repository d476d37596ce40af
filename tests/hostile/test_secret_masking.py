"""Secrets never reach an output, whatever characters they hold and however the output is
encoded; and masking never touches what is written to git.

The registry passwords here hold a double quote, a backslash and non-ASCII characters,
so a mask applied after JSON, YAML or XML encoding would miss their escaped forms.
"""

from __future__ import annotations

import html
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import defusedxml.ElementTree
import pytest

from heps.cluster import manifests, reconcile
from heps.core import log
from heps.systems.git import scrub
from heps.systems.services import RegistryService
from tests.conftest import BUSYBOX, free_port, simple_recipe, write_recipe
from tests.pipeline.test_promote import git, overlays


def forms(password: str) -> list[str]:
    """Every way an encoder could write the password."""
    return [
        password,
        json.dumps(password)[1:-1],
        json.dumps(password, ensure_ascii=False)[1:-1],
        html.escape(password),
        password.encode("unicode_escape").decode(),
    ]


def leaked(password: str, text: str) -> list[str]:
    return [form for form in forms(password) if form in text]


@pytest.fixture
def hostile_registry(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RegistryService]:
    password = request.param
    service = RegistryService(tmp_path / "registry", f"127.0.0.1:{free_port()}", "tester", password)
    process = service.start()
    yield service
    process.terminate()
    process.wait(timeout=10)


def use(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, service: RegistryService) -> Path:
    repo = tmp_path / "repo"
    (repo / "app-recipes").mkdir(parents=True)
    monkeypatch.setenv("HEPS_REGISTRY", service.address)
    monkeypatch.setenv("HEPS_NAMESPACE", f"s{secrets.token_hex(5)}")
    monkeypatch.setenv("HEPS_REGISTRY_USERNAME", service.username)
    monkeypatch.setenv("HEPS_REGISTRY_PASSWORD", service.password)
    monkeypatch.setenv("HEPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HEPS_CA_BUNDLE", "")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    return repo


HOSTILE = 'q"uo\\te-\u00fc\u20ac-' + secrets.token_hex(4)


@pytest.mark.parametrize("hostile_registry", [HOSTILE], indirect=True)
def test_a_password_in_smoke_output_is_masked_everywhere(
    heps: Any,
    hostile_registry: RegistryService,
    busybox: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The image prints the registry password (a careless smoke command would); the run
    summary, the log, the JSON report and the JUnit XML all show *** instead."""
    repo = use(monkeypatch, tmp_path, hostile_registry)
    quoted = HOSTILE.replace("'", "'\\''")
    recipe = simple_recipe("app")
    recipe["smoke"]["commands"][0]["expect_output"] = "never printed"
    write_recipe(
        repo, "app", recipe, Dockerfile=f"FROM {BUSYBOX}\nRUN printf '%s' '{quoted}' > /hello\n"
    )
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    result = heps(repo, "run", "--all", "--report", str(report), "--junit", str(junit))
    assert result.code == 1, result.text
    assert "output: ***" in result.out  # the run summary on stdout, masked
    assert leaked(HOSTILE, result.text) == []
    text = report.read_text()
    assert leaked(HOSTILE, text) == [] and "***" in json.loads(text)["recipes"][0]["error"]
    xml = junit.read_text()
    assert (
        leaked(HOSTILE, xml) == []
        and defusedxml.ElementTree.fromstring(xml).find(".//failure") is not None
    )


@pytest.mark.parametrize("hostile_registry", ["1.0.0"], indirect=True)
def test_a_password_equal_to_a_version_never_garbles_git(
    heps: Any,
    hostile_registry: RegistryService,
    busybox: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Masked on the terminal, never in the overlay or the commit that pins it."""
    repo = use(monkeypatch, tmp_path, hostile_registry)
    write_recipe(
        repo, "app", simple_recipe("app"), Dockerfile=f"FROM {BUSYBOX}\nRUN echo app > /hello\n"
    )
    overlays(repo, ["app"])
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "initial")
    report = tmp_path / "report.json"
    assert heps(repo, "run", "--all", "--report", str(report)).code == 0
    entry = json.loads(report.read_text())["recipes"][0]
    assert entry["version"] == "1.0.0" and entry["references"][1].split(":")[-1].startswith(
        "1.0.0-g"
    )
    result = heps(repo, "promote", "--overlay", "testbed", "--report", str(report))
    assert result.code == 0, result.text
    pinned = (repo / "k8s-overlays/overlays/testbed/kustomization.yaml").read_text()
    assert "newTag: 1.0.0-g" in pinned and "***" not in pinned
    message = git(repo, "log", "-1", "--format=%B")
    assert message.startswith("promote testbed: app 1.0.0\n") and "***" not in message


def test_review_and_reconcile_diffs_mask_a_configmap_carrying_the_password() -> None:
    """What `heps review` shows per overlay: YAML of each object, masked before dumping
    (yaml escapes non-ASCII, so masking the dump would miss it)."""
    log.register_secret(HOSTILE)
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "hub", "namespace": "heps"},
        "data": {"registry.json": json.dumps({"password": HOSTILE}), "plain": HOSTILE},
    }
    text = reconcile.diff({}, {manifests.key_of(config): config})
    assert "+kind: ConfigMap" in text
    assert leaked(HOSTILE, text) == []


def test_an_at_sign_in_a_url_password_is_scrubbed_whole() -> None:
    line = "fatal: could not read from https://ci:p@ss:w@rd@git.example/heps.git"
    for scrubbed in (log.redact(line), scrub(line)):
        assert scrubbed == "fatal: could not read from https://***@git.example/heps.git"


def test_a_url_password_git_echoes_is_scrubbed() -> None:
    """git cuts a URL with an @ in its password at the first @ and echoes the rest as if
    it were the user: that fragment is masked too."""
    url = f"http://ci:s3@cr{secrets.token_hex(4)}@127.0.0.1:{free_port()}/heps.git"
    done = subprocess.run(
        ["git", "ls-remote", url], capture_output=True, text=True, env={"GIT_TERMINAL_PROMPT": "0"}
    )
    assert done.returncode != 0
    fragment = url.split("@")[1]
    assert fragment in done.stderr  # what would leak
    assert fragment not in log.redact(done.stderr) and fragment not in scrub(done.stderr)
