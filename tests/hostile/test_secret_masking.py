"""Secrets never reach an output, whatever characters they hold and however the output is
encoded; masking touches output only, never data written to files; and a secret that
would mask ordinary text is refused before anything runs.

The registry passwords here hold a double quote, a backslash and non-ASCII characters,
so a mask applied after JSON, YAML or XML encoding would miss their escaped forms.
"""

from __future__ import annotations

import html
import json
import secrets
import shutil
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
from tests.conftest import BUSYBOX, REPO_ROOT, free_port, simple_recipe, write_recipe
from tests.pipeline.test_promote import overlays


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


@pytest.mark.parametrize(
    ("password", "where"),
    [
        ("heps", "is shorter than 8 characters"),
        ("1.0.0", "is shorter than 8 characters"),
        ("app-with-a-long-name", "appears in the name of app-recipes/app-with-a-long-name"),
        ("1.2.3-rc.45678", "appears in app-recipes/app-with-a-long-name/recipe.yaml"),
        ("production", "appears in the name of k8s-overlays/overlays/production"),
        ("nsp-for-this-test", "appears in the registry namespace"),
    ],
)
def test_a_password_that_would_mask_ordinary_text_is_refused_at_start(
    heps: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, password: str, where: str
) -> None:
    """A password equal to a version, a name or a word of the configuration, or too short,
    would turn ordinary output into *** (and used to garble job XML): one line, exit 2,
    naming where the password came from and the fix; nothing runs, nothing is written."""
    repo = tmp_path / "repo"
    (repo / "app-recipes").mkdir(parents=True)
    write_recipe(
        repo, "app-with-a-long-name", simple_recipe("app-with-a-long-name", "1.2.3-rc.45678")
    )
    overlays(repo, ["app-with-a-long-name"])
    for name, value in {
        "HEPS_REGISTRY": f"127.0.0.1:{free_port()}",
        "HEPS_NAMESPACE": "nsp-for-this-test",
        "HEPS_REGISTRY_USERNAME": "robot",
        "HEPS_REGISTRY_PASSWORD": password,
        "HEPS_STATE_DIR": str(tmp_path / "state"),
        "HEPS_CA_BUNDLE": "",
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),
    }.items():
        monkeypatch.setenv(name, value)
    report = tmp_path / "report.json"
    result = heps(repo, "run", "--all", "--report", str(report))
    assert result.code == 2 and result.out == ""
    (line,) = result.err.splitlines()
    assert line.startswith(f"heps: error: HEPS_REGISTRY_USERNAME/PASSWORD: the secret {where}")
    assert "set HEPS_REGISTRY_PASSWORD" in line
    assert not report.exists() and not (tmp_path / "state").exists()
    assert password not in line.split(":", 3)[3].replace(where, "")  # never printed itself


JOBS_PASSWORD = 'W\u00f6rk"flow\\Job-' + secrets.token_hex(4)


def test_job_xml_is_data_and_never_masked(
    heps: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A Jenkins token equal to a word of the job templates (not of jobs.yaml, so not
    refused) and a hostile registry password mask what is printed, never the job XML
    written: `heps jenkins render` writes the same bytes with and without them."""
    repo = tmp_path / "repo"
    (repo / "app-recipes").mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "jenkins", repo / "jenkins")
    monkeypatch.setenv("HEPS_CA_BUNDLE", "")
    monkeypatch.setenv("HEPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.delenv("HEPS_REGISTRY_PASSWORD", raising=False)
    plain = heps(repo, "jenkins", "render", "--out", str(tmp_path / "plain"))
    assert plain.code == 0, plain.text
    monkeypatch.setenv("JENKINS_API_TOKEN", "keepDependencies")
    monkeypatch.setenv("HEPS_REGISTRY_USERNAME", "robot")
    monkeypatch.setenv("HEPS_REGISTRY_PASSWORD", JOBS_PASSWORD)
    masked = heps(repo, "jenkins", "render", "--out", str(tmp_path / "masked"))
    assert masked.code == 0, masked.text
    written, again = (
        {p.relative_to(out): p.read_bytes() for p in out.rglob("*.xml")}
        for out in (tmp_path / "plain", tmp_path / "masked")
    )
    assert written == again and any(b"keepDependencies" in xml for xml in again.values())
    assert all(b"***" not in xml for xml in again.values())


def test_review_and_reconcile_diffs_mask_a_configmap_carrying_the_password() -> None:
    """What `heps review` shows per overlay: YAML of each object, masked before dumping
    (yaml escapes non-ASCII, so masking the dump would miss it)."""
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "hub", "namespace": "heps"},
        "data": {"registry.json": json.dumps({"password": HOSTILE}), "plain": HOSTILE},
    }
    text = reconcile.diff({}, {manifests.key_of(config): config}, log.Masker.of([HOSTILE]))
    assert "+kind: ConfigMap" in text
    assert leaked(HOSTILE, text) == []
    unmasked = reconcile.diff({}, {manifests.key_of(config): config}, log.Masker())
    assert leaked(HOSTILE, unmasked) != []  # what the masker prevents


def test_an_at_sign_in_a_url_password_is_scrubbed_whole() -> None:
    line = "fatal: could not read from https://ci:p@ss:w@rd@git.example/heps.git"
    for scrubbed in (log.Masker().redact(line), log.redact_urls(line), scrub(line)):
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
    assert fragment not in log.redact_urls(done.stderr) and fragment not in scrub(done.stderr)
