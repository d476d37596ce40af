"""Hostile input files: every one ends as exit 2 and one line naming the file, never a
hang, a traceback or a crash, and nothing is built, pushed or written.

Each case runs the real command in-process against the real registry of the session.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heps.ci.review import Review
from heps.core.credentials import Credentials, Secret
from heps.core.errors import ConfigError
from heps.core.log import Masker
from heps.core.settings import RegistrySettings
from heps.images import lint
from heps.systems.registry import Registry
from tests.conftest import BUSYBOX, Env, served, simple_recipe, write_recipe

BOMB = "".join(
    f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9) if i else ', '.join(['l'] * 9)}]\n"
    for i in range(9)
)
"""Nine lines whose aliases expand to 9**9 (387 million) scalars."""


def pushed(env: Env, name: str) -> bool:
    """Does the registry hold any tag of `name` in this test's namespace?"""
    creds = Credentials(env.registry.username, Secret(env.registry.password), "test")
    where = RegistrySettings(env.registry.address, env.namespace)
    return Registry(where, creds, env.repo.parent / "cache").digest(name, "1.0.0") is not None


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("heps: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def app(env: Env, **files: str) -> Path:
    """A valid recipe `app` that the test then breaks."""
    files.setdefault("Dockerfile", f"FROM {BUSYBOX}\nRUN echo app > /hello\n")
    return write_recipe(env.repo, "app", simple_recipe("app"), **files)


RECIPE_HEAD = (
    "name: app\nversion: 1.0.0\ndescription: d\n"
    "smoke: {commands: [{name: hello, run: [cat, /hello], expect_output: app}]}\n"
)


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        (RECIPE_HEAD + "profile: {display_name: App}\n" + BOMB, "through its aliases"),
        (RECIPE_HEAD + "build: {args: " + "{a: " * 70 + "x" + "}" * 71 + "\n", "deeper than 64"),
        (RECIPE_HEAD + "build: " + "[" * 5000 + "]" * 5000 + "\n", "nesting depth"),
        (RECIPE_HEAD.replace("d\n", "caf\xe9\n"), None),  # written as Latin-1 below
    ],
    ids=["alias-bomb", "deep-mapping", "deep-flow", "latin-1"],
)
def test_hostile_recipe_yaml_is_one_line(
    heps: Any, env: Env, recipe: str, expected: str | None
) -> None:
    folder = app(env)
    if expected is None:
        (folder / "recipe.yaml").write_bytes(recipe.encode("latin-1"))
        expected = "not UTF-8 (byte 0xe9"
    else:
        (folder / "recipe.yaml").write_text(recipe)
    result = heps(env.repo, "plan")
    assert result.code == 2
    line = one_error_line(result.err)
    assert line.startswith("heps: error: app-recipes/app/recipe.yaml:") and expected in line


@pytest.mark.parametrize("name", ["Dockerfile", ".dockerignore"])
def test_undecodable_build_files_are_named(heps: Any, env: Env, name: str) -> None:
    folder = app(env)
    (folder / name).write_bytes(b"FROM scratch\n# \xff\xfe broken\n")
    result = heps(env.repo, "run", "--all")
    assert result.code == 2
    assert f"app-recipes/app/{name}:2: not UTF-8" in one_error_line(result.err)
    assert not pushed(env, "app")


def test_undecodable_hadolint_config_is_named(heps: Any, env: Env) -> None:
    """`.hadolint.yaml` is read as every repository file is: bounded and UTF-8."""
    app(env)
    (env.repo / ".hadolint.yaml").write_bytes(b"failure-threshold: warning\n# \xff\n")
    result = heps(env.repo, "lint")
    assert result.code == 2, result.text
    assert one_error_line(result.err).startswith("heps: error: .hadolint.yaml:2: not UTF-8")


@pytest.mark.parametrize("kind", ["folder", "fifo"])
@pytest.mark.parametrize(
    ("name", "fix"),
    [
        ("recipe.yaml", "replace it with one"),
        (".dockerignore", "replace it with one"),
        ("Dockerfile", "build.dockerfile: 'Dockerfile' is not a file; create it"),
    ],
)
def test_a_file_that_is_not_a_regular_file_is_named(
    heps: Any, env: Env, name: str, fix: str, kind: str
) -> None:
    """A folder (or a FIFO, which would block a reader) where a file belongs: one line
    naming it and the fix, not an OSError's text or a hang."""
    folder = app(env)
    target = folder / name
    target.unlink(missing_ok=True)
    if kind == "folder":
        target.mkdir()
    else:
        os.mkfifo(target)
    result = heps(env.repo, "plan")
    assert result.code == 2, result.text
    line = one_error_line(result.err)
    assert f"app-recipes/app/{name if name != 'Dockerfile' else 'recipe.yaml'}:" in line
    assert fix in line, line


def test_undecodable_settings_file_is_named(heps: Any, env: Env) -> None:
    app(env)
    (env.repo / "heps.yaml").write_bytes(b"build:\n  parallel: 2 # \xc3\x28\n")
    result = heps(env.repo, "plan")
    assert result.code == 2
    assert one_error_line(result.err).startswith("heps: error: heps.yaml:2: not UTF-8")


def test_jobs_yaml_alias_bomb_is_refused(heps: Any, env: Env) -> None:
    app(env)
    jobs = env.repo / "jenkins" / "jobs.yaml"
    jobs.parent.mkdir()
    jobs.write_text("scm: {url: x}\njobs: []\n" + BOMB)
    out = env.repo / "build" / "jenkins"
    result = heps(env.repo, "jenkins", "render", "--out", str(out))
    assert result.code == 2
    assert "jenkins/jobs.yaml:" in one_error_line(result.err)
    assert not out.exists()


def test_catastrophic_expect_output_fails_the_stage_not_the_run(env: Env, tmp_path: Path) -> None:
    """`^(a+)+$` against 40 a's and a b backtracks for hours in Python's `re`; RE2 answers
    at once. Run as a process with a generous guard, so a regression fails, not hangs."""
    recipe = simple_recipe("app")
    recipe["smoke"]["commands"] = [
        {"name": "redos", "run": ["sh", "-c", "printf 'a%.0s' $(seq 40); echo b"]},
    ]
    recipe["smoke"]["commands"][0]["expect_output"] = "^(a+)+$"
    write_recipe(env.repo, "app", recipe, Dockerfile=f"FROM {BUSYBOX}\n")
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "heps.cli", "--repo", str(env.repo), "run", "--no-push"]
    done = subprocess.run(
        [*command, "--report", str(report)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, done.stderr
    (entry,) = json.loads(report.read_text())["recipes"]
    assert entry["failed_stage"] == "smoke"
    assert "output does not match /^(a+)+$/" in entry["error"]


def test_backreferences_are_refused_at_load(heps: Any, env: Env) -> None:
    recipe = simple_recipe("app")
    recipe["smoke"]["commands"][0]["expect_output"] = r"(a)\1"
    app(env)
    write_recipe(env.repo, "app", recipe)
    result = heps(env.repo, "plan")
    assert result.code == 2
    line = one_error_line(result.err)
    assert "smoke.commands[0].expect_output: not supported by RE2" in line


def test_hadolint_timeout_is_a_lint_failure(
    heps: Any, env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    app(env)
    monkeypatch.setattr(lint, "HADOLINT_TIMEOUT", 0.001)  # the real binary, given no time
    result = heps(env.repo, "lint")
    assert result.code == 1, result.text
    assert "hadolint: no result within 0 s" in result.out
    assert "Traceback" not in result.err


class _HtmlPage(http.server.BaseHTTPRequestHandler):
    """A web server where a registry should be: 200 and an HTML page for everything."""

    def do_GET(self) -> None:
        body = b"<html><body>Welcome to nginx!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def html_server() -> Iterator[str]:
    with served(_HtmlPage) as server:
        yield f"127.0.0.1:{server.server_port}"


@pytest.mark.parametrize("command", [["plan"], ["status"], ["run", "--all"]])
def test_registry_answering_html_is_a_config_error(
    heps: Any, env: Env, html_server: str, command: list[str]
) -> None:
    app(env)
    result = heps(env.repo, "--registry", html_server, *command)
    assert result.code == 2
    assert "is this a Docker registry" in one_error_line(result.err)


@pytest.mark.parametrize(
    "content",
    ['{"username": "heps", "password": "hunter2-in-a-broken-fi', '["heps"]', '{"username": 1}'],
    ids=["truncated", "not-an-object", "no-password"],
)
def test_malformed_credentials_file_is_named(
    heps: Any, env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str
) -> None:
    app(env)
    for name in ("HEPS_REGISTRY", "HEPS_REGISTRY_USERNAME", "HEPS_REGISTRY_PASSWORD"):
        monkeypatch.delenv(name)
    stored = tmp_path / "state" / "registry" / "credentials.json"
    stored.parent.mkdir(parents=True)
    stored.write_text(content)
    result = heps(env.repo, "plan")
    assert result.code == 2
    line = one_error_line(result.err)
    assert f"{stored}: not a credentials file" in line and "hunter2" not in result.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("resources: [../../base\n", "YAML syntax error"), ("a: 1\n" + BOMB, "through its aliases")],
    ids=["syntax", "alias-bomb"],
)
@pytest.mark.parametrize("command", [["status"], ["rollback", "--overlay", "testbed", "app"]])
def test_broken_overlay_is_one_line(
    heps: Any, env: Env, text: str, expected: str, command: list[str]
) -> None:
    app(env)
    folder = env.repo / "k8s-overlays" / "overlays" / "testbed"
    folder.mkdir(parents=True)
    (folder / "kustomization.yaml").write_text(text)
    subprocess.run(["git", "init", "-q", str(env.repo)], check=True)
    result = heps(env.repo, *command)
    assert result.code == 2
    line = one_error_line(result.err)
    assert "k8s-overlays/overlays/testbed/kustomization.yaml" in line and expected in line


class _HugeAnswers(http.server.BaseHTTPRequestHandler):
    """A registry whose catalog page and manifests are 80 MiB, sent without a length
    (a hostile or broken registry's endless answer, cut where a test can wait for it)."""

    protocol_version = "HTTP/1.0"  # the body ends when the connection closes

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.end_headers()
        if self.path == "/v2/":
            return
        head = b'{"repositories": ["ns/n0"' if "_catalog" in self.path else b'{"x": "'
        self.wfile.write(head)
        for _ in range(80):
            self.wfile.write(b"," * (1 << 20) if "_catalog" in self.path else b"x" * (1 << 20))

    def log_message(self, *args: Any) -> None:
        return


def test_a_registry_answer_past_the_bound_is_refused_unread() -> None:
    """The catalog is given up (every name asked), a manifest is one line naming the
    registry: neither is read whole into memory."""
    with served(_HugeAnswers) as server:
        registry = Registry(RegistrySettings(f"127.0.0.1:{server.server_port}", "ns"), None)
        assert registry._unlisted({f"n{i}": "1" for i in range(30)}) == set()
        with pytest.raises(ConfigError, match=r"^registry 127\.0\.0\.1:\d+: the answer to "):
            registry.manifest("n1", "1")


@pytest.mark.parametrize("host", ["user:s3cretpw@127.0.0.1:1", "http://user:s3cretpw@127.0.0.1:1"])
def test_a_registry_flag_with_a_password_in_it_is_refused_unechoed(
    heps: Any, env: Env, host: str
) -> None:
    """--registry and HEPS_REGISTRY skip heps.yaml's schema: a URL with user and password
    in it is refused there, before any message could print it."""
    app(env)
    result = heps(env.repo, "--registry", host, "plan")
    assert result.code == 2
    assert "registry.host: not HOST[:PORT]" in one_error_line(result.err)
    assert "s3cretpw" not in result.text


def test_a_redirect_to_another_host_takes_that_hosts_proxy_as_requests_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The registry is in NO_PROXY, the blob store it redirects to is not (an internal
    registry keeping its blobs in a cloud store): the redirect goes through the proxy,
    without the registry's Authorization, as requests sends it."""
    seen: list[tuple[str, str, str | None]] = []

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            who = "proxy" if self.server is proxy else "direct"
            seen.append((who, self.path, self.headers.get("Authorization")))
            moved = who == "direct" and "/manifests/" in self.path
            self.send_response(307 if moved else 200)
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            if moved:
                self.send_header("Location", f"http://localhost:{store.server_port}/blob")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            return

    with served(Answer) as registry, served(Answer) as store, served(Answer) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        client = Registry(
            RegistrySettings(f"127.0.0.1:{registry.server_port}", "ns"),
            Credentials("user", Secret("pw"), "test"),
        )
        assert client.manifest("img", "1") == (f"sha256:{hashlib.sha256(b'{}').hexdigest()}", {})
    assert [(who, path.split("/", 3)[-1], bool(auth)) for who, path, auth in seen] == [
        ("direct", "img/manifests/1", True),
        ("proxy", "blob", False),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"<html>Welcome to nginx!</html>",
        b"[1]",
        b'"token"',
        b"{}",
        b'{"token": 1}',
        b"[" * 60_000,  # nested past the JSON parser's depth, within the size bound
        b'{"token": "' + b"t" * (1 << 20) + b'"}',  # past the size bound
    ],
    ids=["html", "list", "string", "empty", "number", "deep", "huge"],
)
def test_a_token_service_answering_no_token_is_one_line_naming_it(body: bytes) -> None:
    """A token service (the operator's) answering 200 with a body that is no JSON object
    carrying a token: one ConfigError line naming it, not an internal error."""

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            token = self.path.startswith("/token")
            self.send_response(200 if token else 401)
            if not token:
                realm = f"http://127.0.0.1:{self.server.server_port}/token"
                self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="r"')
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Length", str(len(body) if token else 0))
            self.end_headers()
            self.wfile.write(body if token else b"")

        def log_message(self, *args: Any) -> None:
            return

    with served(Answer) as server:
        client = Registry(
            RegistrySettings(f"127.0.0.1:{server.server_port}", "ns"),
            Credentials("user", Secret("pw-of-the-test"), "test"),
        )
        with pytest.raises(ConfigError) as refused:
            client.manifest("img", "1")
    (line,) = str(refused.value).splitlines()
    assert re.fullmatch(
        rf"registry 127\.0\.0\.1:{server.server_port}: token service "
        rf"http://127\.0\.0\.1:{server.server_port}/token answered no token .*",
        line,
    ), line


def test_a_file_name_that_is_not_utf8_is_named(heps: Any, env: Env) -> None:
    """A build context file whose name is not UTF-8 (Python holds its bytes as
    surrogates, which no UTF-8 text can hold): one line naming it, not a bug."""
    folder = app(env)
    (folder / os.fsdecode(b"bad\xffname.txt")).write_text("x")
    result = heps(env.repo, "plan")
    assert result.code == 2, result.text
    line = one_error_line(result.err)
    assert "app-recipes/app/recipe.yaml: build.context: bad\\udcffname.txt: " in line, line
    assert "not UTF-8; rename it" in line


def test_review_shows_a_name_that_is_not_utf8_escaped() -> None:
    """A refusal naming a recipe folder that is not UTF-8 still gives a review.md that
    UTF-8 holds (it had ended the merge-request job with no review)."""
    stopped = Review("0" * 40, "unknown")
    stopped.problems = [os.fsdecode(b"app-recipes/r\xfe/recipe.yaml: name: 'app' differs")]
    text = stopped.markdown(Masker()).encode()
    assert b"app-recipes/r\\\\udcfe/recipe.yaml" in text
