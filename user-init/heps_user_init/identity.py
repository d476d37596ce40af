"""Check the identity the hub hands over against the site policy, before anything is
written. Every refusal is one line saying what is wrong; nothing is ever fixed up."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from heps_user_init.policy import NAME, Policy

FIELDS = {"name", "uid", "gid", "groups", "email"}


class Refused(ValueError):
    """This identity must not become a user (exit 1: the pod does not start)."""


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

    @property
    def primary_group(self) -> str:
        """The primary group's name: one of the SSO groups, or a group named after the user."""
        return next((g.name for g in self.groups if g.gid == self.gid), self.name)


@dataclass(frozen=True)
class System:
    """The entries the image already has: names and ids a user may not take over."""

    users: dict[str, int]
    groups: dict[str, int]

    @classmethod
    def parse(cls, passwd: str, group: str) -> System:
        def table(text: str) -> dict[str, int]:
            rows = (line.split(":") for line in text.splitlines() if line.count(":") >= 3)
            return {row[0]: int(row[2]) for row in rows if row[2].isdigit()}

        return cls(table(passwd), table(group))


def _integer(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused(f"{field}: expected an integer, got {type(value).__name__} {value!r}")
    return value


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise Refused(f"{field}: expected a string, got {type(value).__name__}")
    if not NAME.fullmatch(value):
        raise Refused(
            f"{field}: {value!r} is not a valid user or group name "
            "(lower-case letter or _, then letters, digits, _ or -, at most 32)"
        )
    return value


def _in_range(value: int, bounds: tuple[int, int], field: str) -> int:
    if not bounds[0] <= value <= bounds[1]:
        raise Refused(f"{field}: {value} is outside the allowed range {bounds[0]}-{bounds[1]}")
    return value


def parse(text: str, policy: Policy, system: System) -> Identity:
    """The identity in `text` (JSON), or Refused naming the first problem."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
        raise Refused("the identity is not valid JSON") from None
    if not isinstance(raw, dict):
        raise Refused(f"the identity must be a JSON object, got {type(raw).__name__}")
    missing, unknown = sorted(FIELDS - set(raw)), sorted(set(raw) - FIELDS)
    if missing or unknown:
        raise Refused(f"identity fields: missing {missing}, unexpected {unknown}")
    name = _name(raw["name"], "name")
    if name in system.users or name in system.groups:
        raise Refused(f"name: {name!r} is a system account of the image")
    uid = _in_range(_integer(raw["uid"], "uid"), policy.uid_range, "uid")
    if uid in system.users.values():
        raise Refused(f"uid: {uid} belongs to a system account of the image")
    gid = _in_range(_integer(raw["gid"], "gid"), policy.gid_range, "gid")
    if gid in system.groups.values():  # her files and processes would carry that group
        raise Refused(f"gid: {gid} belongs to a system group of the image")
    email = raw["email"]
    if not isinstance(email, str) or "@" not in email or not email.isprintable():
        raise Refused("email: expected a printable address with @")
    if not isinstance(raw["groups"], list):
        raise Refused(f"groups: expected a list, got {type(raw['groups']).__name__}")
    groups: dict[str, Group] = {}
    for index, entry in enumerate(raw["groups"]):
        where = f"groups[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "gid"}:
            raise Refused(f"{where}: expected an object with exactly name and gid")
        group = Group(
            _name(entry["name"], f"{where}.name"),
            _in_range(_integer(entry["gid"], f"{where}.gid"), policy.gid_range, f"{where}.gid"),
        )
        if group.name not in policy.allowed_groups:
            raise Refused(f"{where}.name: {group.name!r} is not a group this site allows")
        if group.name in system.groups or group.gid in system.groups.values():
            raise Refused(f"{where}: {group.name}/{group.gid} collides with a system group")
        if groups.get(group.name, group).gid != group.gid:
            raise Refused(f"{where}: group {group.name!r} is listed with two gids")
        groups[group.name] = group
    by_gid = {g.gid: g.name for g in groups.values()}
    if len(by_gid) != len(groups):
        raise Refused("groups: two groups share one gid")
    if gid not in by_gid and name in groups:
        raise Refused(f"gid: {gid} differs from the gid of the group named {name!r}")
    return Identity(name, uid, gid, tuple(groups.values()), email)
