"""A command that promises reports leaves them, whatever ended it: `heps run --report
--junit` and `heps ci merge-request` write theirs naming the error (bad input: exit 2; a
bug: exit 1), with what the run did before it. The real engine and registry; the
unexpected error is injected where no input can cause it today."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from heps.ci import review
from heps.images import fingerprint
from tests.conftest import BUSYBOX, Env, read_json, simple_recipe, write_recipe
from tests.pipeline.test_promote import git


def junit_failures(path: Path) -> dict[str, str]:
    """testcase classname.name -> its failure message, of the failed ones."""
    cases = ET.parse(path).getroot().iter("testcase")  # noqa: S314 (written by this run)
    return {
        f"{c.get('classname')}.{c.get('name')}": failure.get("message", "")
        for c in cases
        if (failure := c.find("failure")) is not None
    }


def test_a_bug_while_planning_still_leaves_both_reports(
    heps: Any, env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_recipe(env.repo, "app", simple_recipe("app"), Dockerfile=f"FROM {BUSYBOX}\n")

    def compute(*_: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(fingerprint, "compute", compute)
    report, junit = tmp_path / "run.json", tmp_path / "junit.xml"
    result = heps(env.repo, "run", "--all", "--report", str(report), "--junit", str(junit))
    assert result.code == 1, result.text
    data = read_json(report)
    assert data["error"].startswith("heps run: unexpected RuntimeError (injected)"), data
    assert data["complete"] is False and data["recipes"] == []
    assert junit_failures(junit)["heps.run"].startswith("heps run: unexpected RuntimeError")


def test_bad_input_still_leaves_the_report_naming_it(heps: Any, env: Env, tmp_path: Path) -> None:
    folder = write_recipe(env.repo, "app", simple_recipe("app"), Dockerfile=f"FROM {BUSYBOX}\n")
    recipe = folder / "recipe.yaml"
    recipe.write_text(recipe.read_text() + "x-big: " + "9" * 5000 + "\n")
    report = tmp_path / "run.json"
    result = heps(env.repo, "run", "--all", "--report", str(report))
    assert result.code == 2, result.text
    assert "app-recipes/app/recipe.yaml:" in read_json(report)["error"]
    assert "integer of 5000 characters" in read_json(report)["error"]


def test_a_merge_request_job_that_meets_a_bug_leaves_every_report(
    heps: Any, env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run went through (its recipe built); the review met a bug: all four files
    are there, the run's with its results, both naming what stopped the job."""
    checkout = tmp_path / "mr"
    write_recipe(checkout, "app", simple_recipe("app"), Dockerfile=f"FROM {BUSYBOX}\n")
    git(checkout, "init", "-q", "-b", "main")
    git(checkout, "add", "-A")
    git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "main")
    base = git(checkout, "rev-parse", "HEAD")
    write_recipe(
        checkout,
        "app",
        simple_recipe("app", "1.0.1"),
        Dockerfile=f"FROM {BUSYBOX}\nRUN echo app > /hello\n",
    )
    git(checkout, "add", "-A")
    git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "change")

    def make(*_: Any) -> Any:
        return {}["injected"]

    monkeypatch.setattr(review, "make", make)
    out = tmp_path / "out"
    command = ["ci", "merge-request", "--checkout", str(checkout), "--base", base]
    result = heps(env.repo, *command, "--out", str(out))
    assert result.code == 1, result.text
    assert sorted(p.name for p in out.iterdir()) == [
        "junit.xml",
        "review.json",
        "review.md",
        "run.json",
    ]
    run = read_json(out / "run.json")
    assert [(r["name"], r["status"]) for r in run["recipes"]] == [("app", "built")]
    assert run["error"].startswith("heps ci merge-request: unexpected KeyError")
    assert "heps ci merge-request stopped: heps ci merge-request: unexpected KeyError" in (
        (out / "review.md").read_text()
    )
    assert read_json(out / "review.json")["problems"][0].startswith("heps ci merge-request stopped")
    assert "heps.run" in junit_failures(out / "junit.xml")
