"""The platform on one machine: from the spawn request to JupyterLab's /api answering,
for one user at a time and for ten at once, the hub's memory with ten servers, beside
`docker run` of the same image to its first /api answer (the floor).

Uses this repository's testbed overlay with its images already present (`make run`
first), a platform of its own on free ports, and accounts made up for the run; it takes
the platform down at the end. `python bench/spawn.py` or `bench/run.py platform`.
"""

from __future__ import annotations

import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
HEPS = [sys.executable, "-m", "heps.cli", "--repo", str(REPO)]
APP = "ct-reconstruction"
IMAGE = "registry.heps.ihep.ac.cn/heps/ct-reconstruction:1.0.0"
SINGLE, CONCURRENT = 5, 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accounts(count: int) -> list[dict[str, object]]:
    return [
        {
            "username": f"bench{i:02d}",
            "password": f"bench{i:02d}-pw",
            "uidNumber": 21000 + i,
            "gidNumber": 20001,
            "email": f"bench{i:02d}@ihep.ac.cn",
            "email_verified": True,
            "groups": [{"name": "heps-users", "gid": 20001}],
        }
        for i in range(count)
    ]


def log_in(url: str, user: str) -> requests.Session:
    session = requests.Session()
    form = session.get(f"{url}/hub/oauth_login?next=%2Fhub%2Fhome", timeout=30)
    action = re.search(r'action="([^"]+)"', form.text)
    assert action, form.text[-500:]
    issuer = form.url.split("/interaction/")[0]
    done = session.post(issuer + action.group(1), data={"username": user, "password": f"{user}-pw"})
    assert done.url.endswith("/hub/home"), done.url
    return session


def spawn_seconds(url: str, user: str, session: requests.Session) -> float:
    """POST the spawn form, then poll the server's /api: seconds until it answers."""
    xsrf = session.cookies.get("_xsrf", path="/hub/") or ""
    started = time.perf_counter()
    session.post(f"{url}/hub/spawn", data={"profile": APP, "_xsrf": xsrf}, timeout=120)
    while True:
        answer = session.get(f"{url}/user/{user}/api", timeout=30, allow_redirects=False)
        if answer.status_code == 200 and "version" in answer.text:
            return time.perf_counter() - started
        if time.perf_counter() - started > 300:
            raise RuntimeError(f"{user}: no answer from /user/{user}/api after 300 s")
        time.sleep(0.05)


def stop(url: str, user: str, session: requests.Session) -> None:
    """Stop the user's server (the REST API, with the session's XSRF token) and wait."""
    xsrf = session.cookies.get("_xsrf", path="/hub/") or ""
    session.delete(f"{url}/hub/api/users/{user}/server", params={"_xsrf": xsrf}, timeout=120)
    while (
        session.get(f"{url}/user/{user}/api", timeout=30, allow_redirects=False).status_code == 200
    ):
        time.sleep(0.2)


def one_at_a_time(url: str, user: str) -> float:
    session = log_in(url, user)
    seconds = spawn_seconds(url, user, session)
    stop(url, user, session)
    return seconds


def floor_seconds(client: docker.DockerClient) -> float:
    """`docker run` of the image (its own CMD: JupyterLab) to its first /api answer."""
    port = free_port()
    started = time.perf_counter()
    container = client.containers.run(
        IMAGE, detach=True, ports={"8888/tcp": ("127.0.0.1", port)}, remove=False
    )
    try:
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api", timeout=2).status_code == 200:
                    return time.perf_counter() - started
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
    finally:
        container.remove(force=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def hub_memory(client: docker.DockerClient, name: str) -> float:
    stats = client.containers.get(f"{name}-hub").stats(stream=False)
    return float(stats["memory_stats"]["usage"]) / 2**20


def main() -> None:
    client = docker.from_env()
    name, port = f"heps-bench-{uuid.uuid4().hex[:6]}", free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        users = Path(tmp) / "users.yaml"
        users.write_text(yaml.safe_dump(accounts(SINGLE + CONCURRENT)))
        up = [*HEPS, "platform", "up", "--name", name, "--port", str(port)]
        up += ["--sso-port", str(free_port()), "--users", str(users), "--apps", APP]
        subprocess.run(up, check=True, capture_output=True)
        try:
            floor = [floor_seconds(client) for _ in range(SINGLE)]
            single = [one_at_a_time(url, f"bench{i:02d}") for i in range(SINGLE)]
            names = [f"bench{i:02d}" for i in range(SINGLE, SINGLE + CONCURRENT)]
            sessions = [log_in(url, user) for user in names]
            with ThreadPoolExecutor(CONCURRENT) as pool:
                pairs = zip(names, sessions, strict=True)
                ten = list(pool.map(lambda pair: spawn_seconds(url, *pair), pairs))
            memory = hub_memory(client, name)
        finally:
            subprocess.run([*HEPS, "platform", "down", "--name", name], capture_output=True)
    report(floor, single, ten, memory)


def report(floor: list[float], single: list[float], ten: list[float], memory: float) -> None:
    p50 = statistics.median
    print(f"docker run {IMAGE} to /api (floor), {SINGLE} runs: p50 {p50(floor):.2f} s")
    print(
        f"spawn request to /api, one user at a time ({SINGLE}): p50 {p50(single):.2f} s"
        f"  p95 {percentile(single, 95):.2f} s   (target p50 < 3 s)"
    )
    print(
        f"spawn request to /api, {CONCURRENT} at once: p50 {p50(ten):.2f} s"
        f"  p95 {percentile(ten, 95):.2f} s   (target p95 < 10 s)"
    )
    print(f"hub memory with {CONCURRENT} servers running: {memory:.0f} MiB")


if __name__ == "__main__":
    main()
