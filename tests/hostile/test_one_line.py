"""Odd but valid input that once ended in a traceback: each is one line and its exit code,
most through a real `heps` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from heps.gitops import sources
from tests.conftest import BUSYBOX, Env, simple_recipe, write_recipe
from tests.hostile.test_bounded_input import one_error_line
from tests.pipeline.test_promote import git, overlays

HEPS = str(Path(sys.executable).parent / "heps")


def heps_process(cwd: Path, *args: str, stdin: str = "") -> tuple[int, str, str]:
    done = subprocess.run(
        [HEPS, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stdout, done.stderr


def committed(env: Env, dockerfile: str = f"FROM {BUSYBOX}\nRUN echo app > /hello\n") -> None:
    write_recipe(env.repo, "app", simple_recipe("app"), Dockerfile=dockerfile)
    overlays(env.repo, ["app"])
    git(env.repo, "init", "-q", "-b", "main")
    git(env.repo, "add", "-A")
    git(env.repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "initial")


def test_an_unclosed_quote_in_an_arg_names_the_dockerfile_line(env: Env) -> None:
    committed(env, f'ARG A="unclosed\nFROM {BUSYBOX}\n')
    code, _, err = heps_process(env.repo, "plan")
    assert code == 2, err
    assert "app-recipes/app/Dockerfile:1: No closing quotation" in one_error_line(err)


def test_a_reflog_date_since_is_read_by_git(env: Env) -> None:
    committed(env)
    code, out, err = heps_process(env.repo, "plan", "--since", "HEAD@{100 years ago}")
    assert code == 0, err
    assert "Traceback" not in err and "unchanged" in out


@pytest.mark.parametrize(
    ("report", "field"),
    [
        ({"recipes": [{"name": "app", "status": "done"}]}, "recipes[0].status: not one of"),
        ({"recipes": [{"name": "app", "smoke": [1]}]}, "recipes[0].smoke[0]: not an object"),
        ({"recipes": [{"name": 5}]}, "recipes[0].name: not a string"),
        ({"recipes": [{"name": "app", "failed_stage": "x"}]}, "failed_stage: not one of"),
        ({"runs": []}, "recipes: not a list"),
        ([[[[]]]], "recipes: not a list"),
    ],
)
def test_a_malformed_report_for_review_and_promote_is_one_line(
    env: Env, tmp_path: Path, report: Any, field: str
) -> None:
    committed(env)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(report))
    for verb in (["review", "--base", "HEAD"], ["promote", "--overlay", "testbed"]):
        code, _, err = heps_process(env.repo, *verb, "--report", str(path))
        assert code == 2, err
        assert field in one_error_line(err), err


def test_the_hook_given_a_commit_the_repository_lacks_is_one_line(tmp_path: Path) -> None:
    repo = tmp_path / "shared.git"
    git(tmp_path, "init", "-q", "--bare", str(repo))
    updates = f"{'a' * 40} {'b' * 40} refs/heads/main\n{'a' * 40} {'c' * 40} refs/heads/topic\n"
    code, out, err = heps_process(
        tmp_path, "hook", "post-receive", "--git-dir", str(repo), stdin=updates
    )
    assert code == 1
    assert one_error_line(err).startswith("heps: error: bbbbbbbbbbbb: git diff failed: ")
    assert "refs/heads/topic: not main; nothing to do here" in out  # the next update goes on


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"- username: a\n  password: \xff\xfe\n", "not UTF-8"), (b"a: " + b"[" * 5000, "nesting")],
)
def test_a_hostile_users_file_is_one_line(tmp_path: Path, content: bytes, problem: str) -> None:
    users = tmp_path / "users.yaml"
    users.write_bytes(content)
    (tmp_path / "app-recipes").mkdir()
    environ = {**os.environ, "HEPS_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [HEPS, "platform", "up", "--users", str(users)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert problem in one_error_line(done.stderr)


def test_a_bug_in_a_verb_is_one_line_and_a_kept_traceback(
    heps: Any, env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    committed(env)

    def broken(*_: Any) -> Any:
        return [][1]  # a bug, as any IndexError would be

    monkeypatch.setattr(sources, "current", broken)
    result = heps(env.repo, "status")
    assert result.code == 1
    line = one_error_line(result.err)
    assert line.startswith("heps: error: heps status: unexpected IndexError")
    kept = Path(line.rsplit(" ", 1)[1])
    assert kept.parent == tmp_path / "state" / "tracebacks"
    assert kept.read_text().rstrip().endswith("IndexError: list index out of range")
