"""`heps jenkins render|sync|trigger`: job XML from jenkins/jobs.yaml, synced and
triggered with python-jenkins against FakeJenkins (a test double: no Jenkins can run
here; see its docstring for what it does not model). When JENKINS_URL is set, the
`server` fixture is that real Jenkins instead: the sync scenario runs against it in a
folder of the test's own, and the scenarios that need the double skip, saying why."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import defusedxml.ElementTree
import pytest

from heps.ci import jenkins_jobs
from heps.core.errors import ConfigError
from tests.conftest import REPO_ROOT
from tests.pipeline.fake_jenkins import FakeJenkins, parameter_defaults

LIVE = bool(os.environ.get("JENKINS_URL"))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of jenkins/ and the settings, its folder renamed so a live server's own
    `heps` folder is never touched."""
    root = tmp_path / "repo"
    (root / "app-recipes").mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "jenkins", root / "jenkins")
    shutil.copy(REPO_ROOT / "heps.yaml", root / "heps.yaml")
    folder = f"heps-test-{uuid.uuid4().hex[:6]}"
    path = root / jenkins_jobs.JOBS_FILE
    path.write_text(re.sub(r"\bname: heps\b", f"name: {folder}", path.read_text()))
    path.write_text(path.read_text().replace("name: heps/", f"name: {folder}/"))
    monkeypatch.setenv("HEPS_CA_BUNDLE", "")
    return root


def folder_of(repo: Path) -> str:
    return next(name for name in jenkins_jobs.render(repo) if "/" not in name)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if LIVE:
        yield None  # JENKINS_URL, JENKINS_USER and JENKINS_API_TOKEN come from outside
        return
    fake = FakeJenkins("ci-bot", f"tok-{uuid.uuid4().hex}")
    monkeypatch.setenv("JENKINS_URL", fake.url)
    monkeypatch.setenv("JENKINS_USER", fake.user)
    monkeypatch.setenv("JENKINS_API_TOKEN", fake.token)
    yield fake
    fake.stop()


def live_config(name: str) -> str | None:
    from heps.ci.jenkins_server import connect

    return connect(None).get_job_config(name)


def test_every_job_renders_to_the_xml_jenkins_needs() -> None:
    rendered = jenkins_jobs.render(REPO_ROOT)
    assert list(rendered) == ["heps", "heps/merge-request", "heps/main", "heps/reconcile"]
    folder = defusedxml.ElementTree.fromstring(rendered["heps"].split("?>", 1)[1])
    assert folder.tag == "com.cloudbees.hudson.plugins.folder.Folder"
    for name in ("heps/merge-request", "heps/main", "heps/reconcile"):
        root = defusedxml.ElementTree.fromstring(rendered[name].split("?>", 1)[1])
        assert root.tag == "flow-definition"
        assert jenkins_jobs.MARKER in (root.findtext("description") or "")
        definition = root.find("definition")
        assert definition is not None
        assert definition.get("class") == "org.jenkinsci.plugins.workflow.cps.CpsScmFlowDefinition"
        script = definition.findtext("scriptPath") or ""
        assert "pipeline {" in (REPO_ROOT / script).read_text()
        scm = definition.find("scm")
        assert scm is not None and scm.get("class") == "hudson.plugins.git.GitSCM"
        assert scm.findtext("userRemoteConfigs/hudson.plugins.git.UserRemoteConfig/url") == (
            "https://code.ihep.ac.cn/heps/delivery.git"
        )
        assert scm.findtext("branches/hudson.plugins.git.BranchSpec/name")
    reconcile = defusedxml.ElementTree.fromstring(rendered["heps/reconcile"].split("?>", 1)[1])
    choices = reconcile.findall(".//hudson.model.ChoiceParameterDefinition/choices/a/string")
    assert [c.text for c in choices] == ["testbed", "production"]
    assert reconcile.findtext(".//hudson.triggers.TimerTrigger/spec") == "H * * * *"
    main = rendered["heps/main"]
    assert "DisableConcurrentBuildsJobProperty" in main and "<spec>H/15 * * * *</spec>" in main


def test_jenkinsfiles_bind_credentials_and_publish_results() -> None:
    for name in ("merge-request", "main", "reconcile"):
        text = (REPO_ROOT / "jenkins" / f"Jenkinsfile.{name}").read_text()
        assert text.count("{") == text.count("}"), name
        assert "withCredentials(" in text and "credentialsId:" in text
        assert not re.search(r"(?i)(password|token|secret)\s*[:=]\s*['\"]", text)  # no literal
    for name in ("merge-request", "main"):
        text = (REPO_ROOT / "jenkins" / f"Jenkinsfile.{name}").read_text()
        assert "junit " in text and "archiveArtifacts" in text and "--report" in text
    assert "--promote testbed --push" in (REPO_ROOT / "jenkins/Jenkinsfile.main").read_text()
    assert "heps review" in (REPO_ROOT / "jenkins/Jenkinsfile.merge-request").read_text()


def test_descriptions_are_escaped_for_xml(repo: Path) -> None:
    path = repo / jenkins_jobs.JOBS_FILE
    path.write_text(path.read_text().replace("Lint, build", "Lint <&> build"))
    rendered = jenkins_jobs.render(repo)
    xml = next(x for n, x in rendered.items() if n.endswith("/merge-request"))
    assert "Lint &lt;&amp;&gt; build" in xml
    defusedxml.ElementTree.fromstring(xml.split("?>", 1)[1])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("concurrent: true", "concurrency: true"),
            r"jenkins/jobs.yaml:\d+: jobs.0.concurrency: unknown key",
        ),
        (
            ("  - name: heps-test", "  - name: nowhere"),
            r"folder '.*' is not defined; add it under folders",
        ),
        (
            ("type: choice, choices: [testbed, production]", "type: choice"),
            r"OVERLAY: a choice needs choices",
        ),
    ],
)
def test_bad_job_definitions_are_named(repo: Path, edit: tuple[str, str], message: str) -> None:
    path = repo / jenkins_jobs.JOBS_FILE
    text = path.read_text()
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError, match=message):
        jenkins_jobs.render(repo)


def test_render_command_writes_one_file_per_job(heps: Any, repo: Path, tmp_path: Path) -> None:
    result = heps(repo, "jenkins", "render", "--out", str(tmp_path / "out"))
    assert result.code == 0, result.err
    folder = folder_of(repo)
    assert sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.xml")
    ) == [
        f"{folder}.xml",
        f"{folder}/main.xml",
        f"{folder}/merge-request.xml",
        f"{folder}/reconcile.xml",
    ]


def test_sync_creates_then_changes_nothing_then_updates_only_what_differs(
    heps: Any, repo: Path, server: Any
) -> None:
    folder = folder_of(repo)
    first = heps(repo, "jenkins", "sync")
    assert first.code == 0, first.err
    assert (
        f"created: {folder}, {folder}/merge-request, {folder}/main, {folder}/reconcile" in first.out
    )
    again = heps(repo, "jenkins", "sync")
    assert again.code == 0 and "created" not in again.out and "updated" not in again.out
    assert f"unchanged: {folder}, {folder}/merge-request" in again.out
    path = repo / jenkins_jobs.JOBS_FILE
    path.write_text(path.read_text().replace("hourly, drift is corrected", "every hour"))
    dry = heps(repo, "jenkins", "sync", "--dry-run")
    assert f"would be updated: {folder}/reconcile" in dry.out
    assert (
        "-  <description>Apply an overlay to its cluster and check the rollout (hourly" in dry.out
    )
    stored = server.configs[f"{folder}/reconcile"] if server else live_config(f"{folder}/reconcile")
    assert "hourly" in stored  # a dry run changes nothing
    done = heps(repo, "jenkins", "sync")
    assert f"updated: {folder}/reconcile" in done.out and "created" not in done.out


def test_sync_deletes_only_its_own_jobs(heps: Any, repo: Path, server: Any) -> None:
    if server is None:
        pytest.skip("JENKINS_URL is set: this scenario plants a job by hand in FakeJenkins")
    folder = folder_of(repo)
    assert heps(repo, "jenkins", "sync").code == 0
    server.configs[f"{folder}/hand-made"] = server.stored(
        "<flow-definition><description>a colleague's job</description></flow-definition>"
    )
    path = repo / jenkins_jobs.JOBS_FILE
    text = path.read_text()
    start = text.index(f"  - name: {folder}/merge-request")
    path.write_text(text[:start] + text[text.index(f"  - name: {folder}/main") :])
    result = heps(repo, "jenkins", "sync")
    assert result.code == 0, result.err
    assert f"deleted: {folder}/merge-request" in result.out
    assert f"{folder}/hand-made" in server.configs
    assert f"{folder}/merge-request" not in server.configs


def test_trigger_follows_the_build_to_its_result(heps: Any, repo: Path, server: Any) -> None:
    if server is None:
        pytest.skip("JENKINS_URL is set: a trigger there would run the real reconcile job")
    folder = folder_of(repo)
    assert heps(repo, "jenkins", "sync").code == 0
    result = heps(
        repo, "jenkins", "trigger", f"{folder}/reconcile", "--param", "OVERLAY=testbed", "--wait"
    )
    assert result.code == 0, result.err
    # --wait followed the queue item while it waited, then the build while it ran
    (item,) = server.queue
    (build,) = server.builds
    assert (item.reads, build.reads) == (2, 2) and item.build is build
    assert build.job == f"{folder}/reconcile" and build.number == 1
    assert build.parameters == {"OVERLAY": "testbed", "DRY_RUN": "false"}  # defaults too
    job_url = server.job_url(f"{folder}/reconcile")
    assert result.out.strip() == f"{folder}/reconcile: {job_url}1/ SUCCESS"
    server.result = "FAILURE"
    failed = heps(repo, "jenkins", "trigger", f"{folder}/main", "--wait")
    assert failed.code == 1 and failed.out.strip().endswith("FAILURE")
    assert [(b.job, b.number) for b in server.builds] == [
        (f"{folder}/reconcile", 1),
        (f"{folder}/main", 1),  # numbered per job; queue ids are not build numbers
    ]
    assert [q.id for q in server.queue] == [server.first_queue_id, server.first_queue_id + 1]
    queued = heps(repo, "jenkins", "trigger", f"{folder}/main")
    assert queued.code == 0 and queued.out.strip() == (
        f"{folder}/main: {server.url}queue/item/{server.first_queue_id + 2}/ queued"
    )
    assert len(server.builds) == 2  # nobody polled: still in the queue
    missing = heps(repo, "jenkins", "trigger", f"{folder}/nope")
    assert missing.code == 2 and "no such job" in missing.err
    bad = heps(repo, "jenkins", "trigger", f"{folder}/main", "--param", "OVERLAY")
    assert bad.code == 2 and "write it as NAME=VALUE" in bad.err
    unknown = heps(repo, "jenkins", "trigger", f"{folder}/reconcile", "--param", "COLOR=red")
    assert unknown.code == 2
    assert "--param COLOR: not a parameter of this job (its parameters: DRY_RUN, OVERLAY)" in (
        unknown.err
    )
    of_folder = heps(repo, "jenkins", "trigger", folder)
    assert of_folder.code == 2 and "a folder, not a job that can be built" in of_folder.err
    assert len(server.queue) == 3  # none of the refused triggers reached the queue


def test_a_job_with_parameters_starts_with_its_defaults(heps: Any, repo: Path, server: Any) -> None:
    if server is None:
        pytest.skip("JENKINS_URL is set: a trigger there would run the real reconcile job")
    folder = folder_of(repo)
    assert heps(repo, "jenkins", "sync").code == 0
    result = heps(repo, "jenkins", "trigger", f"{folder}/reconcile", "--wait")
    assert result.code == 0, result.err
    (build,) = server.builds
    assert build.parameters == parameter_defaults(server.configs[f"{folder}/reconcile"])


def test_refused_token_is_a_config_error_and_never_printed(
    heps: Any, repo: Path, server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if server is None:
        pytest.skip("JENKINS_URL is set: this scenario needs FakeJenkins to refuse a token")
    wrong = f"wrong-{uuid.uuid4().hex}"
    monkeypatch.setenv("JENKINS_API_TOKEN", wrong)
    result = heps(repo, "jenkins", "sync")
    assert result.code == 2
    assert "Jenkins refused listing jobs" in result.err and "JENKINS_API_TOKEN" in result.err
    assert wrong not in result.text
