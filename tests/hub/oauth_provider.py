"""A local OAuth2 provider for the login tests, standing in for IHEPSSO: Authlib's
authorization server (a maintained OAuth2 server library) on Flask, with the
authorization code grant (PKCE when the client sends it), refresh tokens and a userinfo
endpoint returning IHEPSSO-style claims. The facility's login page is replaced by
`login_as`: the test names the user who "signs in" next.
"""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector, current_token
from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, jsonify
from werkzeug.serving import make_server

AUTH_METHODS = ("client_secret_basic", "client_secret_post")


@dataclass
class Client(ClientMixin):  # type: ignore[misc]
    client_id: str
    client_secret: str
    redirect_uri: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code(AuthorizationCodeMixin):  # type: ignore[misc]
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str
    code_challenge: str | None
    code_challenge_method: str | None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class Token(TokenMixin):  # type: ignore[misc]
    client: Client
    user: str
    access_token: str
    refresh_token: str | None
    scope: str
    expires_in: int
    issued_at: float = field(default_factory=time.time)
    revoked: bool = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> str:
        return self.user

    def get_client(self) -> Client:
        return self.client


class Provider:
    def __init__(self, users: dict[str, dict[str, Any]], redirect_uri: str) -> None:
        os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain HTTP on loopback, tests only
        self.users = users
        self.login_as: str | None = None
        self.client = Client("heps-hub", secrets.token_urlsafe(24), redirect_uri)
        self.codes: dict[str, Code] = {}
        self.tokens: dict[str, Token] = {}
        self.token_requests = 0
        self.app = Flask("heps-test-sso")
        self.app.config["OAUTH2_REFRESH_TOKEN_GENERATOR"] = True
        server = AuthorizationServer(self.app, self._client, self._save_token)
        server.register_grant(self._code_grant(), [CodeChallenge(required=False)])
        server.register_grant(self._refresh_grant())
        protect = ResourceProtector()
        protect.register_token_validator(self._bearer_validator())

        @self.app.get("/authorize")
        def authorize() -> Any:
            user = self.login_as  # the login page, as far as these tests are concerned
            request = server.create_oauth2_request(None)
            grant = server.get_authorization_grant(request)
            return server.create_authorization_response(request, grant_user=user, grant=grant)

        @self.app.post("/token")
        def token() -> Any:
            self.token_requests += 1
            return server.create_token_response()

        @self.app.get("/userinfo")
        @protect()
        def userinfo() -> Any:
            name = current_token.user
            return jsonify({"preferred_username": name, **self.users[name]})

        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Provider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()

    def _client(self, client_id: str) -> Client | None:
        return self.client if client_id == self.client.client_id else None

    def _save_token(self, token: dict[str, Any], request: Any) -> None:
        self.tokens[token["access_token"]] = Token(
            request.client,
            request.user,
            token["access_token"],
            token.get("refresh_token"),
            token.get("scope", ""),
            int(token.get("expires_in", 3600)),
        )

    def _code_grant(self) -> type:
        provider = self

        class CodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

            def save_authorization_code(self, code: str, request: Any) -> None:
                payload = request.payload
                provider.codes[code] = Code(
                    code,
                    request.client.client_id,
                    payload.redirect_uri,
                    payload.scope,
                    request.user,
                    payload.data.get("code_challenge"),
                    payload.data.get("code_challenge_method"),
                )

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                found = provider.codes.get(code)
                return found if found and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                provider.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> str:
                return authorization_code.user

        return CodeGrant

    def _refresh_grant(self) -> type:
        provider = self

        class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
            TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
                return next(
                    (
                        t
                        for t in provider.tokens.values()
                        if t.refresh_token == refresh_token and not t.revoked
                    ),
                    None,
                )

            def authenticate_user(self, refresh_token: Token) -> str:
                return refresh_token.user

            def revoke_old_credential(self, refresh_token: Token) -> None:
                refresh_token.revoked = True

        return RefreshGrant

    def _bearer_validator(self) -> BearerTokenValidator:
        provider = self

        class Validator(BearerTokenValidator):  # type: ignore[misc]
            def authenticate_token(self, token_string: str) -> Token | None:
                return provider.tokens.get(token_string)

        return Validator()
