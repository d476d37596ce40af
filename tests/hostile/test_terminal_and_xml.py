"""Control characters and escape sequences from recipes, job definitions or an image's
output never reach the terminal raw and never make an XML file ill-formed; a job name
cannot leave the folder jobs are rendered into."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import defusedxml.ElementTree
import pytest

from tests.conftest import BUSYBOX, REPO_ROOT, Env, simple_recipe, write_recipe

TITLE = "\x1b]0;owned\x07\x1b[2J\x9b31m"
"""Set the terminal title, clear the screen, a C1 CSI: what a hostile name would send."""


def test_escape_sequences_in_a_recipe_folder_name_are_shown_escaped(heps: Any, env: Env) -> None:
    write_recipe(env.repo, f"app{TITLE}", simple_recipe("app"), Dockerfile=f"FROM {BUSYBOX}\n")
    result = heps(env.repo, "plan")
    assert result.code == 2
    assert not any(c in result.text for c in "\x1b\x07\x9b")
    assert "app\\x1b]0;owned\\x07\\x1b[2J\\x9b31m" in result.err


@pytest.fixture
def jobs_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "app-recipes").mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "jenkins", repo / "jenkins")
    return repo


def test_control_characters_in_jobs_yaml_keep_job_xml_well_formed(
    heps: Any, jobs_repo: Path
) -> None:
    path = jobs_repo / "jenkins/jobs.yaml"
    text = path.read_text().replace(
        "description: Lint, build", 'description: "Lint\\x01\\x1b[31m\\x0c, build'
    )
    text = text.replace("write the review report", 'write the review report"', 1)
    path.write_text(text)
    out = jobs_repo / "build/jenkins"
    result = heps(jobs_repo, "jenkins", "render", "--out", str(out))
    assert result.code == 0, result.text
    xml = (out / "heps-mr/merge-request.xml").read_text()
    root = defusedxml.ElementTree.fromstring(xml.split("?>", 1)[1])
    assert "Lint\\x01\\x1b[31m\\x0c, build" in (root.findtext("description") or "")


@pytest.mark.parametrize("name", ["..", "heps/../../escaped", "heps//x", "/etc/x", "heps/."])
def test_job_names_cannot_leave_the_render_folder(heps: Any, jobs_repo: Path, name: str) -> None:
    path = jobs_repo / "jenkins/jobs.yaml"
    path.write_text(path.read_text().replace("name: heps/reconcile", f"name: '{name}'", 1))
    out = jobs_repo / "build/jenkins"
    result = heps(jobs_repo, "jenkins", "render", "--out", str(out))
    assert result.code == 2
    assert f"jenkins/jobs.yaml: '{name}': not a job name" in result.err
    assert not out.exists()
    assert sorted(p.name for p in jobs_repo.iterdir()) == ["app-recipes", "jenkins"]


def test_control_characters_in_smoke_output_keep_junit_and_report_valid(
    heps: Any, env: Env, tmp_path: Path
) -> None:
    recipe = simple_recipe("app")
    recipe["smoke"]["commands"] = [
        {
            "name": "noisy",
            "run": ["sh", "-c", "printf 'bell\\007 esc\\033[31m nul\\000 ff\\014 end'; exit 3"],
        }
    ]
    write_recipe(env.repo, "app", recipe, Dockerfile=f"FROM {BUSYBOX}\n")
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    result = heps(env.repo, "run", "--no-push", "--report", str(report), "--junit", str(junit))
    assert result.code == 1
    assert not any(c in result.text for c in "\x00\x07\x0c\x1b")
    root = defusedxml.ElementTree.fromstring(junit.read_text().split("?>", 1)[1])
    failure = root.find(".//testcase[@name='smoke command noisy']/failure")
    assert failure is not None and "bell\\x07 esc\\x1b[31m nul\\x00 ff\\x0c end" in (
        failure.text or ""
    )
    (entry,) = json.loads(report.read_text())["recipes"]
    assert entry["failed_stage"] == "smoke" and "exit code 3" in entry["error"]


INLINE = (
    '<definition class="org.jenkinsci.plugins.workflow.cps.CpsFlowDefinition">'
    "<script>node { sh 'env' }</script><sandbox>false</sandbox></definition>"
)


@pytest.mark.parametrize(
    ("template", "old", "new"),
    [
        # Jenkins' XStream keeps the last of two same-named fields; the checks read the first
        ("pipeline.xml.j2", "  <triggers/>\n", f"  {INLINE}\n  <triggers/>\n"),
        (
            "folder.xml.j2",
            "  <healthMetrics/>",
            "  <properties><org.jenkinsci.plugins.workflow.libs.FolderLibraries/></properties>\n"
            "  <healthMetrics/>",
        ),
        # an XStream reference makes a field another element of the document
        (
            "pipeline.xml.j2",
            "<keepDependencies>false</keepDependencies>",
            '<keepDependencies reference="../description"/>',
        ),
        # a class on the root makes the folder another kind of item
        (
            "folder.xml.j2",
            'Folder plugin="cloudbees-folder">',
            'Folder class="jenkins.branch.OrganizationFolder" plugin="cloudbees-folder">',
        ),
    ],
    ids=["second-definition", "second-properties", "reference", "root-class"],
)
def test_job_xml_is_read_alike_by_the_checks_and_by_jenkins(
    heps: Any, jobs_repo: Path, template: str, old: str, new: str
) -> None:
    path = jobs_repo / "jenkins/templates" / template
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    out = jobs_repo / "build/jenkins"
    result = heps(jobs_repo, "jenkins", "render", "--out", str(out))
    assert result.code == 2, result.text
    assert re.match(r"heps: error: jenkins/templates/\w+.xml.j2: (job|folder) heps", result.err)
    assert "Traceback" not in result.err and not out.exists()


DECLARATION = "<?xml version='1.1' encoding='UTF-8'?>"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (DECLARATION, '<!DOCTYPE x [<!ENTITY a "aaaa">]>'),
        (DECLARATION, "<!DOCTYPE x>"),
        ("<description>", "<description>a<!-- a comment -->b"),
        ("<healthMetrics/>", "<healthMetrics/><?pi x?>"),
    ],
    ids=["entity", "doctype", "comment", "processing-instruction"],
)
def test_job_xml_with_a_doctype_or_markup_is_one_line(
    heps: Any, jobs_repo: Path, old: str, new: str
) -> None:
    """Jenkins refuses a DOCTYPE in config.xml; so does render, in one line (an entity
    had been an unexpected error, exit 1). A comment or processing instruction, at which
    XML readers may split a value (`<scriptPath>a<!-- -->b</scriptPath>`), is refused too."""
    path = jobs_repo / "jenkins/templates/folder.xml.j2"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    result = heps(jobs_repo, "jenkins", "render", "--out", str(jobs_repo / "out"))
    assert result.code == 2, result.text
    assert result.err.startswith("heps: error: jenkins/templates: job heps: XML with a")
    assert len(result.err.splitlines()) == 1 and "unexpected" not in result.err
