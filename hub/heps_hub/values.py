"""The hub's settings as plain data: read from the files the hub-config ConfigMap mounts.

`values.yaml` (from the base) is deep-merged with `overlay.yaml` (from the overlay), and
`profile-list.yaml` holds the applications offered to users (pinned by `heps promote`).
No secret is read here: the OAuth client secret, the auth-state key and the proxy token
reach the hub as environment variables from Kubernetes Secrets.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

T = TypeVar("T")
VALUES, OVERLAY, PROFILES = "values.yaml", "overlay.yaml", "profile-list.yaml"


class ValuesError(ValueError):
    """A hub setting that is missing or of the wrong type; names the file and key."""


@dataclass(frozen=True)
class OAuth:
    authorize_url: str
    token_url: str
    userdata_url: str
    callback_url: str
    scope: list[str] = field(default_factory=lambda: ["openid", "profile", "email"])
    username_claim: str = "preferred_username"
    allowed_groups: list[str] = field(default_factory=list)
    admin_groups: list[str] = field(default_factory=list)
    logout_redirect_url: str = ""


@dataclass(frozen=True)
class Storage:
    cvmfs_claim: str = "cvmfs"
    """PVC of the CernVM-FS CSI volume, mounted read-only at /cvmfs."""
    lustre_claim: str = "lustre"
    """PVC of the Lustre file system: home/ and data/ below it."""
    home_base: str = "/home"
    data_base: str = "/data"


@dataclass(frozen=True)
class UserInit:
    image: str
    """The heps-user-init image, pinned by `heps promote` like any other."""
    policy_config_map: str = "user-init-policy"
    """ConfigMap with the site policy (policy.yaml) the init container enforces."""


@dataclass(frozen=True)
class Spawner:
    namespace: str
    scheduler_name: str
    user_init: UserInit
    storage: Storage = Storage()
    start_timeout: int = 600
    node_selector: dict[str, str] = field(default_factory=dict)


# The Kubernetes quantity grammar (apimachinery resource.Quantity). The pipeline has its
# own parser (heps.core.quantity) and writes the canonical form; the hub may not import
# the pipeline, so it reads quantities with this one, as strictly.
_QUANTITY = re.compile(
    r"(?P<n>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<bin>[KMGTPE]i)|(?P<exp>[eE][+-]?[0-9]{1,3})|(?P<dec>[mkMGTPE]?))"
)
_SCALE = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(10) ** 3}
_SCALE |= {s: Decimal(10) ** (3 * i) for i, s in enumerate("MGTPE", start=2)}
MIN_MEMORY = 64 * 2**20
"""64Mi: a smaller limit starts no session (and 0 would mean none at all)."""


def quantity(value: Any) -> float:
    """A Kubernetes quantity (4, 0.5, 500m, 16Gi, 1e3) as a finite number; ValuesError for
    anything else (NaN, infinity, booleans, `16 GB`)."""
    text = repr(value) if isinstance(value, float) else str(value).strip()
    match = None if isinstance(value, bool) or len(text) > 64 else _QUANTITY.fullmatch(text)
    if match is None or (isinstance(value, float) and not math.isfinite(value)):
        raise ValuesError(f"not a Kubernetes quantity: {value!r}")
    number = Decimal(match["n"])
    if match["bin"]:
        number *= Decimal(1024) ** ("KMGTPE".index(match["bin"][0]) + 1)
    elif match["exp"]:
        number = number.scaleb(int(match["exp"][1:]))
    else:
        number *= _SCALE[match["dec"]]
    if abs(number) > 2**70:  # beyond any machine (and beyond a float's exact range)
        raise ValuesError(f"not a Kubernetes quantity of any machine: {value!r}")
    return float(number)


_BOUNDS = {
    "cpu_guarantee": (1e-3, "cores, at least 1m"),
    "cpu_limit": (1e-3, "cores, at least 1m"),
    "mem_guarantee": (MIN_MEMORY, "bytes, at least 64Mi"),
    "mem_limit": (MIN_MEMORY, "bytes, at least 64Mi"),
}


# What a profile_list entry may say: KubeSpawner applies any attribute an override
# names to the user's pod (privileged, uid, host namespaces, volumes, service account,
# lifecycle hooks, a pod spec patch), so only the fields `heps promote` writes are
# offered, each with its value checked; KubeSpawner's profile_options are left out for
# the same reason (each choice carries an override of its own).
PROFILE_KEYS = frozenset({"slug", "display_name", "description", "default", "kubespawner_override"})
OVERRIDE_KEYS = frozenset({"image", "extra_resource_limits", "node_selector", *_BOUNDS})
GPU = "nvidia.com/gpu"
_IMAGE = re.compile(r"[a-z0-9][a-z0-9._:/@-]{0,510}", re.IGNORECASE)
_CONTROL_PLANE = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")


def profile_problem(profile: Any) -> str | None:
    """Why one profile_list entry cannot be offered, or None: a slug, an image, settings
    from the allowed list only, and quantities the spawner and Kubernetes accept."""
    if not isinstance(profile, dict) or not isinstance(profile.get("slug"), str):
        return "an entry without a slug"
    slug = profile["slug"]
    unknown = sorted(map(str, set(profile) - PROFILE_KEYS))
    if unknown:
        return f"{slug}: {unknown[0]}: not a profile setting; allowed: {sorted(PROFILE_KEYS)}"
    for key in ("display_name", "description"):
        if not isinstance(profile.get(key, ""), str):
            return f"{slug}: {key}: must be text"
    if not isinstance(profile.get("default", False), bool):
        return f"{slug}: default: must be true or false"
    override = profile.get("kubespawner_override")
    if not isinstance(override, dict):
        return f"{slug}: kubespawner_override: missing"
    unknown = sorted(map(str, set(override) - OVERRIDE_KEYS))
    if unknown:
        return (
            f"{slug}: kubespawner_override.{unknown[0]}: not a setting a profile may change "
            f"(the platform sets the pod's security); allowed: {sorted(OVERRIDE_KEYS)}"
        )
    image = override.get("image")
    if not isinstance(image, str) or not _IMAGE.fullmatch(image):
        return f"{slug}: kubespawner_override.image: missing or not an image reference"
    for key, (least, what) in _BOUNDS.items():
        if key in override:
            try:
                number = quantity(override[key])
            except ValuesError as exc:
                return f"{slug}: kubespawner_override.{key}: {exc}"
            if number < least:
                return f"{slug}: kubespawner_override.{key}: {override[key]!r}: {what}"
    limits = override.get("extra_resource_limits", {})
    if not isinstance(limits, dict) or set(limits) - {GPU}:
        return f"{slug}: kubespawner_override.extra_resource_limits: only {GPU} may be set"
    gpus = limits.get(GPU, "0")
    if not str(gpus).isdigit() or int(str(gpus)) > 64:
        return f"{slug}: extra_resource_limits.{GPU}: {gpus!r}: 0 to 64"
    if not _selector_ok(override.get("node_selector", {})):
        return f"{slug}: kubespawner_override.node_selector: {_SELECTOR}"
    return None


_SELECTOR = "labels to strings, never the control plane's nodes"


def _selector_ok(selector: Any) -> bool:
    return (
        isinstance(selector, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in selector.items())
        and not any(k.startswith(_CONTROL_PLANE) for k in selector)
    )


# What the hub's values (base values.yaml merged with the overlay's hub-values.yaml) may
# say: each key shapes the hub or every user pod, so only the dataclasses' fields are
# read, each of its type, and those below with their values checked. The user pod mounts
# only the platform's user-data claims (base/storage), never the hub's database or any
# other claim, and at plain paths outside the image's system folders.
DATA_CLAIMS = frozenset({"cvmfs", "lustre"})
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_SYSTEM = frozenset({"bin", "boot", "dev", "etc", "lib", "lib64", "opt", "proc", "root"})
_SYSTEM |= {"run", "sbin", "srv", "sys", "tmp", "usr", "var", "cvmfs"}


def _mount_path(value: str) -> bool:
    parts = value.split("/")
    return (
        value.startswith("/")
        and all(_NAME.fullmatch(part) for part in parts[1:])
        and parts[1] not in _SYSTEM
    )


_VALUE_CHECKS: dict[str, tuple[Any, str]] = {
    "spawner.storage.cvmfs_claim": (DATA_CLAIMS.__contains__, f"one of {sorted(DATA_CLAIMS)}"),
    "spawner.storage.lustre_claim": (DATA_CLAIMS.__contains__, f"one of {sorted(DATA_CLAIMS)}"),
    "spawner.storage.home_base": (_mount_path, "an absolute path outside system folders"),
    "spawner.storage.data_base": (_mount_path, "an absolute path outside system folders"),
    "spawner.start_timeout": (lambda n: 1 <= n <= 3600, "seconds, 1 to 3600"),
    "hub.concurrent_spawn_limit": (lambda n: 0 <= n <= 1000, "0 to 1000"),
    "hub.active_server_limit": (lambda n: 0 <= n <= 100_000, "0 to 100000"),
    "spawner.node_selector": (_selector_ok, _SELECTOR),
    "spawner.user_init.image": (_IMAGE.fullmatch, "an image reference"),
    "spawner.namespace": (_NAME.fullmatch, "a Kubernetes name"),
    "spawner.scheduler_name": (_NAME.fullmatch, "a Kubernetes name"),
    "spawner.user_init.policy_config_map": (_NAME.fullmatch, "a Kubernetes name"),
}


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint == list[str]:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if hint == dict[str, str]:
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    return isinstance(value, str) and len(value) <= 2048


def _section_problem(cls: type, raw: Any, path: str, skip: frozenset[str]) -> str | None:
    if not isinstance(raw, dict):
        return f"{path}: not a mapping"
    hints = {k: v for k, v in get_type_hints(cls).items() if k not in skip}
    unknown = sorted(map(str, set(raw) - set(hints)))
    if unknown:
        return f"{path}: unknown keys {unknown}; allowed: {sorted(hints)}"
    for key, value in raw.items():
        where, hint = f"{path}.{key}".lstrip("."), hints[key]
        if dataclasses.is_dataclass(hint):
            problem = _section_problem(hint, value, where, frozenset())  # type: ignore[arg-type]
            if problem:
                return problem
        elif not _type_ok(value, hint):
            return f"{where}: {value!r}: must be {getattr(hint, '__name__', hint)}"
        elif where in _VALUE_CHECKS and not _VALUE_CHECKS[where][0](value):
            return f"{where}: {value!r}: must be {_VALUE_CHECKS[where][1]}"
    return None


def values_problem(data: dict[str, Any]) -> str | None:
    """Why the hub's merged values cannot be used (`field: value: what it must be`), or
    None: the keys the hub reads, of their types, claims and paths and numbers checked.
    Keys left out are left to the loader (its defaults, or a missing-key error)."""
    sections = {"hub": HubValues, "oauth": OAuth, "spawner": Spawner}
    unknown = sorted(map(str, set(data) - set(sections)))
    if unknown:
        return f"unknown keys {unknown}; allowed: {sorted(sections)}"
    nested = frozenset({"oauth", "spawner", "profiles", "refused"})
    for name, cls in sections.items():
        skip = nested if name == "hub" else frozenset()
        problem = _section_problem(cls, data[name], name, skip) if name in data else None
        if problem:
            return problem
    return None


@dataclass(frozen=True)
class HubValues:
    public_url: str
    oauth: OAuth
    spawner: Spawner
    profiles: list[dict[str, Any]]
    """The profiles that can be offered; the others are in `refused`."""
    refused: list[str] = field(default_factory=list)
    """One line per profile left out (`profile-list.yaml: slug: field: problem`): one
    bad entry must not take the spawn page away from every user."""
    db_url: str = "sqlite:////srv/jupyterhub/jupyterhub.sqlite"
    concurrent_spawn_limit: int = 20
    """Spawns under way at once; the next user is asked to retry (HTTP 429). 0: none."""
    active_server_limit: int = 0
    """Servers running or starting at once; 0: no limit."""
    proxy_api_url: str = "http://proxy-api:8001"
    hub_connect_url: str = "http://hub:8081"


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValuesError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValuesError(f"{path}: expected a mapping at the top level")
    return data


def _make(cls: type[T], raw: Any, where: str) -> T:
    if not isinstance(raw, dict):
        raise ValuesError(f"{where}: missing or not a mapping")
    known = set(getattr(cls, "__dataclass_fields__"))  # noqa: B009 - any dataclass
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValuesError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise ValuesError(f"{where}: {exc}") from None


def load(folder: Path) -> HubValues:
    """The hub's values from a mounted config folder; ValuesError on anything wrong."""
    where = f"{folder}/{{{VALUES},{OVERLAY}}}"
    data = merge(_read(folder / VALUES), _read(folder / OVERLAY))
    problem = values_problem(data)
    if problem:
        raise ValuesError(f"{where}: {problem}")
    listed = _read(folder / PROFILES).get("profile_list") or []
    if not isinstance(listed, list):
        raise ValuesError(f"{folder / PROFILES}: profile_list: expected a list of profiles")
    problems = [(p, profile_problem(p)) for p in listed]
    profiles = [p for p, problem in problems if problem is None]
    refused = [f"{folder / PROFILES}: {problem}" for _, problem in problems if problem]
    spawner = dict(data.get("spawner") or {})
    spawner["storage"] = _make(Storage, spawner.get("storage", {}), f"{where}: spawner.storage")
    spawner["user_init"] = _make(UserInit, spawner.get("user_init"), f"{where}: spawner.user_init")
    hub = dict(data.get("hub") or {})
    if not isinstance(hub.get("public_url"), str):
        raise ValuesError(f"{where}: hub.public_url: missing; the URL users open")
    hub["public_url"] = hub["public_url"].rstrip("/")
    return _make(
        HubValues,
        {
            **hub,
            "oauth": _make(OAuth, data.get("oauth"), f"{where}: oauth"),
            "spawner": _make(Spawner, spawner, f"{where}: spawner"),
            "profiles": profiles,
            "refused": refused,
        },
        f"{where}: hub",
    )
