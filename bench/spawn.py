"""The platform on one machine: from the spawn request to JupyterLab's /api answering,
for one user at a time and for ten at once, beside `docker run` of the same image to
its first /api answer (the floor), measured in the same run, interleaved with the spawns.

Two floors, both `docker run` of the pinned image: with the image's own CMD (`jupyter
lab`, the issue's floor) and with the spawned server's own command and environment
(`jupyterhub-singleuser`, on the platform's network so that it can reach the hub, as it
must before it listens). The ratios use the second, like with like: what is left is the
platform's overhead; the first shows what the hub's single-user extension itself costs.

A spawn is timed as a browser sees it: the POST of the spawn form, then the hub's
progress event stream (the pending page's), then the first answer of /user/NAME/api.
Prints where a spawn's seconds go (the phases the hub logs, heps_hub.phases), the
CPU-seconds a JupyterLab start costs (the container's cgroup counter when /api first
answers), and the ratios the design sets: spawn p50 / floor p50 (target <= 1.2) and
ten-at-once p95 / (10 x floor / cores) (target <= 1.5), and, right after the ten
spawns, as many `docker run`s of the spawned server's command at once: what the same
host gives ten starts without the platform at that moment. The image is the one the
testbed overlay pins for the profile, as `heps platform up` reports it; the bench says
so when another `heps platform up` retagged it during the run.

Uses this repository's testbed overlay (images built when missing), a platform of its
own on free ports and accounts made up for the run; it takes the platform down at the
end. `python bench/spawn.py [--single N] [--concurrent N]` or `bench/run.py platform`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests
import yaml

from heps_hub import phases

REPO = Path(__file__).resolve().parents[1]

HEPS = [sys.executable, "-m", "heps.cli", "--repo", str(REPO)]
APP = "ct-reconstruction"
# the figures (2-core build host, before this work), printed beside ours
BASELINE = {"floor": 2.67, "cpu": 3.3, "p50": 5.20, "p95": 8.15, "ten50": 40.2, "ten95": 41.5}
SHOWN = (  # between the POST, the hub's marks (heps_hub.phases) and the first /api answer
    "hub, before the spawner",
    "profile check",
    "user-init (app made meanwhile)",
    "app container start",
    "JupyterLab starting",
    "proxy route and redirect",
)


@dataclass(frozen=True)
class Start:
    seconds: float
    cpu: float
    """CPU-seconds of the JupyterLab container when /api first answered."""


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Ports free now, distinct (held together while the kernel picks them)."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


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


def cpu_seconds(container: docker.models.containers.Container) -> float:
    stats = container.client.api.stats(container.id, stream=False, one_shot=True)
    return float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9


DAEMONS = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2")


def daemons_cpu() -> float:
    """CPU-seconds of the Docker daemons and container shims on this host so far, with
    their reaped children (runc): shared with whatever else uses the engine meanwhile."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() in DAEMONS:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        except OSError:
            continue  # ended meanwhile
    return total / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Spent:
    """CPU-seconds spent during one phase of the bench, by whom."""

    starts: float
    hub: float
    daemons: float


def log_in(url: str, user: str) -> requests.Session:
    session = requests.Session()
    form = session.get(f"{url}/hub/oauth_login?next=%2Fhub%2Fhome", timeout=30)
    action = re.search(r'action="([^"]+)"', form.text)
    if not action:
        raise RuntimeError(f"{user}: no login form from the SSO testbed: {form.text[-300:]}")
    issuer = form.url.split("/interaction/")[0]
    done = session.post(issuer + action.group(1), data={"username": user, "password": f"{user}-pw"})
    if not done.url.endswith("/hub/home"):
        raise RuntimeError(f"{user}: login ended at {done.url}")
    return session


def ready(url: str, user: str, session: requests.Session, xsrf: str) -> bool:
    """Follow the spawn's progress events, as the pending page does, to "ready" (True)
    or "failed" (False)."""
    with session.get(
        f"{url}/hub/api/users/{user}/server/progress",
        params={"_xsrf": xsrf},
        headers={"Accept": "text/event-stream"},
        stream=True,
        timeout=300,
    ) as events:
        for line in events.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line.removeprefix("data:"))
                if event.get("ready") or event.get("failed"):
                    return bool(event.get("ready"))
    return False


def spawn(
    url: str, user: str, session: requests.Session, server: str, client: docker.DockerClient
) -> tuple[float, Start | None]:
    """POST the spawn form, follow the progress events, then GET the server's /api:
    (the POST's Unix time, Start), None when the spawn failed or took more than 300 s."""
    xsrf = session.cookies.get("_xsrf", path="/hub/") or ""
    posted, started = time.time(), time.perf_counter()
    session.post(f"{url}/hub/spawn", data={"profile": APP, "_xsrf": xsrf}, timeout=300)
    if not ready(url, user, session, xsrf):
        print(f"{user}: the spawn failed (see the hub's log above)", file=sys.stderr)
        return posted, None
    while time.perf_counter() - started < 300:
        answer = session.get(f"{url}/user/{user}/api", timeout=30, allow_redirects=False)
        if answer.status_code == 200 and answer.headers.get("content-type", "").startswith(
            "application/json"
        ):
            seconds = time.perf_counter() - started
            return posted, Start(seconds, cpu_seconds(client.containers.get(server)))
        time.sleep(0.05)  # ready, but the route is not answering yet
    print(f"{user}: no answer from /user/{user}/api after 300 s", file=sys.stderr)
    return posted, None


def stop(url: str, user: str, session: requests.Session) -> None:
    """Stop the user's server (the REST API, with the session's XSRF token) and wait."""
    xsrf = session.cookies.get("_xsrf", path="/hub/") or ""
    session.delete(f"{url}/hub/api/users/{user}/server", params={"_xsrf": xsrf}, timeout=120)
    while (
        session.get(f"{url}/user/{user}/api", timeout=30, allow_redirects=False).status_code == 200
    ):
        time.sleep(0.2)


@dataclass(frozen=True)
class Server:
    """What the spawner ran: its command, environment, network and /api path."""

    command: list[str]
    environment: list[str]
    network: str
    api: str


def served(client: docker.DockerClient, container: str) -> Server:
    config = client.api.inspect_container(container)
    env = config["Config"]["Env"]
    prefix = next(e.split("=", 1)[1] for e in env if e.startswith("JUPYTERHUB_SERVICE_PREFIX="))
    network = next(iter(config["NetworkSettings"]["Networks"]))
    hub = [e for e in env if e.startswith("JUPYTERHUB_")]  # the image's own HOME and user
    return Server(config["Config"]["Cmd"], hub, network, f"{prefix}api")


def floor(
    client: docker.DockerClient, image: str, like: Server | None = None, port: int = 0
) -> Start:
    """`docker run` of the image to its first /api answer: with its own CMD (JupyterLab),
    or with the command, environment and network the spawner gave a server (`like`)."""
    port, path = port or free_port(), like.api if like else "/api"
    extra = {"command": like.command, "environment": like.environment} if like else {}
    started = time.perf_counter()
    container = client.containers.run(
        image,
        detach=True,
        ports={"8888/tcp": ("127.0.0.1", port)},
        network=like.network if like else None,
        remove=False,
        **extra,
    )
    try:
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                    return Start(time.perf_counter() - started, cpu_seconds(container))
            except requests.ConnectionError:
                pass  # not listening yet
            if time.perf_counter() - started > 300:
                raise RuntimeError(f"{image}: no /api answer after 300 s")
            time.sleep(0.05)
    finally:
        container.remove(force=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def shares(posted: dict[str, float], answered: dict[str, float], log: str) -> dict[str, float]:
    """Mean seconds of each phase over the spawns: the hub's marks between the POST and
    the bench's first /api answer."""
    marks = phases.parse(log)
    spans: dict[str, list[float]] = {name: [] for name in SHOWN}
    for user, at in posted.items():
        times = marks.get(user)
        if not times or list(times) != list(phases.PHASES):
            continue  # a failed spawn
        edges = [at, *times.values(), answered[user]]
        for name, (begin, end) in zip(SHOWN, itertools.pairwise(edges), strict=True):
            spans[name].append(end - begin)
    return {name: statistics.mean(v) for name, v in spans.items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=10, help="spawns one at a time")
    parser.add_argument("--concurrent", type=int, default=10, help="spawns at once")
    args = parser.parse_args()
    client = docker.from_env()
    name, port = f"heps-bench-{uuid.uuid4().hex[:6]}", free_port()
    url = f"http://127.0.0.1:{port}"
    users = [f"bench{i:02d}" for i in range(args.single + args.concurrent)]
    one, ten = users[: args.single], users[args.single :]
    with tempfile.TemporaryDirectory() as tmp:
        accounts_file = Path(tmp) / "users.yaml"
        accounts_file.write_text(yaml.safe_dump(accounts(len(users))))
        up = [*HEPS, "platform", "up", "--name", name, "--port", str(port)]
        up += ["--sso-port", str(free_port()), "--users", str(accounts_file), "--apps", APP]
        done = subprocess.run(up, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"heps platform up failed:\n{done.stdout}{done.stderr}")
        found = re.search(rf"^image {APP}: (\S+)", done.stdout, re.M)
        if found is None:
            sys.exit(f"heps platform up named no image for {APP}:\n{done.stdout}")
        image = found.group(1)
        image_id = client.images.get(image).id
        runs, like = Runs(), None
        try:
            for user in one:  # the floors beside each spawn: all see the same load
                runs.floors.append(floor(client, image))
                session = log_in(url, user)
                runs.posted[user], start = spawn(url, user, session, f"{name}-{user}", client)
                if start is not None:
                    runs.answered[user] = runs.posted[user] + start.seconds
                    runs.single.append(start)
                    like = served(client, f"{name}-{user}")
                    stop(url, user, session)
                    runs.like.append(floor(client, image, like))
                print(
                    f"{user}: floor {runs.floors[-1]}, spawn {start}", file=sys.stderr, flush=True
                )
            sessions = [log_in(url, user) for user in ten]
            hub = [client.containers.get(f"{name}-{part}") for part in ("hub", "proxy")]
            before = sum(map(cpu_seconds, hub)), daemons_cpu()
            with ThreadPoolExecutor(len(ten)) as pool:
                for user, (at, start) in zip(
                    ten,
                    pool.map(
                        lambda pair: spawn(url, pair[0], pair[1], f"{name}-{pair[0]}", client),
                        zip(ten, sessions, strict=True),
                    ),
                    strict=True,
                ):
                    runs.together.append(start)
                    if start is not None:
                        runs.posted_ten[user], runs.answered_ten[user] = at, at + start.seconds
            runs.spent.append(
                Spent(
                    sum(s.cpu for s in runs.together if s is not None),
                    sum(map(cpu_seconds, hub)) - before[0],
                    daemons_cpu() - before[1],
                )
            )
            if like is not None:  # the same number of floors at once, right after
                before = sum(map(cpu_seconds, hub)), daemons_cpu()
                with ThreadPoolExecutor(len(ten)) as pool:
                    ports = free_ports(len(ten))  # ten threads picking one each could collide
                    runs.like_ten = list(pool.map(lambda p: floor(client, image, like, p), ports))
                runs.spent.append(
                    Spent(
                        sum(s.cpu for s in runs.like_ten),
                        sum(map(cpu_seconds, hub)) - before[0],
                        daemons_cpu() - before[1],
                    )
                )
            log = client.containers.get(f"{name}-hub").logs().decode(errors="replace")
        finally:
            subprocess.run([*HEPS, "platform", "down", "--name", name], capture_output=True)
        failed = [line for line in log.splitlines() if "Error" in line or "failed" in line]
        print("\n".join(failed[-10:]), file=sys.stderr)
    if client.images.get(image).id != image_id:
        print(f"NOTE: {image} was retagged during the run (another `heps platform up`)")
    report(image, image_id, runs, log)


@dataclass
class Runs:
    floors: list[Start] = field(default_factory=list)
    """`docker run`, the image's CMD"""
    like: list[Start] = field(default_factory=list)
    """`docker run`, the spawned server's command and environment"""
    single: list[Start] = field(default_factory=list)
    together: list[Start | None] = field(default_factory=list)
    posted: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    posted_ten: dict[str, float] = field(default_factory=dict)
    answered_ten: dict[str, float] = field(default_factory=dict)
    like_ten: list[Start] = field(default_factory=list)
    """as many `docker run`s of the spawned server's command at once, after the spawns"""
    spent: list[Spent] = field(default_factory=list)
    """CPU during the spawns at once, then during the floors at once"""


def phase_lines(spent: dict[str, float]) -> None:
    total = sum(spent.values()) or 1.0
    for name, seconds in spent.items():
        print(f"    {name:<28} {seconds:6.2f} s  {100 * seconds / total:5.1f} %")


def report(image: str, image_id: str, runs: Runs, log: str) -> None:
    p50, cores, base = statistics.median, os.cpu_count() or 1, BASELINE
    floor50 = p50(s.seconds for s in runs.floors)
    like50 = p50(s.seconds for s in runs.like) if runs.like else float("nan")
    one = [s.seconds for s in runs.single] or [float("nan")]
    ten = [s for s in runs.together if s is not None]
    many = [s.seconds for s in ten] or [float("nan")]
    if len(ten) < len(runs.together):
        print(f"{len(runs.together) - len(ten)} of {len(runs.together)} spawns at once failed")
    print(
        f"image {image} ({image_id[7:19]}); {cores} cores;"
        f" load average {' '.join(f'{a:.1f}' for a in os.getloadavg())}"
    )
    print(
        f"floor, docker run to /api, {len(runs.floors)} runs: image CMD (jupyter lab) p50"
        f" {floor50:.2f} s   (baseline {base['floor']} s); the spawned server's command"
        f" (jupyterhub-singleuser) p50 {like50:.2f} s"
    )
    cpu = [
        p50(s.cpu for s in group) if group else float("nan")
        for group in (runs.floors, runs.like, runs.single, ten)
    ]
    print(
        "CPU-seconds per JupyterLab start: floor p50 {:.2f} (CMD), {:.2f} (singleuser);"
        " spawned p50 {:.2f}; {} at once p50 {:.2f}   (target <= 1.5; baseline {})".format(
            cpu[0], cpu[1], cpu[2], len(ten), cpu[3], base["cpu"]
        )
    )
    print(
        f"spawn to /api, one user at a time ({len(one)}): p50 {p50(one):.2f} s"
        f"  p95 {percentile(one, 95):.2f} s;  p50 / floor p50 = {p50(one) / like50:.2f}"
        f" (like with like; {p50(one) / floor50:.2f} against the CMD floor)"
        f"   (target <= 1.2; baseline {base['p50']} / {base['floor']} ="
        f" {base['p50'] / base['floor']:.2f})"
    )
    phase_lines(shares(runs.posted, runs.answered, log))
    bound = len(many) * like50 / cores
    print(
        f"spawn to /api, {len(many)} at once: p50 {p50(many):.2f} s"
        f"  p95 {percentile(many, 95):.2f} s;  p95 / ({len(many)} x floor / {cores} cores"
        f" = {bound:.1f} s) = {percentile(many, 95) / bound:.2f}"
        f" ({percentile(many, 95) / (len(many) * floor50 / cores):.2f} against the CMD floor)"
        f"   (target <= 1.5; baseline p50 {base['ten50']} s, p95 {base['ten95']} s ="
        f" {base['ten95'] / (10 * base['floor'] / 2):.2f})"
    )
    phase_lines(shares(runs.posted_ten, runs.answered_ten, log))
    if runs.like_ten:
        floors = [s.seconds for s in runs.like_ten]
        print(
            f"floor, {len(floors)} docker runs of the spawned server's command at once, right"
            f" after: p95 {percentile(floors, 95):.2f} s = {percentile(floors, 95) / bound:.2f}"
            f" x the bound; the spawns' p95 / theirs = "
            f"{percentile(many, 95) / percentile(floors, 95):.2f} (seconds apart)"
        )
    for what, spent in zip(("the spawns", "the docker runs"), runs.spent, strict=False):
        print(
            f"CPU-seconds during {what} at once: JupyterLabs {spent.starts:.1f} (at their"
            f" first answer), hub and proxy {spent.hub:.1f}, Docker daemons {spent.daemons:.1f}"
        )


if __name__ == "__main__":
    main()
