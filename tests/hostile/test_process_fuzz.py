"""The commands as users run them, with generated arguments and files: `heps plan`, `lint`,
`review --report`, `promote --from` and `heps-scheduler simulate`, each a real process.
Whatever the input, the process ends with 0, 1 or 2 and no Python traceback reaches its
stdout or stderr (the README promises one line); a process that does not end within its
time limit is a hang, and fails too.

The normal suite runs a short pass per command (process start-up is about half a second);
`tox -e fuzz` (HEPS_FUZZ=long) runs HEPS_FUZZ_EXAMPLES per command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from heps.systems.services import RegistryService
from tests.hostile.test_fuzz import LONG, hostile_text, kustomization, recipe_text
from tests.pipeline.test_promote import overlays

BIN = Path(sys.executable).parent
TIME_LIMIT = 60  # seconds: far above any of these commands on a tiny repository
RUN = settings(
    max_examples=int(os.environ.get("HEPS_FUZZ_EXAMPLES", "300")) if LONG else 25,
    deadline=None,
    database=None if not LONG else settings.default.database,
    derandomize=not LONG,  # the short pass is the same every run: CI never flakes on it
    suppress_health_check=[HealthCheck.too_slow],
)

# Argument values that have broken a command before, or could: revisions git cannot
# resolve, paths outside the repository, terminal escapes, option-looking values.
VALUES = [
    "HEAD",
    "HEAD~1",
    "HEAD@{100 years ago}",
    "main",
    "no-such-rev",
    "--",
    "-",
    "",
    " ",
    "app",
    "App",
    "other",
    "testbed",
    "production",
    "../..",
    "/etc/passwd",
    "..",
    ".",
    "a" * 300,
    "\x1b[31m",
    "caf\u00e9",
    "\u202e",
    "-v",
    "--help",
    "1e999",
    "nan",
    "-1",
    "0",
]
value = st.one_of(
    st.sampled_from(VALUES),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=12),
)


def options(fixed: list[str], flags: dict[str, bool]) -> st.SearchStrategy[list[str]]:
    """`fixed` alone (so the files are read, not only the arguments), or followed by some
    of `flags` (True: takes a value) and stray values."""
    one = st.one_of(
        st.sampled_from(sorted(flags)).flatmap(
            lambda f: st.tuples(st.just(f), value).map(list) if flags[f] else st.just([f])
        ),
        value.map(lambda v: [v]),
    )
    more = st.lists(one, min_size=1, max_size=4)
    return st.one_of(st.just(fixed), more.map(lambda parts: fixed + [a for p in parts for a in p]))


COMMON = {"--registry": True, "--namespace": True, "-v": False, "--repo": True}
SELECTION = {"--all": False, "--since": True, **COMMON}

scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    value,
)
json_value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
REPORT_KEYS = [
    "name",
    "version",
    "status",
    "image",
    "references",
    "digest",
    "pushed",
    "failed_stage",
    "error",
    "lint",
    "smoke",
    "seconds",
    "reason",
    "fingerprint",
]
report_entry = st.dictionaries(
    st.sampled_from(REPORT_KEYS),
    st.one_of(
        json_value,
        st.sampled_from(["app", "1.0.0", "built", "failed", "skipped", "sha256:" + "a" * 64]),
    ),
)
report_text = st.one_of(
    st.fixed_dictionaries(
        {"recipes": st.one_of(st.lists(report_entry, max_size=3), json_value)},
        optional={"run": json_value, "registry": json_value, "namespace": json_value},
    ).map(lambda d: json.dumps(d, allow_nan=True)),
    json_value.map(lambda d: json.dumps(d, allow_nan=True)),
    hostile_text,
)

NUMBERS = ["0", "-1", "1", "32000", "nan", "inf", "-inf", "1e308", "", "x", "1.5", "0x10"]
number = st.one_of(st.sampled_from(NUMBERS), st.integers(-5, 10**6).map(str))
NODE_HEADER = "sn,cpu_milli,memory_mib,gpu,model"
POD_HEADER = (
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    "creation_time,deletion_time,scheduled_time"
)


def csv(header: str, row: st.SearchStrategy[list[str]]) -> st.SearchStrategy[str]:
    table = st.lists(row.map(",".join), max_size=6).map(lambda rows: "\n".join([header, *rows]))
    return st.one_of(table, table.map(lambda t: t.split("\n")[0] + "\n"), hostile_text)


node_row = st.tuples(
    st.sampled_from(["n0", "n1", "", "n0"]),
    number,
    number,
    number,
    st.sampled_from(["", "V100", "A100", "T4", "x"]),
).map(list)
pod_row = st.tuples(
    st.sampled_from(["p0", "p1", ""]),
    number,
    number,
    number,
    number,
    st.sampled_from(["", "V100", "A100|T4", "x"]),
    st.sampled_from(["LS", "BE", "Guaranteed", "", "x"]),
    st.sampled_from(["Running", "Pending", "Failed", ""]),
    number,
    number,
    number,
).map(list)
nodes_csv, pods_csv = csv(NODE_HEADER, node_row), csv(POD_HEADER, pod_row)


def run(command: str, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    """`command argv` as a process in `cwd`: one of the three exit codes, no traceback."""
    try:
        done = subprocess.run(
            [str(BIN / command), *argv],
            cwd=cwd,
            env=env,
            capture_output=True,
            timeout=TIME_LIMIT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{command} {argv!r}: still running after {TIME_LIMIT} s")
    text = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    if currently_in_test_context():  # the statistics of `tox -e fuzz`
        event(f"{command} {argv[0]}: exit {done.returncode}")
    assert "Traceback (most recent call last)" not in text, f"{command} {argv!r}:\n{text}"
    assert done.returncode in (0, 1, 2), f"{command} {argv!r}: exit {done.returncode}\n{text}"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def environment(registry: RegistryService, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The variables every process gets: the session's registry, a namespace of its own,
    state and Docker config in a temporary folder, nothing from the caller's HEPS_*."""
    home = tmp_path_factory.mktemp("fuzz-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HEPS_", "JENKINS_"))}
    env.update(
        HEPS_REGISTRY=registry.address,
        HEPS_NAMESPACE=f"f{uuid.uuid4().hex[:10]}",
        HEPS_REGISTRY_USERNAME=registry.username,
        HEPS_REGISTRY_PASSWORD=registry.password,
        HEPS_STATE_DIR=str(home / "state"),
        HEPS_CA_BUNDLE="",
        DOCKER_CONFIG=str(home / "docker-config"),
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
    )
    return env


def repository(
    folder: Path, recipe: str, dockerfile: str, settings_text: str | None, committed: bool
) -> Path:
    """A one-recipe repository with testbed and production overlays."""
    (folder / "app-recipes" / "app").mkdir(parents=True)
    (folder / "app-recipes/app/recipe.yaml").write_text(recipe, "utf-8", errors="replace")
    (folder / "app-recipes/app/Dockerfile").write_text(dockerfile, "utf-8", errors="replace")
    if settings_text is not None:
        (folder / "heps.yaml").write_text(settings_text, "utf-8", errors="replace")
    overlays(folder, ["app"])
    if committed:
        git(folder, "init", "-q", "-b", "main")
        git(folder, "add", "-A")
        git(folder, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "initial")
    return folder


VALID_RECIPE = (
    "name: app\nversion: 1.0.0\ndescription: d\n"
    'smoke:\n  commands:\n    - {name: a, run: ["true"], expect_output: ""}\n'
)
# Half the examples get a valid recipe, so the commands go past loading it.
recipe = st.one_of(st.just(VALID_RECIPE), recipe_text)
dockerfile = st.one_of(
    st.sampled_from(["FROM scratch\n", "FROM busybox:1\nRUN true\n", "FROM app\n"]),
    hostile_text,
    st.tuples(st.just("FROM scratch\n"), hostile_text).map("".join),
)
settings_file = st.one_of(
    st.none(),
    st.sampled_from(["registry: {host: 'a b'}\n", "build: {parallel: 0}\n", "gitops: 5\n"]),
    hostile_text,
)


@contextmanager
def folder() -> Iterator[Path]:
    """Each example in a folder of its own (hypothesis runs them all in one test call)."""
    with tempfile.TemporaryDirectory(prefix="heps-proc-fuzz-") as tmp:
        yield Path(tmp)


@RUN
@given(
    argv=options(["plan"], {"--json": False, **SELECTION}),
    recipe=recipe,
    dockerfile=dockerfile,
    settings_text=settings_file,
    committed=st.booleans(),
)
def test_plan(environment: dict[str, str], argv: list[str], **drawn: Any) -> None:
    with folder() as tmp:
        run("heps", argv, repository(tmp, **drawn), environment)


@RUN
@given(
    argv=options(["lint"], {"--since": True, **COMMON}),
    recipe=recipe,
    dockerfile=dockerfile,
    settings_text=settings_file,
    committed=st.booleans(),
)
def test_lint(environment: dict[str, str], argv: list[str], **drawn: Any) -> None:
    with folder() as tmp:
        run("heps", argv, repository(tmp, **drawn), environment)


@RUN
@given(
    argv=options(["review", "--report", "report.json"], {"--base": True, "--json": True}),
    base=st.sampled_from(["HEAD", "main", "HEAD~1", "no-such-rev"]),
    report=report_text,
    recipe=recipe,
)
def test_review_with_a_report(
    environment: dict[str, str], argv: list[str], base: str, report: str, recipe: str
) -> None:
    with folder() as tmp:
        repo = repository(tmp, recipe, "FROM scratch\n", None, committed=True)
        (repo / "report.json").write_text(report, "utf-8", errors="replace")
        run("heps", [*argv, "--base", base], repo, environment)


@RUN
@given(
    argv=options(
        ["promote"], {"--overlay": True, "--from": True, "--branch": True, "--push": False}
    ),
    target=st.sampled_from(["testbed", "production", "missing"]),
    source=st.sampled_from(["testbed", "production", "missing", ".."]),
    overlay=st.one_of(kustomization, hostile_text),
    recipe=recipe,
)
def test_promote_from(
    environment: dict[str, str],
    argv: list[str],
    target: str,
    source: str,
    overlay: str,
    recipe: str,
) -> None:
    with folder() as tmp:
        repo = repository(tmp, recipe, "FROM scratch\n", None, committed=False)
        file = repo / "k8s-overlays/overlays/testbed/kustomization.yaml"
        file.write_text(overlay, "utf-8", errors="replace")
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "initial")
        run("heps", [*argv, "--overlay", target, "--from", source], repo, environment)


SIMULATE = {"--policy": True, "--seed": True, "--seeds": True, "--load": True, "--json": True}


@RUN
@given(
    argv=options(["simulate", "--nodes", "nodes.csv", "--pods", "pods.csv"], SIMULATE),
    nodes=nodes_csv,
    pods=pods_csv,
)
def test_scheduler_simulate(
    environment: dict[str, str], argv: list[str], nodes: str, pods: str
) -> None:
    with folder() as tmp:
        (tmp / "nodes.csv").write_text(nodes, "utf-8", errors="replace")
        (tmp / "pods.csv").write_text(pods, "utf-8", errors="replace")
        run("heps-scheduler", argv, tmp, environment)


def test_scheduler_simulate_with_a_header_only_node_list(tmp_path: Path) -> None:
    """The first case the property found, kept as an example."""
    (tmp_path / "nodes.csv").write_text(NODE_HEADER + "\n")
    (tmp_path / "pods.csv").write_text(POD_HEADER + "\n")
    argv = ["simulate", "--nodes", "nodes.csv", "--pods", "pods.csv"]
    run("heps-scheduler", argv, tmp_path, {**os.environ})


@pytest.mark.parametrize(
    ("argv", "report"),
    [
        (["review", "--base", "HEAD", "--report", "report.json"], "null"),
        (["review", "--base", "HEAD", "--report", "report.json"], '{"recipes": 5}'),
        (["plan", "--since", "HEAD@{100 years ago}"], None),
        (["lint", "--since", "HEAD@{100 years ago}"], None),
    ],
)
def test_cases_the_property_found(
    environment: dict[str, str], tmp_path: Path, argv: list[str], report: str | None
) -> None:
    repo = repository(tmp_path, VALID_RECIPE, "FROM scratch\n", None, committed=True)
    if report is not None:
        (repo / "report.json").write_text(report)
    run("heps", argv, repo, environment)
