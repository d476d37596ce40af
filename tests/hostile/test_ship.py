"""Only the tested image ships, and a stopped run leaves nothing behind.

Real processes against the real Docker engine, the real registry and real git: two
`heps run` racing for one tag from two checkouts, SIGTERM/SIGINT/SIGKILL sent to a real
`heps run` in the middle of a smoke check, a rerun finishing a push left half done.
"""

from __future__ import annotations

import http.server
import io
import ipaddress
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from heps.core import settings
from heps.core.credentials import Credentials, Secret
from heps.core.errors import StageError
from heps.core.settings import RegistrySettings
from heps.images import push
from heps.systems import services
from heps.systems.engine import RECIPE_LABEL, RUN_LABEL
from heps.systems.registry import Registry
from tests.conftest import BUSYBOX, Env, free_port, read_json, simple_recipe, write_recipe


def registry_of(env: Env, namespace: str | None = None) -> Registry:
    creds = Credentials(env.registry.username, Secret(env.registry.password), "test")
    return Registry(RegistrySettings(env.registry.address, namespace or env.namespace), creds)


def git_checkout(repo: Path) -> None:
    """Make `repo` a git repository with everything committed (its own commit id)."""
    for command in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "recipes"],
    ):
        subprocess.run(["git", "-C", str(repo), *command], check=True, capture_output=True)


def start_heps(repo: Path, *args: str) -> subprocess.Popen[str]:
    """A real `heps` process with this test's environment (registry, namespace, state)."""
    command = [sys.executable, "-m", "heps.cli", "--repo", str(repo), *args]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )


def labelled(client: docker.DockerClient, recipe: str) -> list[dict[str, Any]]:
    """Containers (running or not) of `recipe`, as the engine lists them: one call, no
    per-container inspect that a container removed meanwhile would fail."""
    found = client.api.containers(all=True, filters={"label": f"{RECIPE_LABEL}={recipe}"})
    return [dict(c) for c in found]


def wait_for_container(
    client: docker.DockerClient, recipe: str, process: subprocess.Popen[str]
) -> dict[str, Any]:
    """The first running smoke container of `recipe` that `process` starts."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        running = [c for c in labelled(client, recipe) if c["State"] == "running"]
        if running:
            return running[0]
        time.sleep(0.2)
    process.kill()
    out, err = process.communicate(timeout=60)
    raise AssertionError(f"no running smoke container of {recipe}: {out}{err}")


def test_two_runs_race_for_one_version_and_exactly_one_wins(
    env: Env, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """Two checkouts, different Dockerfiles, the same base:1.0.0, both `heps run --all`
    at once: one pushes, the other fails naming the winner's digest; the registry holds
    the winner's tested image under every tag it reported."""
    checkouts = {}
    for side in ("a", "b"):
        repo = tmp_path / side
        (repo / "app-recipes").mkdir(parents=True)
        recipe = simple_recipe("base")
        recipe["smoke"]["commands"].append({"name": "settle", "run": ["sleep", "2"]})
        dockerfile = f"FROM {BUSYBOX}\nRUN echo base-{side} > /hello\n"
        write_recipe(repo, "base", recipe, Dockerfile=dockerfile)
        git_checkout(repo)
        checkouts[side] = repo
    runs = {
        side: start_heps(repo, "run", "--all", "--report", str(repo / "report.json"))
        for side, repo in checkouts.items()
    }
    outcome = {side: (p.wait(timeout=600), *p.communicate()) for side, p in runs.items()}
    codes = sorted(code for code, _, _ in outcome.values())
    assert codes == [0, 1], outcome
    winner = next(side for side, (code, _, _) in outcome.items() if code == 0)
    loser = "b" if winner == "a" else "a"
    won = read_json(checkouts[winner] / "report.json")["recipes"][0]
    lost = read_json(checkouts[loser] / "report.json")["recipes"][0]
    assert won["status"] == "built" and won["pushed"]
    assert lost["status"] == "failed" and not lost["pushed"] and lost["digest"] is None
    assert won["digest"] in lost["error"], lost["error"]  # names the other digest
    assert lost["failed_stage"] in ("push", "version")
    registry = registry_of(env)
    for reference in won["references"]:
        found = registry.config_digest("base", reference.rsplit(":", 1)[1])
        assert found is not None and found[0] == won["digest"]
        # the config digest is the image ID; that image says which Dockerfile made it
        hello = docker_client.containers.run(found[1], ["cat", "/hello"], remove=True)
        assert hello.decode().strip() == f"base-{winner}"
    assert registry.digest("base", lost["references"][1].rsplit(":", 1)[1]) is None


def test_an_untested_image_tagged_during_the_smoke_test_is_never_pushed(
    env: Env, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    """The reported case: while run A smoke-tests NAME:1.0.0, a merge-request run B
    (--no-push) in another checkout builds the same name and version from another
    Dockerfile (so the engine's local NAME:1.0.0 is B's) and fails its smoke test. A
    then pushes: the registry must hold A's tested image, not B's.

    A's last smoke check waits for a loopback HTTP server of this test, which answers
    only once B has finished: the order is forced, not left to timing."""
    name = f"mr-{uuid.uuid4().hex[:8]}"
    gate = threading.Event()
    server = _gate_server(gate)
    bridge = docker_client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    # dockerd leaves Gateway out when it is the subnet's first address (the default)
    gateway = bridge.get("Gateway") or str(next(ipaddress.ip_network(bridge["Subnet"]).hosts()))
    url = f"http://{gateway}:{server.server_address[1]}/"
    repos = {}
    for side in ("a", "b"):
        repos[side] = tmp_path / side
        (repos[side] / "app-recipes").mkdir(parents=True)
    recipe = simple_recipe(name)
    wait = f"until wget -q -O /dev/null {url}; do sleep 0.2; done"
    recipe["smoke"]["commands"].append({"name": "gate", "run": ["sh", "-c", wait]})
    write_recipe(
        repos["a"], name, recipe, Dockerfile=f"FROM {BUSYBOX}\nRUN echo {name}-a > /hello\n"
    )
    write_recipe(
        repos["b"], name, simple_recipe(name), Dockerfile=f"FROM {BUSYBOX}\nRUN echo b > /hello\n"
    )
    run_a = start_heps(repos["a"], "run", "--all", "--report", str(tmp_path / "a.json"))
    try:
        wait_for_container(docker_client, name, run_a)
        run_b = start_heps(repos["b"], "run", "--all", "--no-push")
        out, err = run_b.communicate(timeout=300)
        assert run_b.returncode == 1 and "[smoke]" in err, out + err
        local = docker_client.images.get(f"{env.repository(name)}:1.0.0")
        assert docker_client.containers.run(local.id, ["cat", "/hello"], remove=True) == b"b\n"
        gate.set()
        out, err = run_a.communicate(timeout=300)
    finally:
        gate.set()
        server.shutdown()
        if run_a.poll() is None:  # a failed assertion above: do not leave it running
            run_a.kill()
            run_a.communicate()
    assert run_a.returncode == 0, out + err
    entry = read_json(tmp_path / "a.json")["recipes"][0]
    found = registry_of(env).config_digest(name, "1.0.0")
    assert found is not None and found[0] == entry["digest"]
    tested = docker_client.containers.run(found[1], ["cat", "/hello"], remove=True)
    assert tested.decode().strip() == f"{name}-a"


def _gate_server(gate: threading.Event) -> http.server.ThreadingHTTPServer:
    """An HTTP server on every address (containers reach it through the bridge's
    gateway) answering 200 once `gate` is set, 503 before."""

    class Gate(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if gate.is_set() else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test's output is the runs' output."""

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Gate)  # noqa: S104
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_lost_race_after_the_push_is_never_reported_as_success(
    env: Env, docker_client: docker.DockerClient
) -> None:
    """Another image lands under the tag after ours: verification names its digest."""
    registry = registry_of(env)
    repository = env.repository("app")
    pushed = []
    for text in ("ours", "theirs"):
        image = docker_client.images.build(
            fileobj=_dockerfile(f"FROM {BUSYBOX}\nRUN echo {text} > /hello\n"), rm=True
        )[0]
        image.tag(repository, "1.0.0")
        for line in docker_client.images.push(
            repository, "1.0.0", stream=True, decode=True, auth_config=_auth(env)
        ):
            assert "error" not in line, line
        pushed.append((image.id, registry.digest("app", "1.0.0")))
    (ours_id, ours_digest), (_, theirs_digest) = pushed
    with pytest.raises(StageError, match="lost a race") as caught:
        push.verify(registry, "app", (f"{repository}:1.0.0",), ours_id, str(ours_digest))
    assert str(theirs_digest) in str(caught.value)


def _dockerfile(text: str) -> io.BytesIO:
    return io.BytesIO(text.encode())


def _auth(env: Env) -> dict[str, str]:
    return {"username": env.registry.username, "password": env.registry.password}


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_smoke_stops_removes_containers_pushes_nothing_and_reports(
    env: Env, docker_client: docker.DockerClient, signum: int, code: int
) -> None:
    name = f"sleeper-{uuid.uuid4().hex[:8]}"
    recipe = simple_recipe(name)
    recipe["smoke"]["commands"] = [{"name": "long", "run": ["sleep", "300"], "timeout": 600}]
    write_recipe(env.repo, name, recipe, Dockerfile=f"FROM {BUSYBOX}\nRUN echo x > /hello\n")
    child = simple_recipe("child")
    write_recipe(env.repo, "child", child, Dockerfile=_internal(name))
    report = env.repo / "report.json"
    process = start_heps(env.repo, "run", "--all", "--report", str(report))
    container = wait_for_container(docker_client, name, process)
    assert container["Labels"][RUN_LABEL]
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)  # a hang guard: the check would take 300 s
    assert process.returncode == code, out + err
    assert labelled(docker_client, name) == []
    body = read_json(report)
    assert body["interrupted"] == signal.Signals(signum).name
    entries = {e["name"]: e for e in body["recipes"]}
    assert entries[name]["status"] == "failed" and entries[name]["failed_stage"] == "smoke"
    assert "interrupted" in entries[name]["error"] and "not pushed" in entries[name]["error"]
    assert entries["child"]["status"] == "failed" and "interrupted" in entries["child"]["error"]
    registry = registry_of(env)
    for reference in entries[name]["references"]:
        assert registry.digest(name, reference.rsplit(":", 1)[1]) is None
    assert "[push]" not in err and "Traceback" not in err


def _internal(base: str) -> str:
    return f"ARG REGISTRY=x.invalid\nARG OWNER=heps\nFROM ${{REGISTRY}}/${{OWNER}}/{base}\n"


def test_containers_of_a_killed_run_are_removed_by_the_next_run(
    env: Env, docker_client: docker.DockerClient
) -> None:
    name = f"killed-{uuid.uuid4().hex[:8]}"
    recipe = simple_recipe(name)
    recipe["smoke"]["commands"] = [{"name": "long", "run": ["sleep", "300"], "timeout": 600}]
    write_recipe(env.repo, name, recipe, Dockerfile=f"FROM {BUSYBOX}\nRUN echo {name} > /hello\n")
    process = start_heps(env.repo, "run", "--all", "--no-push")
    stale = wait_for_container(docker_client, name, process)
    process.kill()  # SIGKILL: no handler runs, the container stays
    process.communicate(timeout=60)
    assert [c["Id"] for c in labelled(docker_client, name)] == [stale["Id"]]
    write_recipe(env.repo, name, simple_recipe(name))  # a quick smoke check this time
    again = start_heps(env.repo, "run", "--all", "--no-push")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, out + err
    assert f"removed container {stale['Id'][:12]} of run {stale['Labels'][RUN_LABEL]}" in err
    assert labelled(docker_client, name) == []


def test_a_rerun_completes_a_push_interrupted_between_the_two_tags(
    env: Env, docker_client: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state an interruption between the tags leaves (the immutable tag pushed, the
    version tag not) is made for real in a second namespace; the rerun tags the version
    with that digest after checking it, and builds nothing."""
    write_recipe(
        env.repo, "app", simple_recipe("app"), Dockerfile=f"FROM {BUSYBOX}\nRUN echo app > /hello\n"
    )
    git_checkout(env.repo)
    first = start_heps(env.repo, "run", "--all", "--report", str(env.repo / "first.json"))
    assert first.wait(timeout=300) == 0, first.communicate()
    entry = read_json(env.repo / "first.json")["recipes"][0]
    immutable = entry["references"][1].rsplit(":", 1)[1]
    half = f"{env.namespace}half"  # cleaned with the test's images (same prefix)
    half_repository = f"{env.registry.address}/{half}/app"
    image = docker_client.images.get(entry["references"][1])
    image.tag(half_repository, immutable)
    for line in docker_client.images.push(
        half_repository, immutable, stream=True, decode=True, auth_config=_auth(env)
    ):
        assert "error" not in line, line
    registry = registry_of(env, half)
    half_digest = registry.digest("app", immutable)
    assert half_digest is not None and registry.digest("app", "1.0.0") is None
    monkeypatch.setenv("HEPS_NAMESPACE", half)
    rerun = start_heps(env.repo, "run", "--all", "--report", str(env.repo / "rerun.json"))
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out + err
    assert "[build]" not in err and "completing an interrupted push" in err
    done = read_json(env.repo / "rerun.json")["recipes"][0]
    assert done["status"] == "built" and done["pushed"] and done["digest"] == half_digest
    assert registry.digest("app", "1.0.0") == half_digest
    assert registry.config_digest("app", "1.0.0") == (half_digest, image.id)


def test_services_down_signals_only_the_registry_it_started(tmp_path: Path) -> None:
    (tmp_path / "app-recipes").mkdir()
    cfg = settings.load(tmp_path, env={"HEPS_STATE_DIR": str(tmp_path / "state")})
    root = settings.embedded_credentials_file(cfg.state_dir).parent
    root.mkdir(parents=True)
    bystander = subprocess.Popen(["sleep", "120"])
    while not Path(f"/proc/{bystander.pid}/cmdline").read_bytes():  # until it has exec'd
        time.sleep(0.01)
    try:
        (root / "registry.pid").write_text(str(bystander.pid))
        (line,) = services.down(cfg)
        assert "not our registry; left alone" in line and "sleep 120" in line
        assert bystander.poll() is None  # still running: nothing was signalled
    finally:
        bystander.kill()
        bystander.wait()
    ours = services.RegistryService(root, f"127.0.0.1:{free_port()}", "u", "p" * 20)
    process = ours.start()
    assert services.down(cfg) == [f"registry: stopped (pid {process.pid})"]
    assert process.wait(timeout=20) is not None
    assert not (root / "registry.pid").exists()


def test_bad_namespace_and_missing_target_stage_fail_at_plan_with_exit_2(
    heps: Any, env: Env
) -> None:
    recipe = simple_recipe("app", build={"target": "runtime"})
    write_recipe(env.repo, "app", recipe, Dockerfile=f"FROM {BUSYBOX} AS build\nRUN true\n")
    result = heps(env.repo, "plan")
    assert result.code == 2
    assert (
        "heps: error: app-recipes/app/recipe.yaml: build.target: 'runtime' names no stage of "
        "app-recipes/app/Dockerfile (stages: build); name a `FROM ... AS runtime` stage"
    ) in result.err
    bad = heps(env.repo, "--namespace", "Team_A!", "plan")
    assert bad.code == 2 and "Traceback" not in bad.err
    assert "heps.yaml: registry.namespace: 'Team_A!' is not a repository path" in bad.err
