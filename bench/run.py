"""Benchmarks for the pipeline's performance targets (DESIGN.md), figure beside target.

1. `heps plan` on a generated tree of 500 recipes (target < 1 s), with every image
   already in a real registry (the common "nothing changed" case) and with none;
   `scale`: on 5,000 recipes in chains, its time, peak memory and ratio to its own 500.
2. `heps promote` into an overlay of 1,000 manifests (target < 2 s), and the git diff
   touching only the pinned lines.
3. A no-op `heps run --all` on the bundled tree (target < 3 s); builds it first if the
   embedded registry lacks it (minutes, once).
4. The pipeline's own overhead against a plain `docker build` of the same recipe.
5. The scheduler: speed at 5,000 nodes and the policy comparisons on the openb trace
   (bench/scheduler_bench.py).
6. `makespan` (not in the default set): a first run's makespan against its lower bound,
   from that run's own report (HEPS_BENCH_REPORT, default reports/first-run.json).
7. The platform on one machine (bench/spawn.py): spawn to JupyterLab, 1 and 10 users.

Run with `tox -e bench` or `make bench`. Results go to stdout; record them in
docs/benchmarks.md. Every time is wall seconds of the whole `heps` process, so the CPU
its registry spends on the same cores counts in it; `plan` prints that CPU too. A plan
after the first reads the state folder's caches, as a second plan on a host does.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from heps.core import settings
from heps.images import fingerprint, graph, recipes
from heps.systems.services import RegistryService

REPO = Path(__file__).resolve().parents[1]
HEPS = [sys.executable, "-m", "heps.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(command: list[str], env: dict[str, str], runs: int = 3) -> tuple[float, float]:
    """Wall time of a command's first run and the median of the next `runs`."""
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times[0], statistics.median(times[1:])


def generate_tree(root: Path, count: int = 500, roots: int = 20) -> None:
    """`count` recipes in chains of depth count/roots, each with three context files."""
    for i in range(count):
        name = f"app-{i:03d}"
        folder = root / "app-recipes" / name
        folder.mkdir(parents=True)
        base = (
            "FROM debian:12.5\n"
            if i < roots
            else (f"ARG REGISTRY\nARG OWNER\nFROM ${{REGISTRY}}/${{OWNER}}/app-{i - roots:03d}\n")
        )
        (folder / "Dockerfile").write_text(base + "COPY . /opt/app\nUSER 1000\n")
        (folder / "recipe.yaml").write_text(
            f"name: {name}\nversion: 1.0.{i}\ndescription: generated\n"
            "smoke: {commands: [{name: ok, run: ['true']}]}\n"
        )
        for j in range(3):
            (folder / f"file{j}.py").write_text(f"# {name} {j}\n" + "x = 1\n" * 200)


def put_layerless_image(
    session: requests.Session, repository: str, tag: str, labels: dict[str, str]
) -> str:
    """Put `repository:tag` (its /v2/ URL) through the registry's API: a config blob
    carrying `labels` and a manifest without layers, as a pushed image would have.
    Returns the manifest's digest."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    start = session.post(f"{repository}/blobs/uploads/")
    start.raise_for_status()
    location = start.headers["Location"]
    sep = "&" if "?" in location else "?"
    session.put(f"{location}{sep}digest={digest}", data=config).raise_for_status()
    media = "application/vnd.docker.distribution.manifest.v2+json"
    manifest = {
        "schemaVersion": 2,
        "mediaType": media,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": len(config),
            "digest": digest,
        },
        "layers": [],
    }
    put = session.put(
        f"{repository}/manifests/{tag}", json=manifest, headers={"Content-Type": media}
    )
    put.raise_for_status()
    return put.headers["Docker-Content-Digest"]


def upload_labels_only_images(
    registry: RegistryService, namespace: str, repo: Path
) -> dict[str, str]:
    """Put an image per recipe in the registry (`put_layerless_image`) carrying its
    fingerprint labels. Returns each recipe's manifest digest."""
    cfg = settings.Settings(
        repo=repo, registry=settings.RegistrySettings(registry.address, namespace)
    )
    tree = graph.resolve(recipes.discover(cfg), cfg.registry)
    fps = fingerprint.compute(tree, None)
    session = requests.Session()
    session.auth = (registry.username, registry.password)
    url = f"http://{registry.address}/v2/{namespace}"
    return {
        name: put_layerless_image(
            session,
            f"{url}/{name}",
            tree.nodes[name].recipe.version,
            {
                fingerprint.LABEL_FULL: fps[name].full,
                fingerprint.LABEL_INPUTS: fps[name].inputs,
                fingerprint.LABEL_PARTS: json.dumps(fps[name].parts, sort_keys=True),
            },
        )
        for name in tree.order
    }


@contextmanager
def bench_registry(root: Path) -> Iterator[tuple[RegistryService, dict[str, str]]]:
    """A real registry of the benchmark's own, and the environment `heps` needs for it."""
    registry = RegistryService(
        root / "registry", f"127.0.0.1:{free_port()}", "bench", secrets.token_urlsafe(16)
    )
    process = registry.start()
    try:
        yield (
            registry,
            {
                **os.environ,
                "HEPS_REGISTRY": registry.address,
                "HEPS_NAMESPACE": "bench",
                "HEPS_REGISTRY_USERNAME": registry.username,
                "HEPS_REGISTRY_PASSWORD": registry.password,
                "HEPS_CA_BUNDLE": "",
                "HEPS_STATE_DIR": str(root / "state"),  # a cold label cache
            },
        )
    finally:
        process.terminate()


def previous(figure: str) -> str:
    """The result docs/benchmarks.md records for the row whose figure starts `figure`."""
    for line in (REPO / "docs" / "benchmarks.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith(figure):
            return f"docs/benchmarks.md: {cells[1]}"
    return "docs/benchmarks.md: none yet"


def measured(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak memory (MiB) of one run of `command`, from the kernel."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)}: exit {os.waitstatus_to_exitcode(status)}")
    return seconds, usage.ru_maxrss / 1024


def cpu_seconds(registry: RegistryService) -> float:
    """CPU the registry's process has spent so far (user and system), from /proc."""
    pid = (registry.root / "registry.pid").read_text().strip()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


FLOOR_CLIENT = """
import base64, http.client, os, sys, threading
host, namespace, tags = sys.argv[1], sys.argv[2], sys.argv[3:]
auth = "Basic " + base64.b64encode(os.environ["BENCH_AUTH"].encode()).decode()
accept = "application/vnd.docker.distribution.manifest.v2+json"
def ask(part):  # one kept-alive connection, one authenticated GET per tag
    connection = http.client.HTTPConnection(host)
    for name, _, tag in (t.partition(":") for t in part):
        path = f"/v2/{namespace}/{name}/manifests/{tag}"
        connection.request("GET", path, headers={"Authorization": auth, "Accept": accept})
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 200, (path, answer.status)
threads = [threading.Thread(target=ask, args=(tags[i::8],)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
"""
"""The floor of a plan with every image present: its 500 manifest look-ups, each
authenticated (the registry checks the htpasswd entry, bcrypt, on every request), from a
bare client in a process of its own: the standard library, 8 connections as heps uses, no
parsing, no caches, nothing else. No correct plan asks fewer: the registry API has no
request answering for several tags, and a plan must not trust a local record of what the
registry held (an image deleted there must plan as missing)."""


def floor_lookups(registry: RegistryService, env: dict[str, str], repo: Path) -> list[str]:
    """The command running `FLOOR_CLIENT` for every recipe's version tag."""
    cfg = settings.Settings(
        repo=repo, registry=settings.RegistrySettings(registry.address, "bench")
    )
    tags = [f"{r.name}:{r.version}" for r in recipes.discover(cfg)]
    env["BENCH_AUTH"] = f"{registry.username}:{registry.password}"
    return [sys.executable, "-I", "-c", FLOOR_CLIENT, registry.address, "bench", *tags]


def baseline_heps() -> list[str] | None:
    """`heps` of another checkout to time in the same run (HEPS_BENCH_BASELINE: a checkout
    with its own .venv, e.g. of 3ddb92e, the commit the targets are ratios of)."""
    other = os.environ.get("HEPS_BENCH_BASELINE")
    return [str(Path(other) / ".venv" / "bin" / "python"), "-m", "heps.cli"] if other else None


def bench_plan_500() -> None:
    baseline = baseline_heps()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_tree(root / "repo")
        with bench_registry(root) as (registry, env):
            command = [*HEPS, "--repo", str(root / "repo"), "plan"]
            _, empty = timed(command, env)
            upload_labels_only_images(registry, "bench", root / "repo")
            cold, warm = timed(command, env)
            before = cpu_seconds(registry)
            out = subprocess.run(command, env=env, capture_output=True, text=True).stdout
            served = cpu_seconds(registry) - before
            assert "0 to build, 500 unchanged" in out, out[-300:]
            floor = floor_lookups(registry, env, root / "repo")
            _, bare = timed(floor, env)
            before = cpu_seconds(registry)
            subprocess.run(floor, env=env, check=True)
            served_bare = cpu_seconds(registry) - before
            if baseline:  # its own state folder: its label cache is its own
                other = {**env, "HEPS_STATE_DIR": str(root / "state-baseline")}
                _, theirs = timed([*baseline, "--repo", str(root / "repo"), "plan"], other)
    figure = "`heps plan`, 500 generated recipes, all unchanged in the registry, labels cached"
    print(
        f"heps plan, 500 recipes, all unchanged, labels cached:  {warm:.2f} s   "
        f"(target < 1 s; {previous(figure)})"
    )
    if baseline:
        print(
            f"  the baseline's plan, same tree and registry:         {theirs:.2f} s   "
            f"(heps {warm / theirs:.2f}x of it, target 0.3x; the floor {bare / theirs:.2f}x)"
        )
    print(
        f"  floor: its 500 look-ups alone, a bare client:        {bare:.2f} s   "
        f"(the registry's CPU {served_bare:.2f} s; heps: {served:.2f} s)"
    )
    print(
        f"heps plan, 500 recipes, all unchanged, first lookup:   {cold:.2f} s   "
        f"(target < 1 s; {previous('same, first lookup')})"
    )
    print(
        f"heps plan, 500 recipes, registry empty:                {empty:.2f} s   "
        f"(target < 1 s; {previous('same, registry empty')})"
    )


def bench_scale() -> None:
    """`heps plan` on 5,000 recipes in chains of 25 (registry empty), against the same
    on 500: time, peak memory and the ratio (target: 3x 3ddb92e's 500, within 300 MB)."""
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for count in (500, 5000):
            generate_tree(root / f"repo{count}", count=count, roots=count // 25)
        with bench_registry(root) as (_, env):
            for count in (500, 5000):
                command = [*HEPS, "--repo", str(root / f"repo{count}"), "plan"]
                measured(command, env)  # warm-up: the file cache, the interpreter's bytecode
                done = [measured(command, env) for _ in range(3)]
                runs[count] = (
                    statistics.median(s for s, _ in done),
                    max(m for _, m in done),
                )
    (small, _), (large, peak) = runs[500], runs[5000]
    print(
        f"heps plan, 5000 recipes in chains, registry empty:   {large:.2f} s, peak {peak:.0f} MiB, "
        f"{large / small:.1f}x its 500 ({small:.2f} s)   "
        f"(target: 3x 3ddb92e's 500, 300 MB; {previous('`heps plan`, 5,000')})"
    )


def workload(index: int, image: str) -> str:
    """A hand-written-looking Deployment: comments, odd quoting, flow maps, blank lines."""
    return (
        f"# workload {index}: keep this comment\napiVersion: apps/v1\nkind: Deployment\n"
        f"metadata:\n  name: w{index}\n  labels: {{app: \"w{index}\", team: 'beamline'}}\n"
        f"spec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: w{index}}}\n\n"
        f"  template:\n    metadata:\n      labels: {{app: w{index}}}\n    spec:\n"
        f'      containers:\n        - name: main\n          image: "{image}"   # pinned by heps\n'
        f'          args: ["--port",   "8888"]\n'
        f"      initContainers:\n        - {{name: init, image: 'busybox:1.36'}}\n"
    )


def bench_pin_1000() -> None:
    """`heps promote` of 100 apps into an overlay of 1,000 manifests, from a report, with
    every digest read back from a real registry; then what git says changed."""
    apps, files = 100, 1000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = root / "repo"
        generate_tree(repo, count=apps, roots=apps)
        with bench_registry(root) as (registry, env):
            digests = upload_labels_only_images(registry, "bench", repo)
            overlay = repo / "k8s-overlays" / "overlays" / "bench"
            overlay.mkdir(parents=True)
            names = sorted(digests)
            for i in range(files):
                image = f"{registry.address}/bench/{names[i % apps]}:0.9.0"
                (overlay / f"w{i:04d}.yaml").write_text(workload(i, image))
            entries = [  # the tag each was uploaded under: promotion checks it holds the digest
                {
                    "name": name,
                    "version": f"1.0.{int(name[4:])}",
                    "status": "built",
                    "image": f"{registry.address}/bench/{name}:1.0.{int(name[4:])}",
                    "references": [],
                    "digest": digests[name],
                    "reason": "changed",
                }
                for name in names
            ]
            report = root / "report.json"
            report.write_text(json.dumps({"recipes": entries}))
            git = ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b"]
            subprocess.run([*git, "init", "-q"], check=True)
            subprocess.run([*git, "add", "-A"], check=True)
            subprocess.run([*git, "commit", "-qm", "start"], check=True)
            checkouts = {"heps": (HEPS, repo, env)}
            baseline = baseline_heps()
            if baseline:  # its own copy of the repository and its own state folder
                other = root / "repo-baseline"
                subprocess.run(["git", "clone", "-q", str(repo), str(other)], check=True)
                state = {**env, "HEPS_STATE_DIR": str(root / "state-baseline")}
                checkouts["baseline"] = (baseline, other, state)
            os.sync()
            times: dict[str, list[float]] = {name: [] for name in checkouts}
            for run in range(3):  # paired: the two alternate, each leading every other pair
                for name in sorted(checkouts, reverse=run % 2 == 1):
                    heps, where, environment = checkouts[name]
                    command = [*heps, "--repo", str(where), "promote", "--overlay", "bench"]
                    started = time.perf_counter()
                    subprocess.run(
                        [*command, "--report", str(report)],
                        env=environment,
                        check=True,
                        capture_output=True,
                    )
                    times[name].append(time.perf_counter() - started)
                    at = ["git", "-C", str(where)]
                    stat = subprocess.run(
                        [*at, "diff", "--shortstat", "HEAD~1", "HEAD"],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout.strip()
                    subprocess.run([*at, "reset", "-q", "--hard", "HEAD~1"], check=True)
                    os.sync()  # the reset's 1,000 writes go out now, not in the next promotion
    print(
        f"heps promote, {apps} apps into {files} manifests:       "
        f"{statistics.median(times['heps']):.2f} s   "
        f"(target < 2 s; {previous('`heps promote` of 100')})"
    )
    print(f"  git diff --shortstat of the promotion: {stat}   (target: {files} lines each way)")
    if baseline:
        ratios = [a / b for a, b in zip(times["heps"], times["baseline"], strict=True)]
        print(
            f"  the baseline's promotion, same registry, alternating: "
            f"{statistics.median(times['baseline']):.2f} s   "
            f"(median pair ratio {statistics.median(ratios):.2f}; target <= 0.5 of 3ddb92e)"
        )


def bench_noop_run() -> None:
    env = dict(os.environ)
    first = subprocess.run(
        [*HEPS, "--repo", str(REPO), "run", "--all"], env=env, capture_output=True, text=True
    )
    if first.returncode != 0:
        print(first.stdout[-2000:], first.stderr[-2000:])
        raise SystemExit("bundled tree does not build; fix that first")
    _, seconds = timed([*HEPS, "--repo", str(REPO), "run", "--all"], env)
    print(f"heps run --all, bundled tree, nothing changed:        {seconds:.2f} s   (target < 3 s)")


def bench_makespan(path: Path) -> None:
    """A run's makespan against its lower bound, both from its own report: max(longest
    chain of per-recipe seconds, total seconds / parallel slots)."""
    data = json.loads(path.read_text())
    spent = {
        r["name"]: sum(r["seconds"].values()) for r in data["recipes"] if r["status"] == "built"
    }
    tree = graph.resolve(recipes.discover(settings.load(REPO)), settings.load(REPO).registry)
    chain: dict[str, float] = {}
    for name in tree.order:  # bases first: a chain ends at each recipe
        below = [chain[b] for b in tree.base_names(name) if b in chain]
        if name in spent:
            chain[name] = spent[name] + max(below, default=0.0)
    bound = max(max(chain.values(), default=0.0), sum(spent.values()) / data["parallel"])
    makespan = data["seconds"] - data["plan_seconds"]
    print(
        f"makespan of {path.name} ({len(spent)} built, {data['parallel']} slots): "
        f"{makespan:.0f} s against its lower bound {bound:.0f} s "
        f"(+{100 * (makespan / bound - 1):.0f}%, target within 10%)"
    )


def bench_overhead() -> None:
    """Same recipe, same cold layer (a fresh NONCE busts the cache for both)."""
    base = "127.0.0.1:5000/heps/debian-base:1.0.0"
    dockerfile = (
        f'FROM {base}\nARG NONCE\nSHELL ["/bin/bash", "-o", "pipefail", "-c"]\n'
        'RUN echo "$NONCE" > /nonce && apt-get update && apt-get install -y '
        "--no-install-recommends python3-minimal && rm -rf /var/lib/apt/lists/*\n"
        "USER 1000\n"
    )
    plain, piped, build_stage = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        folder = repo / "app-recipes" / "bench-app"
        folder.mkdir(parents=True)
        (folder / "Dockerfile").write_text(dockerfile)
        env = {
            **os.environ,
            "DOCKER_BUILDKIT": "0",
            "HEPS_NAMESPACE": f"bench{uuid.uuid4().hex[:6]}",
        }
        for _ in range(2):
            started = time.perf_counter()
            subprocess.run(
                ["docker", "build", "-q", "--build-arg", f"NONCE={uuid.uuid4()}", str(folder)],
                env=env,
                check=True,
                capture_output=True,
            )
            plain.append(time.perf_counter() - started)
            (folder / "recipe.yaml").write_text(
                f"name: bench-app\nversion: 1.0.0\ndescription: bench\n"
                f"build: {{args: {{NONCE: '{uuid.uuid4()}'}}}}\n"
                "smoke: {commands: [{name: py, run: [python3, -c, 'print(1)'],"
                " expect_output: '1'}]}\n"
            )
            report = repo / "report.json"
            started = time.perf_counter()
            subprocess.run(
                [*HEPS, "--repo", str(repo), "run", "--all", "--no-push", "--report", str(report)],
                env=env,
                check=True,
                capture_output=True,
            )
            piped.append(time.perf_counter() - started)
            build_stage.append(json.loads(report.read_text())["recipes"][0]["seconds"]["build"])
    p, h, b = statistics.median(plain), statistics.median(piped), statistics.median(build_stage)
    print(f"plain `docker build` of a recipe (apt layer, cold):   {p:.2f} s   (baseline)")
    print(
        f"heps run --no-push, same recipe (lint+build+smoke):   {h:.2f} s   "
        f"(overhead {h - p:+.2f} s; its build stage {b:.2f} s)"
    )


def bench_scheduler() -> None:
    """The scheduler's sections: speed at 5,000 nodes, FGD fidelity, acceptance, ablation,
    every trace (bench/scheduler_bench.py)."""
    import scheduler_bench

    scheduler_bench.main([])


if __name__ == "__main__":
    wanted = set(sys.argv[1:]) or {
        *("plan", "scale", "pin", "noop", "overhead", "scheduler", "platform")
    }
    if "plan" in wanted:
        bench_plan_500()
    if "scale" in wanted:
        bench_scale()
    if "pin" in wanted:
        bench_pin_1000()
    if "noop" in wanted:
        bench_noop_run()
    if "overhead" in wanted:
        bench_overhead()
    if "makespan" in wanted:  # HEPS_BENCH_REPORT=FILE python bench/run.py makespan
        bench_makespan(Path(os.environ.get("HEPS_BENCH_REPORT", REPO / "reports/first-run.json")))
    if "scheduler" in wanted:
        bench_scheduler()
    if "platform" in wanted:
        subprocess.run([sys.executable, str(REPO / "bench" / "spawn.py")], check=True)
