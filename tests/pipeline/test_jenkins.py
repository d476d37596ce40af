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

from heps.ci import jenkins_jobs, templating
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


JOBS = ("heps-mr/merge-request", "heps-mr-code/pipeline-tests", "heps/main", "heps/reconcile")


def xml_of(rendered: dict[str, str], name: str) -> Any:
    return defusedxml.ElementTree.fromstring(rendered[name].split("?>", 1)[1])


def test_every_job_renders_to_the_xml_jenkins_needs() -> None:
    rendered = jenkins_jobs.render(REPO_ROOT)
    assert list(rendered) == ["heps", "heps-mr", "heps-mr-code", *JOBS]
    for folder in ("heps", "heps-mr", "heps-mr-code"):
        assert xml_of(rendered, folder).tag == "com.cloudbees.hudson.plugins.folder.Folder"
    for name in JOBS:
        root = xml_of(rendered, name)
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
    reconcile = xml_of(rendered, "heps/reconcile")
    choices = reconcile.findall(".//hudson.model.ChoiceParameterDefinition/choices/a/string")
    assert [c.text for c in choices] == ["testbed", "production"]
    assert reconcile.findtext(".//hudson.triggers.TimerTrigger/spec") == "H * * * *"
    main = rendered["heps/main"]
    assert "DisableConcurrentBuildsJobProperty" in main and "<spec>H/15 * * * *</spec>" in main


def test_where_each_job_sits_and_where_its_script_comes_from() -> None:
    """Read from the rendered XML alone: the folder of each job, the branch and file its
    script is loaded from, the credentials its folder holds and what its script binds."""
    rendered = jenkins_jobs.render(REPO_ROOT)
    seen = {}
    for name in JOBS:
        definition = xml_of(rendered, name).find("definition")
        branch = definition.findtext("scm/branches/hudson.plugins.git.BranchSpec/name")
        script = definition.findtext("scriptPath")
        folder = name.rpartition("/")[0]
        held = xml_of(rendered, folder).findtext("description") or ""
        binds = sorted(
            set(re.findall(r"credentialsId: '([^']+)'", (REPO_ROOT / script).read_text()))
        )
        seen[name] = (folder, branch, script, binds)
        if folder.startswith("heps-mr"):  # merge-request content: nothing that pushes or applies
            assert not re.search(r"\((git-write|registry-push|kubeconfig)\)", held), name
    assert seen == {
        "heps-mr/merge-request": (
            "heps-mr",
            "*/main",
            "jenkins/Jenkinsfile.merge-request",
            ["heps-delivery-read", "heps-registry-pull"],
        ),
        "heps-mr-code/pipeline-tests": (
            "heps-mr-code",
            "*/main",
            "jenkins/Jenkinsfile.pipeline-tests",
            ["heps-delivery-read"],
        ),
        "heps/main": (
            "heps",
            "*/main",
            "jenkins/Jenkinsfile.main",
            ["heps-delivery-git", "heps-registry"],
        ),
        "heps/reconcile": ("heps", "*/main", "jenkins/Jenkinsfile.reconcile", []),
    }
    held = xml_of(rendered, "heps").findtext("description") or ""
    assert "heps-delivery-git (git-write)" in held and "kubeconfig-production (kubeconfig)" in held
    mr = (REPO_ROOT / "jenkins/Jenkinsfile.merge-request").read_text()
    assert "heps ci merge-request --checkout mr" in mr and "scripts/bootstrap.sh" in mr
    assert "withCredentials" not in (REPO_ROOT / "jenkins/Jenkinsfile.pipeline-tests").read_text()


def test_jenkinsfiles_bind_credentials_and_publish_results() -> None:
    for name in ("merge-request", "main", "reconcile"):
        text = (REPO_ROOT / "jenkins" / f"Jenkinsfile.{name}").read_text()
        assert text.count("{") == text.count("}"), name
        assert "withCredentials(" in text and "credentialsId:" in text
        assert not re.search(r"(?i)(password|token|secret)\s*[:=]\s*['\"]", text)  # no literal
    for name in ("merge-request", "main"):
        text = (REPO_ROOT / "jenkins" / f"Jenkinsfile.{name}").read_text()
        assert "junit " in text and "archiveArtifacts" in text and "reports/" in text
    assert "--promote testbed --push" in (REPO_ROOT / "jenkins/Jenkinsfile.main").read_text()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (  # the push credential moved into the merge-request folder
            (
                "      - {id: heps-registry-pull, grants: registry-pull}\n",
                "      - {id: heps-registry, grants: registry-push}\n",
            ),
            r"^heps: error: jenkins/jobs.yaml: heps-test-\w+-mr/merge-request: runs merge-request "
            r"content, yet folder heps-test-\w+-mr holds heps-registry \(registry-push\); move",
        ),
        (  # a kubeconfig in the global store reaches every job
            ("credentials: []", "credentials: [{id: kubeconfig-production, grants: kubeconfig}]"),
            r"merge-request: runs merge-request content, yet the global store holds "
            r"kubeconfig-production \(kubeconfig\)",
        ),
        (  # the merge request's own Jenkinsfile
            ('branch: "*/main"                  #', 'branch: "*/merge-requests/*"  #'),
            r"merge-request: runs merge-request content with a Jenkinsfile from "
            r"\*/merge-requests/\*; load it from \*/main",
        ),
        (  # the merge-request job moved into the folder that pushes
            ("-mr/merge-request", "/merge-request"),
            r"merge-request: runs merge-request content, yet folder heps-test-\w+ holds "
            r"heps-delivery-git",
        ),
    ],
)
def test_render_refuses_credentials_within_reach_of_merge_request_content(
    heps: Any, repo: Path, edit: tuple[str, str], message: str
) -> None:
    path = repo / jenkins_jobs.JOBS_FILE
    text = path.read_text()
    assert edit[0] in text, edit[0]
    path.write_text(text.replace(edit[0], edit[1], 1))
    result = heps(repo, "jenkins", "render", "--out", str(repo / "out"))
    assert result.code == 2
    assert re.search(message, result.err, re.M), result.err
    assert not (repo / "out").exists()


def test_a_jenkinsfile_binding_what_its_folder_does_not_hold_is_refused(repo: Path) -> None:
    path = repo / "jenkins/Jenkinsfile.merge-request"
    path.write_text(path.read_text().replace("'heps-registry-pull'", "'heps-delivery-git'"))
    with pytest.raises(
        ConfigError, match=r"Jenkinsfile.merge-request: binds heps-delivery-git, which no store"
    ):
        jenkins_jobs.render(repo)
    path.write_text(path.read_text().replace("'heps-delivery-git'", "'heps-registry-pull'"))
    jobs = repo / jenkins_jobs.JOBS_FILE  # an id named by a choice: every choice is checked
    jobs.write_text(jobs.read_text().replace("{id: kubeconfig-production,", "{id: kubeconfig-p,"))
    with pytest.raises(ConfigError, match=r"Jenkinsfile.reconcile: binds kubeconfig-production,"):
        jenkins_jobs.render(repo)
    jobs.write_text(jobs.read_text().replace("choices: [testbed, production]", "choices: [x]"))
    reconcile = repo / "jenkins/Jenkinsfile.reconcile"
    reconcile.write_text(reconcile.read_text().replace("params.OVERLAY", "env.WHATEVER"))
    with pytest.raises(ConfigError, match=r"binds a credential named at run time"):
        jenkins_jobs.render(repo)


def test_templates_render_in_a_sandbox(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "template-ran"
    path = repo / "jenkins/templates/folder.xml.j2"
    path.write_text(
        path.read_text()
        + "{{ cycler.__init__.__globals__.os.system('touch "
        + str(marker)
        + "') }}"
    )
    with pytest.raises(ConfigError, match=r"template error: .*unsafe"):
        jenkins_jobs.render(repo)
    assert not marker.exists()


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
        f"{folder}-mr-code.xml",
        f"{folder}-mr-code/pipeline-tests.xml",
        f"{folder}-mr.xml",
        f"{folder}-mr/merge-request.xml",
        f"{folder}.xml",
        f"{folder}/main.xml",
        f"{folder}/reconcile.xml",
    ]


def test_sync_creates_then_changes_nothing_then_updates_only_what_differs(
    heps: Any, repo: Path, server: Any
) -> None:
    folder = folder_of(repo)
    first = heps(repo, "jenkins", "sync")
    assert first.code == 0, first.err
    created = [f"{folder}{n}" for n in ("", "-mr", "-mr-code", "-mr/merge-request")]
    created += [f"{folder}{n}" for n in ("-mr-code/pipeline-tests", "/main", "/reconcile")]
    assert f"created: {', '.join(created)}" in first.out
    again = heps(repo, "jenkins", "sync")
    assert again.code == 0 and "created" not in again.out and "updated" not in again.out
    assert f"unchanged: {', '.join(created)}" in again.out
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
    start = text.index(f"  - name: {folder}-mr/merge-request")
    path.write_text(text[:start] + text[text.index(f"  - name: {folder}-mr-code/") :])
    result = heps(repo, "jenkins", "sync")
    assert result.code == 0, result.err
    assert f"deleted: {folder}-mr/merge-request" in result.out
    assert f"{folder}/hand-made" in server.configs
    assert f"{folder}-mr/merge-request" not in server.configs


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


def test_sync_keeps_the_credentials_an_admin_stored_in_a_folder(
    heps: Any, repo: Path, server: Any
) -> None:
    if server is None:
        pytest.skip("JENKINS_URL is set: this scenario plants a folder credential in FakeJenkins")
    folder = f"{folder_of(repo)}-mr"
    assert heps(repo, "jenkins", "sync").code == 0
    store = (
        f'<{jenkins_jobs.FOLDER_CREDENTIALS} plugin="cloudbees-folder">'
        "<domainCredentialsMap><entry><id>heps-registry-pull</id>"
        "<password>{AQAAABAAAAAQencrypted=}</password></entry></domainCredentialsMap>"
        f"</{jenkins_jobs.FOLDER_CREDENTIALS}>"
    )
    config = server.configs[folder]
    server.configs[folder] = server.stored(
        config.replace("<properties/>", f"<properties>{store}</properties>")
    )
    again = heps(repo, "jenkins", "sync")
    assert again.code == 0 and f"updated: {folder}," not in again.out + ","
    path = repo / jenkins_jobs.JOBS_FILE
    path.write_text(path.read_text().replace("read as data by main's pipeline", "read as data"))
    done = heps(repo, "jenkins", "sync")
    assert f"updated: {folder}" in done.out
    kept = server.configs[folder]
    assert "read as data;" in kept and "<id>heps-registry-pull</id>" in kept
    assert "{AQAAABAAAAAQencrypted=}" in kept


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (  # 10**10 empty iterations: range() is capped, nesting is not
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
            r"rendering took more than 3 s; bound the template's loops",
        ),
        ('{{ "x" * 100000000000 }}', r"needs more than 256 MiB of memory"),
        ('{{ "{:>900000000}".format(1) }}', r"needs more than 256 MiB of memory"),
        ("{{ (1,) * 999999999 }}", r"needs more than 256 MiB of memory"),
        ('{{ "x" * 3000000 }}', r"renders more than 1048576 characters"),
        ("{{ lipsum(10000) }}", r"renders more than 1048576 characters"),
    ],
)
def test_templates_render_in_bounded_time_memory_and_output(
    repo: Path, monkeypatch: pytest.MonkeyPatch, expression: str, message: str
) -> None:
    """Templates are merge-request content: whatever one computes, rendering stops at the
    child's wall-clock, memory and output bounds with one line naming the template."""
    monkeypatch.setattr(templating, "RENDER_SECONDS", 3.0)
    path = repo / "jenkins/templates/folder.xml.j2"
    path.write_text(path.read_text().replace("{{ description }}", expression))
    where = r"^jenkins/templates/folder.xml.j2 \(heps-test-\w+\): "
    with pytest.raises(ConfigError, match=where + message):
        jenkins_jobs.render(repo)


def test_two_checkouts_render_in_one_child_each_within_its_own_bounds(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review's head and base render in one child, each with its own wall-clock budget
    and its own refusal: a checkout whose template hangs is refused by name, and the
    one after it still renders, as it does alone."""
    monkeypatch.setattr(templating, "RENDER_SECONDS", 2.0)
    children = []
    real = templating.process.run_on_config

    def counted(*args: Any, **options: Any) -> Any:
        children.append(args[0])
        return real(*args, **options)

    monkeypatch.setattr(templating.process, "run_on_config", counted)
    hung = tmp_path / "hung"
    shutil.copytree(repo, hung)
    path = hung / "jenkins/templates/folder.xml.j2"
    loops = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    path.write_text(path.read_text().replace("{{ description }}", loops))
    alone = jenkins_jobs.render(repo)
    first, second = jenkins_jobs.render_each([hung, repo])
    assert len(children) == 2  # `alone`, then both checkouts in one
    assert isinstance(first, ConfigError)
    assert re.match(
        r"^jenkins/templates/folder.xml.j2 \(heps-test-\w+\): rendering took more than 2 s; ",
        str(first),
    )
    assert second == alone


def test_a_hung_template_is_exit_2_and_nothing_written(heps: Any, repo: Path) -> None:
    path = repo / "jenkins/templates/pipeline.xml.j2"
    path.write_text(path.read_text().replace("{{ branch }}", '{{ "x" * 100000000000 }}'))
    result = heps(repo, "jenkins", "render", "--out", str(repo / "out"))
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert "jenkins/templates/pipeline.xml.j2 (heps-test-" in result.err, result.err
    assert not (repo / "out").exists()


DEFINITION_TRICKS = {
    "revision_parameter_in_the_branch": (
        "<name>{{ branch }}</name>",
        '<name>{{ "${MR_REVISION}" if "merge-request" in jenkinsfile else branch }}</name>',
    ),
    "full_checkout": (
        "<lightweight>true</lightweight>",
        '<lightweight>{{ "false" if "merge-request" in jenkinsfile else "true" }}</lightweight>',
    ),
    "another_script": (
        "<scriptPath>{{ jenkinsfile }}</scriptPath>",
        "<scriptPath>{{ jenkinsfile.replace('merge-request', 'main') }}</scriptPath>",
    ),
    "another_remote": ("<url>{{ scm.url }}</url>", "<url>https://evil.example/fork.git</url>"),
    "two_branches": (
        "</hudson.plugins.git.BranchSpec>",
        "</hudson.plugins.git.BranchSpec><hudson.plugins.git.BranchSpec>"
        "<name>${MR_REVISION}</name></hudson.plugins.git.BranchSpec>",
    ),
    "merge_before_build": (
        "<extensions/>",
        "<extensions><hudson.plugins.git.extensions.impl.PreBuildMerge><options>"
        "<mergeRemote>origin</mergeRemote><mergeTarget>${MR_REVISION}</mergeTarget>"
        "</options></hudson.plugins.git.extensions.impl.PreBuildMerge></extensions>",
    ),
    "refspec_onto_main": (
        "<url>{{ scm.url }}</url>",
        "<url>{{ scm.url }}</url><refspec>+refs/merge-requests/*/head:refs/remotes/origin/main"
        "</refspec>",
    ),
    "inline_script": (
        'class="org.jenkinsci.plugins.workflow.cps.CpsScmFlowDefinition"',
        'class="org.jenkinsci.plugins.workflow.cps.CpsFlowDefinition"',
    ),
    "shared_library": (
        "  </properties>",
        "<org.jenkinsci.plugins.workflow.libs.JobLibraries/></properties>",
    ),
    "trigger_token": ("  <triggers/>", "  <triggers/><authToken>t</authToken>"),
    "another_parameter": (
        "      </parameterDefinitions>",
        "<hudson.model.StringParameterDefinition><name>REF</name>"
        "</hudson.model.StringParameterDefinition></parameterDefinitions>",
    ),
}


@pytest.mark.parametrize("trick", sorted(DEFINITION_TRICKS))
def test_where_a_job_script_comes_from_is_checked_on_the_rendered_xml(
    heps: Any, repo: Path, trick: str
) -> None:
    """jobs.yaml says `*/main`; what sync sends is the rendered XML, so the rule is
    checked there: any definition but the one jobs.yaml defines is refused."""
    old, new = DEFINITION_TRICKS[trick]
    path = repo / "jenkins/templates/pipeline.xml.j2"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    result = heps(repo, "jenkins", "render", "--out", str(repo / "out"))
    assert result.code == 2, result.text
    assert re.match(r"heps: error: jenkins/templates/pipeline.xml.j2: job heps-test-", result.err)
    assert not (repo / "out").exists()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (  # a folder that finds and runs merge requests' Jenkinsfiles itself
            "com.cloudbees.hudson.plugins.folder.Folder",
            "org.jenkinsci.plugins.workflow.multibranch.WorkflowMultiBranchProject",
        ),
        (  # a library every job of the folder loads, from a revision a build names
            "<properties/>",
            "<properties><org.jenkinsci.plugins.workflow.libs.FolderLibraries/></properties>",
        ),
    ],
)
def test_folders_render_as_plain_folders(repo: Path, old: str, new: str) -> None:
    path = repo / "jenkins/templates/folder.xml.j2"
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(ConfigError, match=r"folder.xml.j2: folder heps-test-\w+: renders"):
        jenkins_jobs.render(repo)
