"""Who the single sign-on says the user is, as plain data for the user-init container.

The hub refuses an identity it cannot hand on whole (missing or mistyped claims, an
unverified email); the user-init container then checks it against the site policy
(uid range, allowed groups, name rules) before it writes anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


class IdentityError(ValueError):
    """The claims do not make a usable identity; the message is shown to the user."""


@dataclass(frozen=True)
class ClaimNames:
    """Which userinfo claims carry what (IHEPSSO defaults)."""

    uid: str = "uidNumber"
    gid: str = "gidNumber"
    groups: str = "groups"
    """A list of {"name": ..., "gid": ...} objects."""
    email: str = "email"
    email_verified: str = "email_verified"


@dataclass(frozen=True)
class Group:
    name: str
    gid: int


@dataclass(frozen=True)
class Identity:
    name: str
    uid: int
    gid: int
    groups: tuple[Group, ...]
    email: str

    def as_json(self) -> str:
        """The HEPS_USER_IDENTITY document the user-init container reads."""
        data = asdict(self)
        data["groups"] = [asdict(g) for g in self.groups]
        return json.dumps(data, sort_keys=True)


def _int_claim(claims: dict[str, Any], key: str) -> int:
    value = claims.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise IdentityError(f"the identity service sent no numeric '{key}' for this account")
    return value


def from_claims(name: str, claims: dict[str, Any], names: ClaimNames = ClaimNames()) -> Identity:
    """The identity in a userinfo response; IdentityError when it is incomplete."""
    if claims.get(names.email_verified) is not True:
        raise IdentityError("this account's email address is not verified at the identity service")
    email = claims.get(names.email)
    if not isinstance(email, str) or "@" not in email:
        raise IdentityError(f"the identity service sent no '{names.email}' for this account")
    raw_groups = claims.get(names.groups, [])
    if not isinstance(raw_groups, list):
        raise IdentityError(f"the identity service's '{names.groups}' claim is not a list")
    groups = []
    for raw in raw_groups:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise IdentityError(f"'{names.groups}' holds an entry without a name: {raw!r}")
        groups.append(Group(raw["name"], _int_claim(raw, "gid")))
    return Identity(
        name=name,
        uid=_int_claim(claims, names.uid),
        gid=_int_claim(claims, names.gid),
        groups=tuple(groups),
        email=email,
    )
