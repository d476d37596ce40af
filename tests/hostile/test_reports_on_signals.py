"""A Jenkins abort (SIGTERM) or Ctrl-C (SIGINT) at any point of a command still leaves the
reports it promised, naming the signal, and ends the programs it started.

Before, only `run`'s build phase handled the signals: a SIGTERM while a merge request's
review rendered its job templates killed `heps ci merge-request` with `run.json`
claiming a complete run and no `review.md`. The merge request here makes that phase slow
(a template looping), and `heps` is a real process of this installation, signalled.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest

from heps.systems.engine import RUN_LABEL
from tests.conftest import BUSYBOX, REPO_ROOT, Env, simple_recipe, write_recipe
from tests.pipeline.test_review import git

HEPS = Path(sys.executable).parent / "heps"
SLOW = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def _checkout(path: Path) -> str:
    """A checkout whose merge request makes its job templates render slowly; the base."""
    shutil.copytree(REPO_ROOT / "jenkins", path / "jenkins")
    (path / "app-recipes").mkdir()
    (path / "app-recipes/.keep").write_text("")
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "main")
    base = git(path, "rev-parse", "HEAD")
    folder = path / "jenkins/templates/folder.xml.j2"
    folder.write_text(SLOW + folder.read_text())
    git(path, "commit", "-qam", "slow templates")
    return base


def _renderer(pid: int, seconds: float = 60.0) -> int:
    """The pid of the template renderer `pid` started, once it runs."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for child in children:
            if "heps.ci.templating" in Path(f"/proc/{child}/cmdline").read_text():
                return int(child)
        time.sleep(0.05)
    raise AssertionError("the job templates were never rendered")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_merge_request_job_stopped_while_reviewing_leaves_every_report(
    env: Env, tmp_path: Path, signum: signal.Signals
) -> None:
    base = _checkout(tmp_path / "mr")
    out = tmp_path / "out"
    command = [str(HEPS), "--repo", str(env.repo), "ci", "merge-request"]
    # A suite started as a background job inherits SIGINT ignored, and so would heps (as
    # it should: Ctrl-C is not meant for background jobs); the job here is in a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        job = subprocess.Popen(
            [*command, "--checkout", str(tmp_path / "mr"), "--base", base, "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    renderer = _renderer(job.pid)
    job.send_signal(signum)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 128 + signum, err
    name = signal.Signals(signum).name
    assert err.splitlines()[-1].endswith(f"({name})") and "Traceback" not in err, err
    assert sorted(p.name for p in out.iterdir()) == [
        "junit.xml",
        "review.json",
        "review.md",
        "run.json",
    ]
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is False and name in run["error"], run
    assert name in json.loads((out / "review.json").read_text())["problems"][0]
    assert f"({name})" in (out / "review.md").read_text().split("stopped: ", 1)[1]
    assert not Path(f"/proc/{renderer}").exists(), "the template renderer outlived heps"


def test_a_merge_request_job_stopped_while_smoke_testing_exits_as_run_does(
    env: Env, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """The run phase handles the signal itself (its containers removed, nothing more
    started); the job still writes the review, and exits 143 as `heps run` does (it
    exited 1, as if a recipe had failed)."""
    checkout = tmp_path / "mr"
    write_recipe(checkout, "app", simple_recipe("app"), Dockerfile=f"FROM {BUSYBOX}\n")
    git(checkout, "init", "-q", "-b", "main")
    git(checkout, "add", "-A")
    git(checkout, "commit", "-qm", "main")
    base = git(checkout, "rev-parse", "HEAD")
    slow = simple_recipe("app", "1.0.1")
    slow["smoke"]["commands"][0]["run"] = ["sleep", "60"]
    write_recipe(checkout, "app", slow, Dockerfile=f"FROM {BUSYBOX}\nRUN echo app > /hello\n")
    git(checkout, "add", "-A")
    git(checkout, "commit", "-qm", "slow smoke")
    out = tmp_path / "out"
    command = [str(HEPS), "--repo", str(env.repo), "ci", "merge-request", "--checkout"]
    job = subprocess.Popen(
        [*command, str(checkout), "--base", base, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    smoking = {"label": RUN_LABEL, "ancestor": env.repository("app") + ":1.0.1"}
    while not docker_client.containers.list(filters=smoking):
        assert time.monotonic() < deadline and job.poll() is None, "no smoke container"
        time.sleep(0.1)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=60)
    assert job.returncode == 143, err
    run = json.loads((out / "run.json").read_text())
    assert run["interrupted"] == "SIGTERM", run
    assert "interrupted (SIGTERM)" in (out / "review.md").read_text()
