"""The SSO testbed's accounts (`heps platform up --users FILE`), checked before the
provider sees them: a YAML list, each entry `username`, `password` and IHEPSSO's claims.
Only types are checked here: whether an account may log in or get a server is for the
hub and the user-init container to decide, as with the real service."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from heps.core.errors import ConfigError
from heps.core.validation import load_yaml

NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CLAIMS = ("uidNumber", "gidNumber", "email", "email_verified", "groups")


def _entry(raw: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with username, password and claims")
    unknown = sorted(set(raw) - {"username", "password", *CLAIMS})
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: username, password, {CLAIMS}")
    name, password = raw.get("username"), raw.get("password")
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{where}: username: give letters, digits, '.', '_' or '-'")
    if not isinstance(password, str) or not password:
        raise ConfigError(f"{where}: password: give a non-empty string")
    checks: dict[str, Callable[[Any], bool]] = {
        "uidNumber": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "gidNumber": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "email": lambda v: isinstance(v, str),
        "email_verified": lambda v: isinstance(v, bool),
        "groups": lambda v: (
            isinstance(v, list)
            and all(isinstance(g, dict) and set(g) == {"name", "gid"} for g in v)
        ),
    }
    for claim, ok in checks.items():
        if claim in raw and not ok(raw[claim]):
            raise ConfigError(f"{where}: {claim}: wrong type; see the bundled example")
    return name, {"password": password, "claims": {c: raw[c] for c in CLAIMS if c in raw}}


def load(path: Path) -> dict[str, dict[str, Any]]:
    """{username: {password, claims}}: the provider's accounts file."""
    raw = load_yaml(path, str(path))  # bounded: size, UTF-8, nesting, aliases
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{path}: expected a non-empty list of accounts")
    accounts: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(raw):
        name, account = _entry(entry, f"{path}: entry {index + 1}")
        if name in accounts:
            raise ConfigError(f"{path}: entry {index + 1}: username {name!r} given twice")
        accounts[name] = account
    return accounts
