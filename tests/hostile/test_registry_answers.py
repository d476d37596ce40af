"""The registry's answers are untrusted: where its challenge sends the password, and
what it sends back (slow, huge, malformed), each end in one line, never a leak, a hang
or a traceback. The registry and its token service are local doubles (HTTP servers
speaking the distribution API's few answers a case needs)."""

from __future__ import annotations

import http.server
import socket
from typing import Any, ClassVar

import pytest

from heps.core.credentials import Credentials, Secret
from heps.core.errors import ConfigError
from heps.core.settings import RegistrySettings
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


@pytest.mark.parametrize("case", ["another-host", "plain-http-off-loopback", "configured-host"])
def test_the_password_goes_only_to_the_registrys_own_token_service(case: str) -> None:
    """The realm of a registry's challenge is where heps sends the password: a realm on
    another host (a hostile registry, or one answering for another) or over plain HTTP
    off loopback (behind a TLS registry, the password in clear) is refused before
    anything is sent; another host the operator names is used."""
    _TokenService.seen = []
    outward = _outward_address() if case == "plain-http-off-loopback" else "127.0.0.1"
    with served(_TokenService, outward) as tokens:
        host = "localhost" if case != "plain-http-off-loopback" else outward
        realm = f"http://{host}:{tokens.server_port}/token"
        with served(_challenging(realm)) as registry:
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
    expected = "is on another host" if case == "another-host" else "is not https"
    assert line.startswith(f"registry {settings.host}: its token service {realm} {expected}")
    assert PASSWORD not in line
