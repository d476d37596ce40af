"""Nothing lost: a run killed between push and report, a full disk, an unexpected error
in one recipe; each with the real engine, registry, git and `heps` processes."""

from __future__ import annotations

import errno
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heps.core.errors import ConfigError, TemporaryError
from heps.core.settings import RegistrySettings
from heps.images import lint
from heps.images.journal import HOLD
from heps.systems.registry import Registry
from tests.conftest import BUSYBOX, Env, read_json, simple_recipe, write_recipe
from tests.pipeline.test_promote import git, overlays
from tests.pipeline.test_run import registry_of


def committed_app(env: Env, name: str = "app") -> None:
    write_recipe(
        env.repo,
        name,
        simple_recipe(name),
        Dockerfile=f"FROM {BUSYBOX}\nRUN echo {name} > /hello\n",
    )
    overlays(env.repo, [name])
    git(env.repo, "init", "-q", "-b", "main")
    git(env.repo, "add", "-A")
    git(env.repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "initial")


def heps_process(repo: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "heps"), "--repo", str(repo), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def test_a_run_killed_between_push_and_report_is_reported_and_promoted_by_the_next(
    heps: Any, env: Env, tmp_path: Path
) -> None:
    committed_app(env)
    gate = tmp_path / "pushed"
    first = tmp_path / "first.json"
    killed = heps_process(env.repo, "run", "app", "--report", str(first), **{HOLD: str(gate)})
    deadline = time.monotonic() + 300
    while not gate.exists():  # the gate: the push is confirmed and journalled, no report yet
        assert killed.poll() is None, killed.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert not first.exists() or read_json(first)["recipes"][0]["digest"] is None

    status = heps(env.repo, "status", "--overlay", "testbed")
    assert status.code == 0, status.text
    left = [line for line in status.out.splitlines() if line.startswith("pushed by run")]
    assert len(left) == 1 and "app " in left[0], status.out

    second = tmp_path / "second.json"
    result = heps(env.repo, "run", "app", "--report", str(second), "--promote", "testbed")
    assert result.code == 0, result.text
    entry = read_json(second)["recipes"][0]
    assert entry["status"] == "skipped" and entry["digest"].startswith("sha256:")
    assert entry["detail"].startswith("pushed by interrupted run ")
    pinned = (env.repo / "k8s-overlays/overlays/testbed/kustomization.yaml").read_text()
    assert entry["digest"] in pinned
    assert "testbed: committed" in result.out
    again = heps(env.repo, "status", "--overlay", "testbed")
    assert "pushed by run" not in again.out  # reported once, then the journal forgets it


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, filled to the last byte by the test that wants it full."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def fill(folder: Path) -> None:
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as exc:  # full: what the test wants
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_full_report_disk_loses_no_push(
    heps: Any, env: Env, small_disk: Path, tmp_path: Path
) -> None:
    committed_app(env)
    fill(small_disk)
    full = heps_process(env.repo, "run", "app", "--report", str(small_disk / "run.json"))
    out, err = full.communicate()
    assert full.returncode == 2, out + err
    errors = [line for line in err.splitlines() if line.startswith("heps: error:")]
    assert len(errors) == 1 and f"no space left on the device of {small_disk}" in errors[0]
    assert "Traceback" not in err
    assert not (small_disk / "run.json").exists()

    report = tmp_path / "run.json"
    again = heps(env.repo, "run", "app", "--report", str(report), "--promote", "testbed")
    assert again.code == 0, again.text
    entry = read_json(report)["recipes"][0]
    assert entry["detail"].startswith("pushed by interrupted run ")
    assert (
        entry["digest"]
        in (env.repo / "k8s-overlays/overlays/testbed/kustomization.yaml").read_text()
    )


def test_a_full_state_disk_pushes_nothing_and_says_where(
    heps: Any, env: Env, small_disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed_app(env)
    monkeypatch.setenv("HEPS_STATE_DIR", str(small_disk / "state"))
    (small_disk / "state").mkdir()
    fill(small_disk)
    report = tmp_path / "run.json"
    result = heps(env.repo, "run", "app", "--report", str(report))
    assert result.code == 1, result.text
    entry = read_json(report)["recipes"][0]
    assert entry["failed_stage"] == "push" and entry["digest"] is None
    assert entry["error"].startswith("not pushed: cannot record the push: no space left")
    assert str(small_disk / "state" / "journal") in entry["error"]
    assert registry_of(env).digest("app", "1.0.0") is None  # nothing left the host


def test_an_unexpected_error_in_one_recipe_fails_it_alone_with_a_traceback_file(
    heps: Any, env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("good", "bad"):
        write_recipe(
            env.repo,
            name,
            simple_recipe(name),
            Dockerfile=f"FROM {BUSYBOX}\nRUN echo {name} > /hello\n",
        )
    real = lint.lint

    def lint_with_a_bug(graph: Any, name: str, settings: Any) -> Any:
        if name == "bad":
            return {}["no such key"]  # a bug, as a KeyError in any stage would be
        return real(graph, name, settings)

    monkeypatch.setattr(lint, "lint", lint_with_a_bug)
    report = tmp_path / "run.json"
    result = heps(env.repo, "run", "--all", "--report", str(report))
    assert result.code == 1, result.text
    assert "Traceback" not in result.text
    entries = {e["name"]: e for e in read_json(report)["recipes"]}
    assert entries["good"]["status"] == "built" and entries["good"]["pushed"]
    bad = entries["bad"]
    assert (bad["status"], bad["failed_stage"]) == ("failed", "lint")
    assert bad["error"].startswith("lint of bad: unexpected KeyError")
    kept = Path(bad["error"].rsplit(" ", 1)[1])
    assert kept.parent == tmp_path / "state" / "tracebacks"
    assert "Traceback (most recent call last)" in kept.read_text()


class _V2(http.server.BaseHTTPRequestHandler):
    """Answers /v2/ as a distribution registry does, until the test stops it."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_: Any) -> None:
        return


def test_a_registry_lost_after_it_answered_is_an_outage_not_a_bad_setting() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _V2)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    registry = Registry(RegistrySettings(f"127.0.0.1:{server.server_address[1]}", "heps"), None)
    registry.check()
    server.shutdown()
    server.server_close()
    with pytest.raises(TemporaryError, match="connection lost"):
        registry.digest("app", "1.0.0")
    never = Registry(RegistrySettings(f"127.0.0.1:{server.server_address[1]}", "heps"), None)
    with pytest.raises(ConfigError, match="cannot connect"):
        never.check()  # never answered: the host or the service is wrong (exit 2)
