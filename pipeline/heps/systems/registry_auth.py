"""The embedded registry's token service: which account may push, which may only pull.

The distribution registry's htpasswd auth lets every account do everything; its token
auth (`auth.token`) leaves the decision to a service, and the registry enforces what the
service granted. This is that service, as the registry's token spec describes it:
`GET /token?service=S&scope=repository:NAME:pull,push` with Basic auth answers a JWT
(ES256, signed by a key whose self-signed certificate the registry trusts, sent in the
`x5c` header) granting the asked actions the account holds. The push account holds pull,
push and delete; the pull account holds pull. A push with the pull account gets a token
without `push`, and the registry refuses the upload itself.

Accounts live in `accounts.json` beside the registry's config (bcrypt hashes, mode 0600);
run as `python -m heps.systems.registry_auth ROOT HOST:PORT`.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import bcrypt
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVICE = "heps-registry"
ISSUER = "heps-registry-token"
LIFETIME = 300
"""Seconds a token is good for: the registry asks again after that."""
PUSH_ACTIONS = ("pull", "push", "delete")
PULL_ACTIONS = ("pull",)


def write_keys(root: Path) -> None:
    """The signing key (0600) and the self-signed certificate the registry trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (root / "token.key").touch(mode=0o600)
    (root / "token.key").write_bytes(pem)
    (root / "token.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def write_accounts(root: Path, accounts: dict[str, tuple[str, tuple[str, ...]]]) -> None:
    """username -> (password, actions), stored hashed. bcrypt's minimum cost: the
    passwords are 144 random bits, the work factor would add only latency."""
    stored = {
        user: {
            "hash": bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode(),
            "actions": list(actions),
        }
        for user, (password, actions) in accounts.items()
    }
    path = root / "accounts.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(stored))


def granted(account: dict[str, Any] | None, scopes: list[str]) -> list[dict[str, Any]]:
    """The access claim: of each `type:name:actions` scope, the actions the account holds."""
    access = []
    held = set(account["actions"]) if account else set()
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository" or not name:
            continue  # the catalog and other resources: granted to nobody
        allowed = [a for a in actions.split(",") if a in held]
        if allowed:
            access.append({"type": kind, "name": name, "actions": allowed})
    return access


class TokenService:
    def __init__(self, root: Path):
        self.accounts: dict[str, dict[str, Any]] = json.loads((root / "accounts.json").read_text())
        self.key = serialization.load_pem_private_key((root / "token.key").read_bytes(), None)
        cert = x509.load_pem_x509_certificate((root / "token.crt").read_bytes())
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]

    def account(self, header: str) -> tuple[str, dict[str, Any]] | None:
        """The account whose Basic credentials `header` carries, or None."""
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except ValueError:
            return None
        found = self.accounts.get(user)
        if found is None or not bcrypt.checkpw(password.encode(), found["hash"].encode()):
            return None
        return user, found

    def token(self, user: str, account: dict[str, Any], scopes: list[str]) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": SERVICE,
            "iat": now,
            "nbf": now - 10,
            "exp": now + LIFETIME,
            "jti": secrets.token_hex(16),
            "access": granted(account, scopes),
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"x5c": self.x5c})  # type: ignore[arg-type]


def _handler(service: TokenService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            if url.path != "/token" or query.get("service", [SERVICE]) != [SERVICE]:
                self._answer(404, {"errors": [{"code": "NOT_FOUND"}]})
                return
            found = service.account(self.headers.get("Authorization", ""))
            if found is None:
                self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
                return
            scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
            token = service.token(*found, scopes)
            self._answer(200, {"token": token, "access_token": token, "expires_in": LIFETIME})

        def _answer(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            if code == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="heps-registry-token"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: requests carry credentials in headers, never in the logged line,
            but one line per token would drown the registry's own log."""

    return Handler


def serve(root: Path, address: str) -> None:
    host, _, port = address.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), _handler(TokenService(root)))
    server.serve_forever()


if __name__ == "__main__":
    serve(Path(sys.argv[1]), sys.argv[2])
