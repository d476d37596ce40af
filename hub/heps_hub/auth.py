"""IHEPSSO login: oauthenticator's GenericOAuthenticator plus the HEPS identity.

OAuth2 itself (redirects, state, code exchange, token refresh) is oauthenticator's;
this class only turns the userinfo claims into an identity, refuses incomplete ones
with a clear page, keeps the identity in the (encrypted) auth state, takes group
membership from it for `allowed_groups` / `admin_groups`, and hands it to the spawner.
"""

from __future__ import annotations

from typing import Any

from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from traitlets import Any as AnyTrait
from traitlets import Unicode, default

from heps_hub.identity import ClaimNames, IdentityError, from_claims
from heps_hub.spawn import identity_settings

IDENTITY_KEY = "heps_identity"


class IHEPSSOAuthenticator(GenericOAuthenticator):  # type: ignore[misc]
    uid_claim = Unicode(ClaimNames.uid, config=True, help="userinfo claim with the uid")
    gid_claim = Unicode(ClaimNames.gid, config=True, help="userinfo claim with the primary gid")
    groups_claim = Unicode(
        ClaimNames.groups, config=True, help='userinfo claim: [{"name": ..., "gid": ...}]'
    )
    spawner_values = AnyTrait(
        None, config=True, help="heps_hub.values.Spawner: where user pods get their parts"
    )

    @default("login_service")
    def _login_service_default(self) -> str:
        return "IHEP SSO"

    @default("manage_groups")
    def _manage_groups_default(self) -> bool:
        return True

    @default("enable_auth_state")
    def _enable_auth_state_default(self) -> bool:
        return True

    @property
    def claim_names(self) -> ClaimNames:
        return ClaimNames(uid=self.uid_claim, gid=self.gid_claim, groups=self.groups_claim)

    async def update_auth_model(self, auth_model: dict[str, Any]) -> dict[str, Any]:
        claims = auth_model["auth_state"][self.user_auth_state_key]
        try:
            identity = from_claims(auth_model["name"], claims, self.claim_names)
        except IdentityError as exc:
            self.log.warning("refusing %s: %s", auth_model["name"], exc)
            raise web.HTTPError(403, f"Login refused: {exc}. Contact the HEPS helpdesk.") from None
        auth_model["auth_state"][IDENTITY_KEY] = identity.as_json()
        return auth_model

    async def check_allowed(self, username: str, auth_model: dict[str, Any] | None) -> bool:
        """oauthenticator's decision; a refusal says why instead of a bare 403."""
        if await super().check_allowed(username, auth_model):
            return True
        allowed = ", ".join(sorted(self.allowed_groups)) or "none configured"
        raise web.HTTPError(
            403,
            f"Login refused: {username} is in none of the groups allowed on this platform "
            f"({allowed}). Ask the HEPS helpdesk for access.",
        )

    async def get_user_groups(self, auth_state: dict[str, Any]) -> set[str]:
        claims = auth_state[self.user_auth_state_key]
        return {str(g["name"]) for g in claims.get(self.groups_claim) or [] if isinstance(g, dict)}

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        auth_state = await user.get_auth_state()
        if not auth_state or IDENTITY_KEY not in auth_state:
            raise web.HTTPError(403, "No identity for this session; log out and log in again.")
        claims = auth_state[self.user_auth_state_key]
        identity = from_claims(user.name, claims, self.claim_names)
        apply = getattr(spawner, "apply_identity", None)
        if apply is not None:  # a spawner that places the identity itself (one machine)
            apply(identity, self.spawner_values)
            return
        for name, value in identity_settings(identity, self.spawner_values).items():
            setattr(spawner, name, value)
