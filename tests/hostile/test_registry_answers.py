"""The registry's answers are untrusted: where its challenge sends the password, and
what it sends back (slow, huge, malformed), each end in one line, never a leak, a hang
or a traceback. The registry and its token service are local doubles (HTTP servers
speaking the distribution API's few answers a case needs)."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from heps.core.credentials import Credentials, Secret
from heps.core.errors import ConfigError, TemporaryError
from heps.core.settings import RegistrySettings
from heps.systems import registry as registry_module
from heps.systems.registry import Registry
from tests.conftest import served

PASSWORD = "pw-of-the-registry-test"


class _TokenService(http.server.BaseHTTPRequestHandler):
    """Hands out a token to anyone, and keeps every Authorization it was sent."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        body = b'{"token": "t"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


def _challenging(realm: str) -> type[http.server.BaseHTTPRequestHandler]:
    """A registry that asks for a token from `realm` and answers 404 once given one."""

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            bearer = self.headers.get("Authorization", "").startswith("Bearer ")
            self.send_response(404 if bearer else 401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{realm}",service="r"')
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    return Answer


def _outward_address() -> str:
    """This machine's address on its default route (not loopback), or a skip."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: only a route is chosen
        except OSError:
            pytest.skip("no network interface besides loopback to serve a token service on")
        address = str(probe.getsockname()[0])
    if address.startswith("127."):
        pytest.skip("no network interface besides loopback to serve a token service on")
    return address


@pytest.mark.parametrize(
    "case", ["another-host", "parsers-differ", "plain-http-off-loopback", "configured-host"]
)
def test_the_password_goes_only_to_the_registrys_own_token_service(case: str) -> None:
    """The realm of a registry's challenge is where heps sends the password: a realm on
    another host (a hostile registry, or one answering for another) or over plain HTTP
    off loopback (behind a TLS registry, the password in clear) is refused before
    anything is sent; another host the operator names is used. The realm is read as the
    sender reads it: `http://localhost:P\\@127.0.0.1/` is 127.0.0.1 to urllib.parse and
    localhost to urllib3."""
    _TokenService.seen = []
    outward = _outward_address() if case == "plain-http-off-loopback" else "127.0.0.1"
    with served(_TokenService, outward) as tokens:
        host = "localhost" if case != "plain-http-off-loopback" else outward
        realm = f"http://{host}:{tokens.server_port}/token"
        with served(_challenging(realm)) as registry:
            if case == "parsers-differ":
                realm = (
                    f"http://localhost:{tokens.server_port}\\@127.0.0.1:{registry.server_port}/t"
                )
                registry.RequestHandlerClass = _challenging(realm)
            settings = RegistrySettings(
                f"127.0.0.1:{registry.server_port}",
                "ns",
                token_host="localhost" if case == "configured-host" else outward,
            )
            client = Registry(settings, Credentials("user", Secret(PASSWORD), "test"))
            if case == "configured-host":
                assert client.manifest("img", "1") is None
                assert len(_TokenService.seen) == 1 and _TokenService.seen[0]
                return
            with pytest.raises(ConfigError) as refused:
                client.manifest("img", "1")
    assert _TokenService.seen == []
    (line,) = str(refused.value).splitlines()
    expected = "is not https" if case == "plain-http-off-loopback" else "is on another host"
    assert line.startswith(f"registry {settings.host}: its token service "), line
    assert f"/t{'oken' if case != 'parsers-differ' else ''} {expected}" in line, line
    assert PASSWORD not in line


def _image_registry(
    manifest: bytes, config: bytes = b"{}", digest: str | None = None, drip: str = ""
) -> type[http.server.BaseHTTPRequestHandler]:
    """A registry holding one image: `manifest` under any tag (with `digest` named for
    it, else its own), `config` as every blob. `drip` ("head", "body") sends the
    manifest's answer a byte every 50 ms, each within any read's timeout."""

    class Answer(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            is_manifest = "/manifests/" in self.path
            body = manifest if is_manifest else config if "/blobs/" in self.path else b"{}"
            named = digest or f"sha256:{hashlib.sha256(body).hexdigest()}"
            head = (
                "HTTP/1.1 200 OK\r\nDocker-Distribution-API-Version: registry/2.0\r\n"
                f"Docker-Content-Digest: {named}\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            answer = head + body if self.command == "GET" else head
            slow = len(head) if drip == "head" else len(answer) if drip == "body" else 0
            for i in range(slow if is_manifest else 0):
                self.wfile.write(answer[i : i + 1])
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(answer[slow if is_manifest else 0 :])

        do_HEAD = do_GET

        def log_message(self, *args: Any) -> None:
            return

    return Answer


@pytest.mark.parametrize("drip", ["head", "body"])
def test_an_answer_dripped_slowly_ends_at_its_deadline(
    monkeypatch: pytest.MonkeyPatch, drip: str
) -> None:
    """A registry sending a byte at a time, each within the read timeout, is cut at the
    answer's deadline (headers or body alike): one line, never an endless run."""
    monkeypatch.setattr(registry_module, "ANSWER_SECONDS", 1.0)
    manifest = json.dumps({"config": {"digest": f"sha256:{'a' * 64}"}, "pad": "x" * 40}).encode()
    with served(_image_registry(manifest, drip=drip)) as server:
        client = Registry(RegistrySettings(f"127.0.0.1:{server.server_port}", "ns"), None)
        with pytest.raises(TemporaryError) as stopped:
            client.manifest("img", "1")
    assert (
        str(stopped.value)
        == f"registry 127.0.0.1:{server.server_port}: timed out on ns/img/manifests/1"
    )


def test_a_token_dripped_slowly_ends_at_its_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "ANSWER_SECONDS", 1.0)

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "200")
            self.end_headers()
            for _ in range(200):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.05)

        def log_message(self, *args: Any) -> None:
            return

    with served(Slow) as tokens:
        realm = f"http://127.0.0.1:{tokens.server_port}/token"
        with served(_challenging(realm)) as server:
            client = Registry(RegistrySettings(f"127.0.0.1:{server.server_port}", "ns"), None)
            with pytest.raises(ConfigError) as stopped:
                client.manifest("img", "1")
    (line,) = str(stopped.value).splitlines()
    assert line.startswith(f"registry token service {realm}: ") and "timed out" in line


DIGEST_A = f"sha256:{'a' * 64}"
MALFORMED = {
    # a name outside the label cache: it was written there (any file, labels as content)
    "digest-a-path": (b'{"config": {"digest": "%s"}}' % DIGEST_A.encode(), b"{}", "/../../x"),
    "digest-not-the-bytes": (b"{}", b"{}", f"sha256:{'b' * 64}"),
    "not-an-object": (b"[1, 2]", b"{}", None),
    "not-json": (b"{", b"{}", None),
    "nested-deep": (b"[" * 100_000, b"{}", None),
    "empty-index": (b'{"manifests": []}', b"{}", None),
    "index-entry-a-path": (b'{"manifests": [{"digest": "../../../v2/_catalog"}]}', b"{}", None),
    "config-digest-a-path": (b'{"config": {"digest": "../../../v2/_catalog?"}}', b"{}", None),
    "config-not-an-object": (b'{"config": {"digest": "%s"}}' % DIGEST_A.encode(), b'"x"', None),
    "labels-a-list": (
        b'{"config": {"digest": "%s"}}' % DIGEST_A.encode(),
        b'{"config": {"Labels": [1]}}',
        None,
    ),
    "labels-numbers": (
        b'{"config": {"digest": "%s"}}' % DIGEST_A.encode(),
        b'{"config": {"Labels": {"a": 1}}}',
        None,
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_answer_is_one_line_and_names_nothing_heps_uses(
    tmp_path: Path, case: str
) -> None:
    """What the registry answers is checked before heps uses it: a digest (which names
    a URL and a cached file) is a sha256 digest, and a manifest's the hash of its bytes;
    manifests, indexes and configs are JSON objects of their shape, labels text. Else one
    line naming the registry and what it answered, and no file written."""
    manifest, config, digest = MALFORMED[case]
    cache = tmp_path / "deep" / "er" / "cache"
    with served(_image_registry(manifest, config, digest)) as server:
        client = Registry(RegistrySettings(f"127.0.0.1:{server.server_port}", "ns"), None, cache)
        with pytest.raises(ConfigError) as refused:
            client.image("img", "1")
    (line,) = str(refused.value).splitlines()
    assert line.startswith(f"registry 127.0.0.1:{server.server_port}: ")
    assert line.endswith("; is this a Docker registry?")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_digest_looked_up_is_a_sha256_digest() -> None:
    with served(_image_registry(b"{}", digest="/../../etc/passwd")) as server:
        client = Registry(RegistrySettings(f"127.0.0.1:{server.server_port}", "ns"), None)
        with pytest.raises(ConfigError, match="is not a sha256 digest"):
            client.digest("img", "1")
